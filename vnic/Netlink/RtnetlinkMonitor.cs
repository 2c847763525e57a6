using static Onload.Vnic.Native.Netlink;

namespace Onload.Vnic.Netlink;

/// <summary>
/// Watches the kernel's links, IPv4 addresses, IPv4 routes and neighbours (RTNLGRP_LINK, RTNLGRP_IPV4_IFADDR,
/// RTNLGRP_IPV4_ROUTE, RTNLGRP_NEIGH) of the network namespace it was opened in, and turns the notifications into
/// <see cref="NetlinkEvent"/>s. Nothing blocks: wait on <see cref="Fd"/> with poll(2) or epoll, then call
/// <see cref="Poll"/>.
/// </summary>
/// <remarks>
/// The kernel sends a whole RTM_NEWLINK on every change of a link, not what changed, so the monitor keeps the
/// last state of each link (read by a dump when it opens, after joining the groups so no change falls between)
/// and reports the differences that matter: up/down and MTU.
/// </remarks>
public sealed class RtnetlinkMonitor : IDisposable
{
    private readonly RtnetlinkSocket _socket;
    // Opened with the monitor, in its namespace: Poll may run on a thread of another namespace, where a socket
    // opened then would read the wrong kernel's tables. Dumps go through it, not _socket, whose queue holds
    // notifications that a dump's replies would interleave with.
    private readonly RtnetlinkSocket _dump;
    private readonly Dictionary<int, Link> _links = [];

    private RtnetlinkMonitor(RtnetlinkSocket socket, RtnetlinkSocket dump)
    {
        _socket = socket;
        _dump = dump;
    }

    /// <summary>Opens a monitor in the calling thread's network namespace. <paramref name="receiveBufferBytes"/>,
    /// when not 0, sizes the socket's receive queue (SO_RCVBUF): the bursts it absorbs between two polls.</summary>
    public static RtnetlinkMonitor Open(int receiveBufferBytes = 0)
    {
        var socket = RtnetlinkSocket.Open([RTNLGRP_LINK, RTNLGRP_IPV4_IFADDR, RTNLGRP_IPV4_ROUTE, RTNLGRP_NEIGH], receiveBufferBytes);
        RtnetlinkMonitor monitor;
        try
        {
            monitor = new RtnetlinkMonitor(socket, RtnetlinkSocket.Open());
        }
        catch
        {
            socket.Dispose();
            throw;
        }
        try
        {
            monitor.ReadLinks();
            return monitor;
        }
        catch
        {
            monitor.Dispose();
            throw;
        }
    }

    /// <summary>The file descriptor to wait on (POLLIN when notifications are queued).</summary>
    public int Fd => _socket.Fd;

    public NetlinkCounters Counters => _socket.Counters;

    /// <summary>The links as last reported, by index.</summary>
    public IReadOnlyDictionary<int, Link> Links => _links;

    /// <summary>
    /// Reads every queued notification without blocking and appends its events to <paramref name="events"/>;
    /// returns how many it appended. Malformed messages are skipped and counted; a queue overflow appends
    /// <see cref="ResyncNeeded"/>.
    /// </summary>
    public int Poll(ICollection<NetlinkEvent> events)
    {
        ArgumentNullException.ThrowIfNull(events);
        int before = events.Count;
        while (true)
        {
            int n = _socket.TryReceive();
            if (n == 0)
                break;
            if (n < 0)
            {
                Resync(events, "the receive queue overflowed (ENOBUFS): notifications were lost");
                continue;
            }
            var reader = new NetlinkMessageReader(_socket.Received(n));
            while (reader.TryNext(out var m))
            {
                var r = Rtnetlink.TryDecode(m, out var o);
                if (r == DecodeResult.Malformed)
                    Counters.Malformed();
                else if (r == DecodeResult.Decoded)
                    Translate(m.Type, o!, events);
            }
            if (reader.Malformed)
                Counters.Malformed();
            if (n > RtnetlinkSocket.BufferBytes)
                Resync(events, "a notification datagram was longer than the receive buffer");
        }
        return events.Count - before;
    }

    private void Translate(ushort type, RtnetlinkObject o, ICollection<NetlinkEvent> events)
    {
        bool isNew = Rtnetlink.IsNew(type);
        switch (o)
        {
            case Link link when isNew:
                if (!_links.TryGetValue(link.Index, out var old))
                {
                    events.Add(new LinkAdded(link));
                }
                else
                {
                    if (old.CanCarry != link.CanCarry)
                        events.Add(link.CanCarry ? new LinkUp(link) : new LinkDown(link));
                    if (old.Mtu != link.Mtu)
                        events.Add(new MtuChanged(link, old.Mtu));
                }
                _links[link.Index] = link;
                break;
            case Link link:
                _links.Remove(link.Index);
                events.Add(new LinkRemoved(link));
                break;
            case Address a:
                events.Add(isNew ? new AddressAdded(a) : new AddressRemoved(a));
                break;
            case Route r:
                events.Add(isNew ? new RouteAdded(r) : new RouteRemoved(r));
                break;
            case Neighbour nb:
                events.Add(isNew ? new NeighbourChanged(nb) : new NeighbourRemoved(nb));
                break;
        }
    }

    private void Resync(ICollection<NetlinkEvent> events, string reason)
    {
        ReadLinks();
        events.Add(new ResyncNeeded(reason));
    }

    private void ReadLinks()
    {
        _links.Clear();
        foreach (var link in _dump.DumpLinks())
            _links[link.Index] = link;
    }

    public void Dispose()
    {
        _socket.Dispose();
        _dump.Dispose();
    }
}
