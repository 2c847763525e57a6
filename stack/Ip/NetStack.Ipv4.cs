using Onload.Stack.Wire;
using Onload.Vnic;

namespace Onload.Stack;

// IPv4 (RFC 791, RFC 1122 §3.2.1): input checks, local delivery, routing to the subnet or the gateway, output.
public sealed partial class NetStack
{
    /// <summary>Where IP payload starts in a frame the stack builds: after a 14-byte Ethernet and a 20-byte IP header.</summary>
    internal const int IpPayloadOffset = EthernetFrame.HeaderLength + Ipv4Packet.MinHeaderLength;

    private bool Ipv4Input(in PacketDescriptor d, Span<byte> frame, bool linkBroadcast)
    {
        Counters.IpInReceives++;
        var packet = frame[EthernetFrame.HeaderLength..];
        var reason = Ipv4Packet.Validate(packet);
        if (reason != DropReason.None)
            return Dropped(reason);
        var ip = new Ipv4Packet(packet);
        var dst = ip.Destination;
        bool broadcast = dst.IsLimitedBroadcast || dst == _subnet.DirectedBroadcast;
        if (dst != _address && !broadcast)
            return Dropped(DropReason.IpNotForUs);
        var src = ip.Source;
        // RFC 1122 §3.2.1.3: a source that cannot be a single host is a martian.
        if (src.IsMulticast || src.IsLimitedBroadcast || src.IsLoopback || src.IsReserved || src == _address ||
            src == _subnet.DirectedBroadcast || (src.IsAny && ip.Protocol != IpProtocol.Udp))
            return Dropped(DropReason.IpMartianSource);
        if (ip.IsFragment)
            return Dropped(DropReason.IpFragment); // reassembly arrives with issue 3
        Counters.IpInDelivers++;
        broadcast |= linkBroadcast;
        switch (ip.Protocol)
        {
            case IpProtocol.Icmp:
                return IcmpInput(d.Buffer, frame, ip, broadcast);
            case IpProtocol.Udp:
                return UdpInput(in d, ip, broadcast);
            case IpProtocol.Tcp:
                return Dropped(DropReason.IpUnknownProtocol); // TCP arrives with issue 4
            default:
                // RFC 1122 §3.2.2.1: a host should send Protocol Unreachable.
                if (!broadcast)
                    SendIcmpError(frame, IcmpType.DestinationUnreachable, IcmpUnreachableCode.Protocol);
                return Dropped(DropReason.IpUnknownProtocol);
        }
    }

    /// <summary>The route to <paramref name="destination"/>: the neighbour to hand it to, or an errno.</summary>
    /// <returns>0, or a negated errno (ENETUNREACH without a route).</returns>
    private int Route(Ipv4Address destination, out Ipv4Address nextHop, out MacAddress linkDestination)
    {
        linkDestination = MacAddress.Zero;
        nextHop = destination;
        if (destination.IsLimitedBroadcast || destination == _subnet.DirectedBroadcast)
        {
            linkDestination = MacAddress.Broadcast;
            return 0;
        }
        if (destination.IsMulticast)
        {
            // RFC 1112 §6.4: 01:00:5e followed by the low 23 bits of the group.
            linkDestination = new MacAddress(0x0100_5E00_0000UL | (destination.Value & 0x7F_FFFF));
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
        byte tos = 0)
    {
        int rc = Route(destination, out var nextHop, out var linkDestination);
        if (rc != 0)
        {
            _pool.Release(buffer);
            return rc;
        }
        var frame = _pool.Span(buffer);
        new Ipv4Packet(frame[EthernetFrame.HeaderLength..]).WriteHeader(_address, destination, protocol, payloadLength,
            _ipIdentification++, Options.DefaultTtl, dontFragment, tos);
        Counters.IpOutRequests++;
        int length = IpPayloadOffset + payloadLength;
        if (linkDestination != MacAddress.Zero)
        {
            new EthernetFrame(frame).WriteHeader(linkDestination, _mac, EtherType.Ipv4);
            Transmit(buffer, length);
        }
        else
            SendToNeighbour(nextHop, buffer, length);
        return 0;
    }
}
