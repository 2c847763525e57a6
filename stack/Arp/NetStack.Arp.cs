using Onload.Stack.Arp;
using Onload.Stack.Tcp;
using Onload.Stack.Wire;
using Onload.Vnic;

namespace Onload.Stack;

// ARP (RFC 826) in direct mode: answer for our address, resolve next hops with retries, queue frames meanwhile.
// In driverlink mode the kernel does ARP: the same neighbour table and timers ask the control plane instead of
// sending requests, and its answers come in through SetNeighbour.
public sealed partial class NetStack
{
    /// <summary>How long an unused neighbour is kept after its last confirmation (gc_stale_time = 60 s).</summary>
    private const long NeighbourGcNs = 60_000_000_000;

    private bool ArpInput(int buffer, Span<byte> frame)
    {
        if (_control != null)
            return Dropped(DropReason.ArpInDriverlinkMode); // the kernel owns the address and answers for it
        var payload = frame[EthernetFrame.HeaderLength..];
        var reason = ArpPacket.Validate(payload);
        if (reason != DropReason.None)
            return Dropped(reason);
        var arp = new ArpPacket(payload);
        var op = arp.Operation;
        if (op == ArpOperation.Request)
            Counters.ArpInRequests++;
        else
            Counters.ArpInReplies++;
        var sha = arp.SenderHardware;
        var spa = arp.SenderProtocol;
        var tpa = arp.TargetProtocol;
        bool forUs = tpa == _address;

        // RFC 5227 probe (sender 0.0.0.0): answer if it asks for our address, learn nothing.
        if (spa.IsAny)
        {
            if (!(forUs && op == ArpOperation.Request))
                return Dropped(DropReason.ArpNotForUs);
            return ReplyInPlace(buffer, frame, sha, spa);
        }
        if (sha.IsGroup || sha == MacAddress.Zero || spa.IsMulticast || spa.IsLimitedBroadcast ||
            spa.IsLoopback || spa == _address || spa == _subnet.DirectedBroadcast)
            return Dropped(DropReason.ArpBogusSender);

        // RFC 826 "merge": refresh an entry we already have, whoever the packet was for.
        int i = _arp.Find(spa);
        if (i >= 0)
            Learn(i, sha, confirmed: forUs && op == ArpOperation.Reply);
        else if (forUs)
        {
            // A request to us creates the sender's entry, as Linux does (STALE until confirmed).
            i = _arp.Add(spa, NeighbourState.Stale, _now);
            if (i >= 0)
            {
                Learn(i, sha, confirmed: op == ArpOperation.Reply);
                ScheduleNeighbourTimer(i);
            }
        }
        if (!forUs)
        {
            // An announcement (sender = target, RFC 5227 §3) is handled by the merge above; anything else was for another host.
            return spa == tpa ? false : Dropped(DropReason.ArpNotForUs);
        }
        if (op == ArpOperation.Request)
            return ReplyInPlace(buffer, frame, sha, spa);
        return false;
    }

    /// <summary>Turns a request into our reply in the same buffer and sends it (no copy).</summary>
    private bool ReplyInPlace(int buffer, Span<byte> frame, MacAddress requesterMac, Ipv4Address requesterIp)
    {
        var arp = new ArpPacket(frame[EthernetFrame.HeaderLength..]);
        arp.Write(ArpOperation.Reply, _mac, _address, requesterMac, requesterIp);
        new EthernetFrame(frame).WriteHeader(requesterMac, _mac, EtherType.Arp);
        Counters.ArpOutReplies++;
        Transmit(buffer, EthernetFrame.HeaderLength + ArpPacket.Length);
        return true;
    }

    private void Learn(int index, MacAddress mac, bool confirmed)
    {
        ref var e = ref _arp[index];
        bool wasIncomplete = e.State == NeighbourState.Incomplete;
        bool changed = e.Mac != mac;
        e.Mac = mac;
        if (changed || wasIncomplete)
            _neighbourGeneration++;
        if (confirmed)
        {
            e.State = NeighbourState.Reachable;
            e.ConfirmedAt = _now;
            e.ProbeAt = 0;
            e.Probes = 0;
        }
        else if (wasIncomplete || changed)
        {
            e.State = NeighbourState.Stale;
            e.ProbeAt = 0;
            e.Probes = 0;
        }
        if (wasIncomplete)
            SendQueued(index);
    }

