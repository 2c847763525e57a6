using System.Globalization;

namespace Onload.Vnic.Netlink;

/// <summary>What rtnetlink describes: a link, an address, a route or a neighbour. IPv4 addresses are held in host
/// byte order (10.0.0.1 is 0x0A000001), as <see cref="VnicOptions.LocalIpv4"/> holds them.</summary>
public abstract record RtnetlinkObject
{
    /// <summary>"10.0.0.1" for an address in host byte order.</summary>
    public static string FormatIpv4(uint address) => string.Create(CultureInfo.InvariantCulture,
        $"{address >> 24}.{(address >> 16) & 0xFF}.{(address >> 8) & 0xFF}.{address & 0xFF}");
}

/// <summary>An interface (RTM_NEWLINK). <paramref name="Flags"/> are its IFF_* flags.</summary>
public sealed record Link(int Index, string Name, uint Flags, int Mtu, MacAddress Mac) : RtnetlinkObject
{
    /// <summary>Administratively up (IFF_UP: <c>ip link set IF up</c>).</summary>
    public bool IsUp => (Flags & Native.Netlink.IFF_UP) != 0;

    /// <summary>Operationally up (IFF_RUNNING: carrier present, e.g. a veth whose peer is up too).</summary>
    public bool IsRunning => (Flags & Native.Netlink.IFF_RUNNING) != 0;

    /// <summary>Up and running: frames can pass.</summary>
    public bool CanCarry => IsUp && IsRunning;

    public override string ToString() =>
        string.Create(CultureInfo.InvariantCulture, $"link {Index} {Name} {(IsUp ? "up" : "down")}{(IsRunning ? " running" : "")} mtu {Mtu} {Mac}");
}

/// <summary>An IPv4 address on an interface (RTM_NEWADDR), e.g. 10.0.0.1/24.</summary>
public sealed record Address(int InterfaceIndex, uint Ipv4, int PrefixLength) : RtnetlinkObject
{
    public override string ToString() =>
        string.Create(CultureInfo.InvariantCulture, $"addr {FormatIpv4(Ipv4)}/{PrefixLength} if {InterfaceIndex}");
}

/// <summary>
/// An IPv4 route (RTM_NEWROUTE): <paramref name="Destination"/>/<paramref name="PrefixLength"/> (0.0.0.0/0 is the
/// default route), through <paramref name="Gateway"/> (0 when the destination is on the link), out of interface
/// <paramref name="InterfaceIndex"/> (0 for a multipath route, whose next hops are not read), in routing table
/// <paramref name="Table"/> (254 is main), with RTN_* <paramref name="Type"/> (1 unicast, 2 local, ...).
/// </summary>
public sealed record Route(uint Destination, int PrefixLength, uint Gateway, int InterfaceIndex, uint Table, byte Type, uint Metric)
    : RtnetlinkObject
{
    public const uint MainTable = Native.Netlink.RT_TABLE_MAIN;

    public override string ToString() => string.Create(CultureInfo.InvariantCulture,
        $"route {FormatIpv4(Destination)}/{PrefixLength}{(Gateway != 0 ? " via " + FormatIpv4(Gateway) : "")} if {InterfaceIndex} table {Table} type {Type} metric {Metric}");
}

/// <summary>The NUD_* states of a neighbour entry (uapi/linux/neighbour.h).</summary>
[Flags]
public enum NeighbourState : ushort
{
    None = 0,
    Incomplete = 0x01,
    Reachable = 0x02,
    Stale = 0x04,
    Delay = 0x08,
    Probe = 0x10,
    Failed = 0x20,
    NoArp = 0x40,
    Permanent = 0x80,
}

/// <summary>An IPv4 neighbour entry (RTM_NEWNEIGH): <paramref name="Mac"/> is <see cref="MacAddress.Zero"/> while
/// the kernel has none (INCOMPLETE, FAILED).</summary>
public sealed record Neighbour(int InterfaceIndex, uint Ipv4, MacAddress Mac, NeighbourState State) : RtnetlinkObject
{
    public override string ToString() =>
        string.Create(CultureInfo.InvariantCulture, $"neigh {FormatIpv4(Ipv4)} lladdr {Mac} if {InterfaceIndex} {State}");
}
