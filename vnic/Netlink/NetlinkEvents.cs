namespace Onload.Vnic.Netlink;

/// <summary>A change in the kernel's links, IPv4 addresses, routes or neighbours, as <see cref="RtnetlinkMonitor"/>
/// reports it.</summary>
public abstract record NetlinkEvent;

/// <summary>An interface the monitor had not seen appeared.</summary>
public sealed record LinkAdded(Link Link) : NetlinkEvent;

public sealed record LinkRemoved(Link Link) : NetlinkEvent;

/// <summary>The link became able to carry frames: administratively up and running (carrier).</summary>
public sealed record LinkUp(Link Link) : NetlinkEvent;

/// <summary>The link stopped carrying frames: set down, or lost its carrier.</summary>
public sealed record LinkDown(Link Link) : NetlinkEvent;

/// <summary>The link's MTU changed (the kernel reports it after the fact): clients clamp their MSS to it.</summary>
public sealed record MtuChanged(Link Link, int PreviousMtu) : NetlinkEvent;

public sealed record AddressAdded(Address Address) : NetlinkEvent;

public sealed record AddressRemoved(Address Address) : NetlinkEvent;

/// <summary>A route was added or replaced, in any table (<see cref="Route.Table"/> says which).</summary>
public sealed record RouteAdded(Route Route) : NetlinkEvent;

public sealed record RouteRemoved(Route Route) : NetlinkEvent;

/// <summary>A neighbour entry was created or changed state or MAC.</summary>
public sealed record NeighbourChanged(Neighbour Neighbour) : NetlinkEvent;

public sealed record NeighbourRemoved(Neighbour Neighbour) : NetlinkEvent;

/// <summary>Notifications were lost (the receive queue overflowed, or a datagram was cut): whoever mirrors the
/// kernel's tables must dump them again. The monitor's own view of the links has already been re-read.</summary>
public sealed record ResyncNeeded(string Reason) : NetlinkEvent;
