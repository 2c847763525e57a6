using Onload.Vnic.Native;
using static Onload.Vnic.AfXdp.XdpProgramParts;

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
    public const string Name = "onload_xsk";

    // Offsets in the frame (RFC 826 for ARP, RFC 791 for IPv4, no VLAN tag).
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

        EmitLoadContext(a);

        // Ethernet header present? Then dispatch on EtherType: ARP, IPv4, anything else to the kernel.
        EmitPassIfShorterThan(a, EthHeader);
        a.Load(Size.H, Reg.R5, Reg.R2, EthType);
        a.If(Reg.R5, Jump.Eq, Wire16(0x0806), "arp");
        a.If(Reg.R5, Jump.Ne, Wire16(0x0800), Pass);

        // IPv4: a whole minimal header present, destination = ours? (r7 keeps it across the map lookup.)
        EmitPassIfShorterThan(a, Ipv4End);
        a.Load(Size.W, Reg.R7, Reg.R2, Ipv4Daddr);
        a.If32(Reg.R7, Jump.Eq, local, Redirect);

        // IPv4 multicast (first octet 224..239)? Redirect if the group is in the groups map.
        a.Load(Size.B, Reg.R5, Reg.R2, Ipv4Daddr);
        a.And64(Reg.R5, 0xf0);
        a.If(Reg.R5, Jump.Ne, 0xe0, Pass);
        a.Store(Size.W, Reg.R10, -4, Reg.R7);         // key on the stack: the group as on the wire
        EmitLookup(a, groupsMapFd, -4);
        a.If(Reg.R0, Jump.Eq, 0, Pass);
        a.Goto(Redirect);

        // ARP: the fixed 28-byte IPv4-over-Ethernet body present, protocol IPv4 with 4-byte addresses, target = ours?
        a.Label("arp");
        EmitPassIfShorterThan(a, ArpEnd);
        a.Load(Size.H, Reg.R5, Reg.R2, ArpPtype);
        a.If(Reg.R5, Jump.Ne, Wire16(0x0800), Pass);
        a.Load(Size.B, Reg.R5, Reg.R2, ArpPlen);
        a.If(Reg.R5, Jump.Ne, 4, Pass);
        a.Load(Size.W, Reg.R7, Reg.R2, ArpTpa);
        a.If32(Reg.R7, Jump.Ne, local, Pass);

        // Redirect to the socket of this RX queue; everything else belongs to the kernel.
        EmitRedirectOrPass(a, xsksMapFd);
        return a.Assemble();
    }
}
