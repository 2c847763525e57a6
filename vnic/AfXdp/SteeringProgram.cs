using System.Buffers.Binary;
using Onload.Vnic.Native;
using static Onload.Vnic.Native.Bpf;

namespace Onload.Vnic.AfXdp;

/// <summary>
/// The XDP program of an <c>af_xdp</c> VNIC: it redirects to the AF_XDP socket of the receiving queue (through the
/// XSKMAP, <c>bpf_redirect_map(&amp;xsks, ctx->rx_queue_index, XDP_PASS)</c>) only
/// <list type="bullet">
/// <item>ARP for IPv4 whose target protocol address is the stack's address,</item>
/// <item>IPv4 whose destination is the stack's address,</item>
/// <item>IPv4 whose destination is a multicast group (224.0.0.0/4) present in the groups hash map,</item>
/// </list>
/// and passes everything else to the kernel (XDP_PASS), so the namespace's own stack keeps working on the interface.
/// </summary>
/// <remarks>
/// <para>Plain Ethernet II only: a VLAN-tagged frame (EtherType 0x8100) is passed. Every packet read is preceded by a
/// bounds check against data_end, as the verifier demands.</para>
/// <para>The groups map: key u32 = the group address in network byte order (the four bytes as on the wire, so the
/// program compares them without swapping), value u8 (unused, 1). Packet fields are loaded in host byte order,
/// so the constants below are the wire bytes as the host reads them.</para>
/// </remarks>
internal static class SteeringProgram
{
    /// <summary>The license the kernel records for the program: GPL-compatible (which GPL-only helpers would need;
    /// the two used here are not), and permissive for anyone reusing the bytecode.</summary>
    public const string License = "Dual BSD/GPL";

    public const string Name = "onload_xsk";

    // struct xdp_md (include/uapi/linux/bpf.h): the context in R1.
    private const short XdpMdData = 0;
    private const short XdpMdDataEnd = 4;
    private const short XdpMdRxQueueIndex = 16;

    // Offsets in the frame (RFC 826 for ARP, RFC 791 for IPv4, no VLAN tag).
    private const int EthHeader = 14;
    private const short EthType = 12;
    private const short ArpPtype = EthHeader + 2;
    private const short ArpPlen = EthHeader + 5;
    private const short ArpTpa = EthHeader + 24;
    private const int ArpEnd = EthHeader + 28;
    private const short Ipv4Daddr = EthHeader + 16;
    private const int Ipv4End = EthHeader + 20;

    public static BpfInsn[] Build(int xsksMapFd, int groupsMapFd, uint localIpv4HostOrder)
    {
        uint local = Wire(localIpv4HostOrder);
        var a = new BpfAssembler();

        // r6 = ctx; r2 = data; r3 = data_end. The context survives calls in r6; r2 and r3 do not.
        a.Mov64(Reg.R6, Reg.R1);
        a.Load(Size.W, Reg.R2, Reg.R6, XdpMdData);
        a.Load(Size.W, Reg.R3, Reg.R6, XdpMdDataEnd);

        // Ethernet header present? Then dispatch on EtherType: ARP, IPv4, anything else to the kernel.
        a.Mov64(Reg.R4, Reg.R2);
        a.Add64(Reg.R4, EthHeader);
        a.If(Reg.R4, Jump.Gt, Reg.R3, "pass");
        a.Load(Size.H, Reg.R5, Reg.R2, EthType);
        a.If(Reg.R5, Jump.Eq, Wire16(0x0806), "arp");
        a.If(Reg.R5, Jump.Ne, Wire16(0x0800), "pass");

        // IPv4: a whole minimal header present, destination = ours? (r7 keeps it across the map lookup.)
        a.Mov64(Reg.R4, Reg.R2);
        a.Add64(Reg.R4, Ipv4End);
        a.If(Reg.R4, Jump.Gt, Reg.R3, "pass");
        a.Load(Size.W, Reg.R7, Reg.R2, Ipv4Daddr);
        a.If32(Reg.R7, Jump.Eq, local, "redirect");

        // IPv4 multicast (first octet 224..239)? Redirect if the group is in the groups map.
        a.Load(Size.B, Reg.R5, Reg.R2, Ipv4Daddr);
        a.And64(Reg.R5, 0xf0);
        a.If(Reg.R5, Jump.Ne, 0xe0, "pass");
        a.Store(Size.W, Reg.R10, -4, Reg.R7);         // key on the stack: the group as on the wire
        a.LoadMapFd(Reg.R1, groupsMapFd);
        a.Mov64(Reg.R2, Reg.R10);
        a.Add64(Reg.R2, -4);
        a.Call(BPF_FUNC_map_lookup_elem);             // r0 = &value or NULL
        a.If(Reg.R0, Jump.Eq, 0, "pass");
        a.Goto("redirect");

        // ARP: the fixed 28-byte IPv4-over-Ethernet body present, protocol IPv4 with 4-byte addresses, target = ours?
        a.Label("arp");
        a.Mov64(Reg.R4, Reg.R2);
        a.Add64(Reg.R4, ArpEnd);
        a.If(Reg.R4, Jump.Gt, Reg.R3, "pass");
        a.Load(Size.H, Reg.R5, Reg.R2, ArpPtype);
        a.If(Reg.R5, Jump.Ne, Wire16(0x0800), "pass");
        a.Load(Size.B, Reg.R5, Reg.R2, ArpPlen);
        a.If(Reg.R5, Jump.Ne, 4, "pass");
        a.Load(Size.W, Reg.R7, Reg.R2, ArpTpa);
        a.If32(Reg.R7, Jump.Ne, local, "pass");

        // Redirect to the socket of this RX queue; if the XSKMAP has none there, XDP_PASS (the flags' low bits).
        a.Label("redirect");
        a.Load(Size.W, Reg.R2, Reg.R6, XdpMdRxQueueIndex);
        a.LoadMapFd(Reg.R1, xsksMapFd);
        a.Mov64(Reg.R3, XDP_PASS);
        a.Call(BPF_FUNC_redirect_map);
        a.Exit();

        // Everything else belongs to the kernel.
        a.Label("pass");
        a.Mov64(Reg.R0, XDP_PASS);
        a.Exit();

        return a.Assemble();
    }

    /// <summary>An IPv4 address in host byte order as a 32-bit load from the packet yields it.</summary>
    public static uint Wire(uint hostOrder) => BitConverter.IsLittleEndian ? BinaryPrimitives.ReverseEndianness(hostOrder) : hostOrder;

    /// <summary>A 16-bit field (an EtherType) as a 16-bit load from the packet yields it.</summary>
    private static int Wire16(ushort hostOrder) => BitConverter.IsLittleEndian ? BinaryPrimitives.ReverseEndianness(hostOrder) : hostOrder;
}
