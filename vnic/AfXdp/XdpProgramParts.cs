using System.Buffers.Binary;
using static Onload.Vnic.Native.Bpf;

namespace Onload.Vnic.AfXdp;

/// <summary>
/// What the XDP programs of an <c>af_xdp</c> VNIC (<see cref="SteeringProgram"/>, <see cref="FlowFilterProgram"/>)
/// share: the context loads that start them, the bounds check before every packet read, map lookups with a key on
/// the stack, and the two endings — redirect to the receiving queue's socket, or pass to the kernel.
/// </summary>
/// <remarks>Register use common to both: r6 the context (it survives calls), r2 data and r3 data_end (they do not),
/// r4 scratch for bounds checks.</remarks>
internal static class XdpProgramParts
{
    /// <summary>The license the kernel records for the programs: GPL-compatible (which GPL-only helpers would need;
    /// the two used here are not), and permissive for anyone reusing the bytecode.</summary>
    public const string License = "Dual BSD/GPL";

    /// <summary>The label of <see cref="EmitRedirectOrPass"/>'s redirect: the frame goes to the AF_XDP socket.</summary>
    public const string Redirect = "redirect";

    /// <summary>The label of <see cref="EmitRedirectOrPass"/>'s XDP_PASS: the frame goes to the kernel.</summary>
    public const string Pass = "pass";

    // struct xdp_md (include/uapi/linux/bpf.h): the context in R1.
    private const short XdpMdData = 0;
    private const short XdpMdDataEnd = 4;
    private const short XdpMdRxQueueIndex = 16;

    // Ethernet II (no VLAN tag): the header's length, and where its EtherType sits.
    public const int EthHeader = 14;
    public const short EthType = 12;

    /// <summary><c>r6 = ctx; r2 = data; r3 = data_end</c>: the first three instructions of every program.</summary>
    public static void EmitLoadContext(BpfAssembler a)
    {
        a.Mov64(Reg.R6, Reg.R1);
        a.Load(Size.W, Reg.R2, Reg.R6, XdpMdData);
        a.Load(Size.W, Reg.R3, Reg.R6, XdpMdDataEnd);
    }

    /// <summary><c>if data + length > data_end goto pass</c> (in r4): the bounds check the verifier demands before
    /// any read below <paramref name="length"/>.</summary>
    public static void EmitPassIfShorterThan(BpfAssembler a, int length)
    {
        a.Mov64(Reg.R4, Reg.R2);
        a.Add64(Reg.R4, length);
        a.If(Reg.R4, Jump.Gt, Reg.R3, Pass);
    }

    /// <summary><c>r0 = bpf_map_lookup_elem(map, r10 + key)</c>: &amp;value or NULL; r1-r5 clobbered.</summary>
    public static void EmitLookup(BpfAssembler a, int mapFd, short keyOffset)
    {
        a.LoadMapFd(Reg.R1, mapFd);
        a.Mov64(Reg.R2, Reg.R10);
        a.Add64(Reg.R2, keyOffset);
        a.Call(BPF_FUNC_map_lookup_elem);
    }

    /// <summary>
    /// The two endings, labelled <see cref="Redirect"/> and <see cref="Pass"/>: to the socket of this RX queue
    /// (<c>bpf_redirect_map(&amp;xsks, ctx->rx_queue_index, fallback)</c>: <paramref name="fallback"/>, XDP_PASS
    /// unless told otherwise, if the XSKMAP has none there), or to the kernel.
    /// </summary>
    public static void EmitRedirectOrPass(BpfAssembler a, int xsksMapFd, int fallback = XDP_PASS)
    {
        a.Label(Redirect);
        a.Load(Size.W, Reg.R2, Reg.R6, XdpMdRxQueueIndex);
        a.LoadMapFd(Reg.R1, xsksMapFd);
        a.Mov64(Reg.R3, fallback);
        a.Call(BPF_FUNC_redirect_map);
        a.Exit();

        a.Label(Pass);
        a.Mov64(Reg.R0, XDP_PASS);
        a.Exit();
    }

    /// <summary>An IPv4 address in host byte order as a 32-bit load from the packet yields it.</summary>
    public static uint Wire(uint hostOrder) => BitConverter.IsLittleEndian ? BinaryPrimitives.ReverseEndianness(hostOrder) : hostOrder;

    /// <summary>A 16-bit field (an EtherType, a port) as a 16-bit load from the packet yields it.</summary>
    public static ushort Wire16(ushort hostOrder) => BitConverter.IsLittleEndian ? BinaryPrimitives.ReverseEndianness(hostOrder) : hostOrder;
}