    private void SendQueued(int index)
    {
        var mac = _arp[index].Mac;
        while (true)
        {
            int buffer = _arp.Dequeue(index, out int length);
            if (buffer < 0)
                return;
            new EthernetFrame(_pool.Span(buffer)).WriteHeader(mac, _mac, EtherType.Ipv4);
            Transmit(buffer, length);
        }
    }

    /// <summary>Sends an IPv4 frame whose IP header is written to <paramref name="nextHop"/>, resolving its MAC
    /// first if needed. The frame's buffer passes to the stack whatever happens.</summary>
    private void SendToNeighbour(Ipv4Address nextHop, int buffer, int length)
    {
        int i = _arp.Find(nextHop);
        if (i >= 0)
        {
            ref var e = ref _arp[i];
            e.UsedAt = _now;
            if (e.State != NeighbourState.Incomplete)
            {
                if (e.State == NeighbourState.Reachable && _now - e.ConfirmedAt > Options.ArpReachableNs)
                    e.State = NeighbourState.Stale;
                if (e.State == NeighbourState.Stale && e.ProbeAt == 0)
                {
                    // Still use the old MAC, but ask the neighbour directly whether it is still there.
                    e.ProbeAt = _now;
                    ScheduleNeighbourTimer(i);
                }
                new EthernetFrame(_pool.Span(buffer)).WriteHeader(e.Mac, _mac, EtherType.Ipv4);
                Transmit(buffer, length);
                return;
            }
        }
        else
        {
            i = _arp.Add(nextHop, NeighbourState.Incomplete, _now);
            if (i < 0)
            {
                _pool.Release(buffer);
                Counters.Count(DropReason.ArpQueueOverflow);
                return;
            }
            ref var e = ref _arp[i];
            e.Probes = 1;
            e.ProbeAt = _now + Options.ArpRetransmitNs;
            ScheduleNeighbourTimer(i);
            Solicit(nextHop, MacAddress.Broadcast);
        }
        if (!_arp.Enqueue(i, buffer, length, Options.ArpQueuePerEntry, out int evicted))
        {
            _pool.Release(buffer);
            Counters.Count(DropReason.ArpQueueOverflow);
        }
        else if (evicted >= 0)
        {
            _pool.Release(evicted);
            Counters.Count(DropReason.ArpQueueOverflow);
        }
    }

    /// <summary>Asks for <paramref name="target"/>'s MAC: an ARP request to <paramref name="to"/> (broadcast while
    /// resolving, the known MAC when re-probing), or in driverlink mode the control plane.</summary>
    private void Solicit(Ipv4Address target, MacAddress to)
    {
        if (_control == null)
        {
            SendArpRequest(target, to);
            return;
        }
        Counters.ArpOutControlResolves++;
        _control.ResolveNeighbour(target.Value);
    }

    private void SendArpRequest(Ipv4Address target, MacAddress to)
    {
        int buffer = AllocateTx();
        if (buffer < 0)
            return;
        var frame = _pool.Span(buffer);
        new EthernetFrame(frame).WriteHeader(to, _mac, EtherType.Arp);
        new ArpPacket(frame[EthernetFrame.HeaderLength..]).Write(ArpOperation.Request, _mac, _address, MacAddress.Zero, target);
        Counters.ArpOutRequests++;
        Transmit(buffer, EthernetFrame.HeaderLength + ArpPacket.Length);
    }

    /// <summary>A request for our own address from our own address (RFC 5227 §3 announcement).</summary>
    private void SendGratuitousArp() => SendArpRequest(_address, MacAddress.Broadcast);

    /// <summary>
    /// An entry's one timer: its next request (resolution, or re-probing a stale entry), else its garbage
    /// collection once unused for <see cref="NeighbourGcNs"/>. Confirmations and use only push the collection
    /// later, so they leave the timer be; when it fires early it just re-arms.
    /// </summary>
    private void ArpTimerExpired(int i)
    {
        ref var e = ref _arp[i];
        if (e.State == NeighbourState.Free)
            return;
        if (e.ProbeAt != 0 && e.ProbeAt <= _now)
        {
            if (e.Probes >= Options.ArpMaxProbes)
            {
                DiscardNeighbour(i, countAsFailure: true);
                return;
            }
            e.Probes++;
            e.ProbeAt = _now + Options.ArpRetransmitNs;
            Solicit(e.Address, e.State == NeighbourState.Incomplete ? MacAddress.Broadcast : e.Mac);
        }
        else if (e.State != NeighbourState.Incomplete && e.ProbeAt == 0 &&
            _now - Math.Max(e.UsedAt, e.ConfirmedAt) > NeighbourGcNs)
        {
            DiscardNeighbour(i, countAsFailure: false);
            return;
        }
        ScheduleNeighbourTimer(i);
    }

