using Onload.Stack.Ip;
using Onload.Stack.Wire;
using Onload.Vnic;

namespace Onload.Stack;

// IPv4 (RFC 791, RFC 1122 §3.2.1): input checks, local delivery, routing to the subnet or the gateway, output.
public sealed partial class NetStack
{
    /// <summary>Where IP payload starts in a frame the stack builds: after a 14-byte Ethernet and a 20-byte IP header.</summary>
    internal const int IpPayloadOffset = EthernetFrame.HeaderLength + Ipv4Packet.MinHeaderLength;

    /// <summary>The largest IP datagram (RFC 791): its payload after a 20-byte header.</summary>
    private const int MaxIpPayload = ushort.MaxValue - Ipv4Packet.MinHeaderLength;

    private bool Ipv4Input(in PacketDescriptor d, Span<byte> frame, bool linkBroadcast)
    {
        Counters.IpInReceives++;
        var packet = frame[EthernetFrame.HeaderLength..];
        var reason = Ipv4Packet.Validate(packet);
        if (reason != DropReason.None)
            return Dropped(reason);
        var ip = new Ipv4Packet(packet);
        var dst = ip.Destination;
        bool multicast = dst.IsMulticast;
        if (multicast && dst != IgmpMessage.AllHosts && !_groups.IsJoined(dst))
            return Dropped(DropReason.IpMulticastNotJoined);
        bool broadcast = multicast || dst.IsLimitedBroadcast || dst == _subnet.DirectedBroadcast;
        if (dst != _address && !broadcast)
            return Dropped(DropReason.IpNotForUs);
        var src = ip.Source;
        // RFC 1122 §3.2.1.3: a source that cannot be a single host is a martian. Our own address and loopback are
        // from the wire, but not on a datagram the host's kernel handed over (driverlink: a local program sent it).
        bool fromHost = (d.Flags & PacketFlags.FromHostKernel) != 0;
        if (src.IsMulticast || src.IsLimitedBroadcast || (src.IsLoopback && !fromHost) || src.IsReserved ||
            (src == _address && !fromHost) ||
            src == _subnet.DirectedBroadcast || (src.IsAny && ip.Protocol is not (IpProtocol.Udp or IpProtocol.Igmp)))
            return Dropped(DropReason.IpMartianSource);
        broadcast |= linkBroadcast;
        if (ip.IsFragment)
            return FragmentInput(in d, ip, broadcast);
        Counters.IpInDelivers++;
        switch (ip.Protocol)
        {
            case IpProtocol.Icmp:
                return IcmpInput(d.Buffer, frame, ip, broadcast);
            case IpProtocol.Udp:
                return UdpInput(in d, ip, broadcast);
            case IpProtocol.Igmp:
                return IgmpInput(ip);
            case IpProtocol.Tcp:
                return TcpInput(in d, ip, broadcast);
            default:
                // RFC 1122 §3.2.2.1: a host should send Protocol Unreachable.
                if (!broadcast)
                    SendIcmpError(frame, IcmpType.DestinationUnreachable, IcmpUnreachableCode.Protocol);
                return Dropped(DropReason.IpUnknownProtocol);
        }
    }

    private bool FragmentInput(in PacketDescriptor d, Ipv4Packet ip, bool broadcast)
    {
        Counters.IpReasmReqds++;
        if (PacketBuffersLow)
        {
            Counters.IpReasmFails++;
            return Dropped(DropReason.PacketBuffersLow);
        }
        int dataStart = EthernetFrame.HeaderLength + ip.HeaderLength;
        var outcome = _reassembler.Add(ip, d.Buffer, dataStart, _now, out int queue, out var reason);
        switch (outcome)
        {
            case FragmentOutcome.Dropped:
                if (reason != DropReason.IpFragmentDuplicate)
                    Counters.IpReasmFails++;
                if (queue >= 0 && !_reassembler[queue].InUse)
                    _timers.Cancel(ReassemblyTimerId(queue)); // the fragment condemned its datagram
                return Dropped(reason);
            case FragmentOutcome.Held:
                if (_reassembler[queue].Fragments == 1) // a new datagram: its time limit starts
                    _timers.Schedule(ReassemblyTimerId(queue), _reassembler[queue].ExpiresAt);
                return true;
            default:
                _timers.Cancel(ReassemblyTimerId(queue)); // whole: no time limit while a socket holds it
                Counters.IpReasmOKs++;
                Counters.IpInDelivers++;
                DeliverReassembled(queue, broadcast);
                return true;
        }
    }

    /// <summary>Hands a whole datagram to its transport; frees it unless a socket kept it.</summary>
    private void DeliverReassembled(int queue, bool broadcast)
    {
        bool kept = false;
        switch (_reassembler[queue].Protocol)
        {
            case IpProtocol.Udp:
                kept = UdpInputReassembled(queue, broadcast);
                break;
            case IpProtocol.Icmp:
                IcmpInputReassembled(queue, broadcast);
                break;
            case IpProtocol.Tcp:
                TcpInputReassembled(queue, broadcast);
                break;
            default:
                Counters.Count(DropReason.IpUnknownProtocol);
                break;
        }
        if (!kept)
            _reassembler.Free(queue);
    }

    /// <summary>RFC 792: when reassembly times out with the first fragment in hand, say so to the sender.</summary>
    private void ReassemblyTimerExpired(int queue)
    {
        ref var q = ref _reassembler[queue];
        if (!q.InUse || q.Delivered || q.ExpiresAt > _now)
            return;
        Counters.IpReasmFails++;
        Counters.Count(DropReason.IpReassemblyTimeout);
        if (_reassembler.HasFirst(queue))
            SendIcmpError(_pool.Span(_reassembler.FirstBuffer(queue)), IcmpType.TimeExceeded, 1);
        _reassembler.Free(queue);
    }

