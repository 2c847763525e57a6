using System.Runtime.InteropServices;
using Onload.Vnic.Native;
using static Onload.Vnic.AfXdp.XdpProgramParts;

namespace Onload.Vnic.AfXdp;

/// <summary>
/// The XDP program of an <c>af_xdp</c> VNIC in filter mode (<see cref="VnicOptions.FilterMode"/>), the "hardware
/// filters onto VNICs" of driverlink mode: the kernel holds the interface's address, and only IPv4 TCP and UDP
/// frames that match an entry of the filters hash map go to the AF_XDP socket of the receiving queue. Everything else
/// (ARP, ICMP, other ports, IPv6, fragments) is passed to the kernel (XDP_PASS). A matching frame whose queue has no
/// socket in the XSKMAP is dropped.
/// </summary>
/// <remarks>
/// <para>Two lookups, most specific first, as a NIC's filter table does: the full key (protocol, destination address
/// and port, source address and port), then the same key with the remote half zero (a "wild" filter, a listening or
/// unconnected socket's).</para>
/// <para>IPv4 options are allowed (IHL 5 to 15): the transport header is found at 14 + 4·IHL. Fragments (MF set or a
/// non-zero offset) are passed, the first one included: a non-first fragment has no ports to match, and a first
/// fragment steered away from the kernel would leave it a datagram it can never reassemble; the kernel reassembles and
/// delivers the whole datagram to the socket bound to the port (in driverlink mode, the OS socket).</para>
/// <para>Plain Ethernet II only (a VLAN tag is passed). Every packet read follows a bounds check against data_end,
/// the variable-offset one included.</para>
/// </remarks>
internal static class FlowFilterProgram
{
    public const string Name = "onload_flows";

    // Offsets in the frame (RFC 791), no VLAN tag.
    private const short Ipv4VersionIhl = EthHeader + 0;
    private const short Ipv4FlagsFragment = EthHeader + 6;
    private const short Ipv4Protocol = EthHeader + 9;
    private const short Ipv4Saddr = EthHeader + 12;
    private const short Ipv4Daddr = EthHeader + 16;
    private const int Ipv4MinEnd = EthHeader + 20;
    /// <summary>Source and destination ports: the first four bytes of both TCP and UDP headers.</summary>
    private const int PortsLength = 4;

    // The key on the program's stack (FlowFilterKey's layout).
    private const short Key = -FlowFilterKey.Size;
    private const short KeyProtocol = Key + 0;
    private const short KeyLocalAddress = Key + 4;
    private const short KeyRemoteAddress = Key + 8;
    private const short KeyLocalPort = Key + 12;
    private const short KeyRemotePort = Key + 14;