    private void ScheduleNeighbourTimer(int i)
    {
        ref var e = ref _arp[i];
        _timers.Schedule(ArpTimerId(i), e.ProbeAt != 0 ? e.ProbeAt : Math.Max(e.UsedAt, e.ConfirmedAt) + NeighbourGcNs + 1);
    }

    /// <summary>Drops an entry and the frames waiting on it. When resolution failed, each frame counts as
    /// <see cref="DropReason.ArpResolutionFailed"/> and its sender hears of it (<see cref="NeighbourUnreachable"/>).</summary>
    private void DiscardNeighbour(int index, bool countAsFailure)
    {
        while (true)
        {
            int buffer = _arp.Dequeue(index, out int length);
            if (buffer < 0)
                break;
            if (countAsFailure)
            {
                Counters.Count(DropReason.ArpResolutionFailed);
                NeighbourUnreachable(_pool.Span(buffer)[..length]);
            }
            _pool.Release(buffer);
        }
        _arp.Remove(index);
        _neighbourGeneration++;
        _timers.Cancel(ArpTimerId(index));
    }

    /// <summary>
    /// A frame we built could not be sent because its next hop never answered. Linux reports that as a host
    /// unreachable to the sender (ipv4_link_failure), which ends a connect in SYN-SENT with EHOSTUNREACH
    /// (tcp_v4_err); to an established connection or a UDP socket it is a soft error, which they do not report.
    /// </summary>
    private void NeighbourUnreachable(Span<byte> frame)
    {
        if (frame.Length < IpPayloadOffset + TcpSegment.MinHeaderLength)
            return;
        var ip = new Ipv4Packet(frame[EthernetFrame.HeaderLength..]);
        if (ip.Protocol != IpProtocol.Tcp || ip.HeaderLength != Ipv4Packet.MinHeaderLength)
            return;
        var tcp = new TcpSegment(frame[IpPayloadOffset..]);
        int c = _tcp.Find(tcp.SourcePort, ip.Destination, tcp.DestinationPort);
        if (c >= 0 && _tcp[c].State == TcpState.SynSent)
            TcpFail(c, (int)Errno.EHOSTUNREACH);
    }

    /// <summary>
    /// The MAC of <paramref name="address"/>, as if a valid ARP reply had come from it: the entry
    /// becomes reachable and frames waiting for it are sent. How the control plane answers
    /// <see cref="IStackControl.ResolveNeighbour"/> in driverlink mode; usable in direct mode too (a static entry
    /// that ages like a learnt one). On the stack's thread.
    /// </summary>
    /// <exception cref="ArgumentException"><paramref name="mac"/> is zero or a group address, or
    /// <paramref name="address"/> cannot be a neighbour.</exception>
    public void SetNeighbour(Ipv4Address address, MacAddress mac)
    {
        if (mac.IsGroup || mac == MacAddress.Zero)
            throw new ArgumentException($"{mac} cannot be a neighbour's MAC", nameof(mac));
        if (address.IsAny || address.IsMulticast || address.IsLimitedBroadcast || address == _address)
            throw new ArgumentException($"{address} cannot be a neighbour", nameof(address));
        Counters.ArpInControlUpdates++;
        int i = _arp.Find(address);
        if (i < 0)
        {
            i = _arp.Add(address, NeighbourState.Reachable, _now);
            if (i < 0)
                return; // every entry has frames waiting: this neighbour is learnt when next needed
            Learn(i, mac, confirmed: true);
            ScheduleNeighbourTimer(i);
        }
        else
            Learn(i, mac, confirmed: true);
        Flush();
    }

    /// <summary>
    /// Forgets <paramref name="address"/>'s MAC (the kernel's entry went, or its resolution failed). Frames
    /// waiting for it are dropped as a failed resolution (a connect waiting on it fails with EHOSTUNREACH); the
    /// next frame to it starts resolving again. On the stack's thread.
    /// </summary>
    public void ForgetNeighbour(Ipv4Address address)
    {
        Counters.ArpInControlUpdates++;
        int i = _arp.Find(address);
        if (i >= 0)
            DiscardNeighbour(i, countAsFailure: true);
    }
}