    /// <summary>The route to <paramref name="destination"/>: the neighbour to hand it to, or an errno.</summary>
    /// <returns>0, or a negated errno (ENETUNREACH without a route).</returns>
    private int Route(Ipv4Address destination, out Ipv4Address nextHop, out MacAddress linkDestination)
    {
        linkDestination = MacAddress.Zero;
        nextHop = destination;
        // 127/8 never leaves a host (RFC 1122 3.2.1.3), not even through a gateway; the stack has no loopback.
        if (destination.IsLoopback)
        {
            Counters.IpOutNoRoutes++;
            return -(int)Errno.ENETUNREACH;
        }
        if (destination.IsLimitedBroadcast || destination == _subnet.DirectedBroadcast)
        {
            linkDestination = MacAddress.Broadcast;
            return 0;
        }
        if (destination.IsMulticast)
        {
            linkDestination = MulticastMac(destination);
            return 0;
        }
        if (_subnet.Contains(destination))
            return 0;
        if (Options.Gateway is { } gateway)
        {
            nextHop = gateway;
            return 0;
        }
        Counters.IpOutNoRoutes++;
        return -(int)Errno.ENETUNREACH;
    }

    /// <summary>
    /// Writes the IP header in front of a payload already at <see cref="IpPayloadOffset"/> and sends the frame
    /// towards <paramref name="destination"/>. The buffer passes to the stack whatever happens.
    /// </summary>
    private int Ipv4Output(int buffer, Ipv4Address destination, byte protocol, int payloadLength, bool dontFragment,
        byte tos = 0, byte ttl = 0)
    {
        int rc = Route(destination, out var nextHop, out var linkDestination);
        if (rc != 0)
        {
            _pool.Release(buffer);
            return rc;
        }
        ushort flags = dontFragment ? Ipv4Packet.FlagDontFragment : (ushort)0;
        SendRouted(buffer, destination, nextHop, linkDestination, protocol, payloadLength, _ipIdentification++, flags, tos,
            ttl == 0 ? Options.DefaultTtl : ttl);
        return 0;
    }

    private void SendRouted(int buffer, Ipv4Address destination, Ipv4Address nextHop, MacAddress linkDestination,
        byte protocol, int payloadLength, ushort id, ushort flagsAndOffset, byte tos, byte ttl)
    {
        var frame = _pool.Span(buffer);
        new Ipv4Packet(frame[EthernetFrame.HeaderLength..]).WriteHeader(_address, destination, protocol, payloadLength,
            id, ttl, flagsAndOffset, tos, optionWords: 0);
        Counters.IpOutRequests++;
        int length = IpPayloadOffset + payloadLength;
        if (linkDestination != MacAddress.Zero)
        {
            new EthernetFrame(frame).WriteHeader(linkDestination, _mac, EtherType.Ipv4);
            Transmit(buffer, length);
        }
        else
            SendToNeighbour(nextHop, buffer, length);
    }

    /// <summary>
    /// Sends a transport header and body as one IP datagram, fragmenting it (RFC 791 §3.2) when it does not fit
    /// the MTU: every fragment but the last carries a multiple of 8 bytes, all share one identification, DF clear.
    /// The datagram's bytes are copied once, from the caller's spans straight into each fragment's frame.
    /// </summary>
    /// <returns>0, or a negated errno (EMSGSIZE over 65,535 bytes or with DF, ENOBUFS, ENETUNREACH).</returns>
    private int Ipv4OutputPieces(Ipv4Address destination, byte protocol, ReadOnlySpan<byte> head, ReadOnlySpan<byte> body,
        bool dontFragment, byte ttl, byte tos = 0)
    {
        int total = head.Length + body.Length;
        if (total > MaxIpPayload)
            return -(int)Errno.EMSGSIZE;
        int rc = Route(destination, out var nextHop, out var linkDestination);
        if (rc != 0)
            return rc;
        int mtuPayload = _mtu - Ipv4Packet.MinHeaderLength;
        bool fits = total <= mtuPayload;
        if (!fits && dontFragment)
            return -(int)Errno.EMSGSIZE;
        int perFragment = fits ? total : mtuPayload & ~7;
        int fragments = (total + perFragment - 1) / Math.Max(1, perFragment);
        if (_pool.Available < Math.Max(1, fragments))
        {
            Counters.Count(DropReason.TxNoBuffer);
            return -(int)Errno.ENOBUFS;
        }
        ushort id = _ipIdentification++;
        int offset = 0;
        do
        {
            int length = Math.Min(perFragment, total - offset);
            int buffer = AllocateTx();
            var data = _pool.Span(buffer).Slice(IpPayloadOffset, length);
            // The piece [offset, offset + length) of head ++ body.
            int fromHead = Math.Max(0, Math.Min(head.Length - offset, length));
            if (fromHead > 0)
                head.Slice(offset, fromHead).CopyTo(data);
            if (length > fromHead)
                body.Slice(offset + fromHead - head.Length, length - fromHead).CopyTo(data[fromHead..]);
            bool last = offset + length == total;
            ushort flags = fits
                ? (dontFragment ? Ipv4Packet.FlagDontFragment : (ushort)0)
                : (ushort)((last ? 0 : Ipv4Packet.FlagMoreFragments) | (offset / 8));
            SendRouted(buffer, destination, nextHop, linkDestination, protocol, length, id, flags, tos, ttl);
            if (!fits)
                Counters.IpFragCreates++;
            offset += length;
        }
        while (offset < total);
        if (!fits)
            Counters.IpFragOKs++;
        return 0;
    }
}