    public static BpfInsn[] Build(int xsksMapFd, int filtersMapFd)
    {
        var a = new BpfAssembler();

        EmitLoadContext(a);

        // Ethernet and a minimal IPv4 header present, EtherType IPv4.
        EmitPassIfShorterThan(a, Ipv4MinEnd);
        a.Load(Size.H, Reg.R5, Reg.R2, EthType);
        a.If(Reg.R5, Jump.Ne, Wire16(0x0800), Pass);

        // Version 4, IHL 5..15: r5 = header length in bytes (20..60), a bounded scalar the verifier can follow.
        a.Load(Size.B, Reg.R5, Reg.R2, Ipv4VersionIhl);
        a.Mov64(Reg.R4, Reg.R5);
        a.And64(Reg.R4, 0xf0);
        a.If(Reg.R4, Jump.Ne, 0x40, Pass);
        a.And64(Reg.R5, 0x0f);
        a.If(Reg.R5, Jump.Lt, 5, Pass);
        a.Lsh64(Reg.R5, 2);

        // Any fragment (MF, or an offset) is the kernel's.
        a.Load(Size.H, Reg.R4, Reg.R2, Ipv4FlagsFragment);
        a.And64(Reg.R4, Wire16(0x3fff));
        a.If(Reg.R4, Jump.Ne, 0, Pass);

        // TCP or UDP only. r7..r9 (callee-saved) keep protocol and addresses, as loaded: wire byte order.
        a.Load(Size.B, Reg.R7, Reg.R2, Ipv4Protocol);
        a.If(Reg.R7, Jump.Eq, 6, "ports");
        a.If(Reg.R7, Jump.Ne, 17, Pass);
        a.Label("ports");
        a.Load(Size.W, Reg.R8, Reg.R2, Ipv4Daddr);
        a.Load(Size.W, Reg.R9, Reg.R2, Ipv4Saddr);

        // r4 = the transport header (after any options); its four port bytes present?
        a.Mov64(Reg.R4, Reg.R2);
        a.Add64(Reg.R4, Reg.R5);
        a.Add64(Reg.R4, EthHeader);
        a.Mov64(Reg.R1, Reg.R4);
        a.Add64(Reg.R1, PortsLength);
        a.If(Reg.R1, Jump.Gt, Reg.R3, Pass);
        a.Load(Size.H, Reg.R5, Reg.R4, 0);            // source port
        a.Load(Size.H, Reg.R4, Reg.R4, 2);            // destination port

        // The full key: all 16 bytes written (the verifier refuses a lookup with uninitialised stack).
        a.Mov64(Reg.R1, 0);
        a.Store(Size.DW, Reg.R10, Key, Reg.R1);
        a.Store(Size.DW, Reg.R10, Key + 8, Reg.R1);
        a.Store(Size.B, Reg.R10, KeyProtocol, Reg.R7);
        a.Store(Size.W, Reg.R10, KeyLocalAddress, Reg.R8);
        a.Store(Size.W, Reg.R10, KeyRemoteAddress, Reg.R9);
        a.Store(Size.H, Reg.R10, KeyLocalPort, Reg.R4);
        a.Store(Size.H, Reg.R10, KeyRemotePort, Reg.R5);
        EmitLookup(a, filtersMapFd, Key);
        a.If(Reg.R0, Jump.Ne, 0, Redirect);

        // Then the wild key: the remote half zero.
        a.Mov64(Reg.R1, 0);
        a.Store(Size.W, Reg.R10, KeyRemoteAddress, Reg.R1);
        a.Store(Size.H, Reg.R10, KeyRemotePort, Reg.R1);
        EmitLookup(a, filtersMapFd, Key);
        a.If(Reg.R0, Jump.Eq, 0, Pass);

        // To the socket of this RX queue. A filtered flow whose queue has no socket (its daemon died and took the
        // shared forwarder's socket with it) is dropped, not passed: the kernel holds the port with an unconnected
        // socket and would reset a connection the client's stack still holds and will carry on once reattached.
        EmitRedirectOrPass(a, xsksMapFd, fallback: Bpf.XDP_DROP);
        return a.Assemble();
    }
}

/// <summary>
/// A key of the filters hash map (16 bytes), every field in wire byte order as the program reads it from the frame:
/// protocol, three zero bytes, local (destination) address, remote (source) address, local port, remote port. A wild
/// filter has the remote address and port zero.
/// </summary>
[StructLayout(LayoutKind.Sequential, Size = Size)]
internal struct FlowFilterKey
{
    public const int Size = 16;

    public byte Protocol;
    private byte _pad0;
    private byte _pad1;
    private byte _pad2;
    public uint LocalAddress;
    public uint RemoteAddress;
    public ushort LocalPort;
    public ushort RemotePort;

    /// <summary>The key for a filter given in host byte order.</summary>
    public static FlowFilterKey From(byte protocol, uint localAddress, ushort localPort, uint remoteAddress, ushort remotePort) => new()
    {
        Protocol = protocol,
        LocalAddress = Wire(localAddress),
        RemoteAddress = Wire(remoteAddress),
        LocalPort = Wire16(localPort),
        RemotePort = Wire16(remotePort),
    };
}
