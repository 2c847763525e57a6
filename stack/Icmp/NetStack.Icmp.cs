using Onload.Stack.Icmp;
using Onload.Stack.Udp;
using Onload.Stack.Wire;

namespace Onload.Stack;

// ICMP (RFC 792, RFC 1122 §3.2.2): echo replies, errors we send (rate-limited), errors we receive for sockets.
public sealed partial class NetStack
{
    /// <summary>ICMP errors quote at most this much so the whole error fits the minimum datagram (RFC 1812 §4.3.2.3).</summary>
    private const int IcmpErrorMaxPacket = 576;

    private bool IcmpInput(int buffer, Span<byte> frame, Ipv4Packet ip, bool broadcast)
    {
        var message = ip.Payload;
        var reason = IcmpPacket.Validate(message);
        if (reason != DropReason.None)
            return Dropped(reason);
        Counters.IcmpInMsgs++;
        var icmp = new IcmpPacket(message);
        switch (icmp.Type)
        {
            case IcmpType.EchoRequest:
                Counters.IcmpInEchos++;
                // net.ipv4.icmp_echo_ignore_broadcasts = 1 (RFC 1122 §3.2.2.6 allows either).
                if (broadcast)
                    return Dropped(DropReason.IcmpEchoToBroadcast);
                if (Ipv4Packet.MinHeaderLength + message.Length > _mtu)
                {
                    EchoReplyInPieces(ip); // the MTU fell below the request's size (SetMtu)
                    return false;
                }
                EchoReplyInPlace(buffer, frame, ip);
                return true;
            case IcmpType.DestinationUnreachable:
                Counters.IcmpInDestUnreachs++;
                IcmpErrorToSocket(icmp);
                return false;
            case IcmpType.TimeExceeded:
            case IcmpType.ParameterProblem:
                IcmpErrorToSocket(icmp);
                return false;
            default:
                return Dropped(DropReason.IcmpUnhandledType);
        }
    }

    /// <summary>
    /// Turns an echo request into its reply in the same buffer (RFC 792): swap the addresses, change the type and
    /// patch the checksum incrementally (RFC 1624) rather than summing the data again.
    /// </summary>
    private void EchoReplyInPlace(int buffer, Span<byte> frame, Ipv4Packet request)
    {
        var eth = new EthernetFrame(frame);
        var requesterMac = eth.Source;
        var requester = request.Source;
        byte tos = request.TypeOfService;
        var message = request.Payload;
        int length = message.Length;
        if (request.HeaderLength != Ipv4Packet.MinHeaderLength)
            message.CopyTo(frame[IpPayloadOffset..]); // the reply carries no IP options: close the gap
        var icmp = new IcmpPacket(frame.Slice(IpPayloadOffset, length));
        ushort oldWord = (ushort)(icmp.Type << 8 | icmp.Code);
        icmp.Type = IcmpType.EchoReply;
        icmp.Checksum = Checksum.Update(icmp.Checksum, oldWord, (ushort)(IcmpType.EchoReply << 8 | icmp.Code));
        new Ipv4Packet(frame[EthernetFrame.HeaderLength..]).WriteHeader(_address, requester, IpProtocol.Icmp, length,
            _ipIdentification++, Options.DefaultTtl, dontFragment: false, tos);
        // Answer the link address the request came from: the requester itself or the router that forwarded it.
        eth.WriteHeader(requesterMac, _mac, EtherType.Ipv4);
        Counters.IpOutRequests++;
        Counters.IcmpOutMsgs++;
        Counters.IcmpOutEchoReps++;
        Transmit(buffer, IpPayloadOffset + length);
    }

    /// <summary>An echo reply too large for the MTU: copied out of the request into fragments.</summary>
    private void EchoReplyInPieces(Ipv4Packet request)
    {
        var message = request.Payload;
        var icmp = new IcmpPacket(message);
        ushort oldWord = (ushort)(icmp.Type << 8 | icmp.Code);
        icmp.Type = IcmpType.EchoReply;
        icmp.Checksum = Checksum.Update(icmp.Checksum, oldWord, (ushort)(IcmpType.EchoReply << 8 | icmp.Code));
        if (Ipv4OutputPieces(request.Source, IpProtocol.Icmp, default, message, dontFragment: false, Options.DefaultTtl,
                request.TypeOfService) == 0)
        {
            Counters.IcmpOutMsgs++;
            Counters.IcmpOutEchoReps++;
        }
    }

    /// <summary>
    /// A reassembled ICMP message (a large ping): put back in one piece in the scratch buffer, answered if it is
    /// an echo request, the reply fragmented like any large datagram.
    /// </summary>
    private void IcmpInputReassembled(int queue, bool broadcast)
    {
        ref var q = ref _reassembler[queue];
        var message = _scratch.AsSpan(0, q.Length);
        _reassembler.CopyOut(queue, 0, message);
        var reason = IcmpPacket.Validate(message);
        if (reason != DropReason.None)
        {
            Counters.Count(reason);
            return;
        }
        Counters.IcmpInMsgs++;
        var icmp = new IcmpPacket(message);
        if (icmp.Type != IcmpType.EchoRequest)
        {
            Counters.Count(DropReason.IcmpUnhandledType);
            return;
        }
        Counters.IcmpInEchos++;
        if (broadcast)
        {
            Counters.Count(DropReason.IcmpEchoToBroadcast);
            return;
        }
        ushort oldWord = (ushort)(icmp.Type << 8 | icmp.Code);
        icmp.Type = IcmpType.EchoReply;
        icmp.Checksum = Checksum.Update(icmp.Checksum, oldWord, (ushort)(IcmpType.EchoReply << 8 | icmp.Code));
        if (Ipv4OutputPieces(q.Source, IpProtocol.Icmp, default, message, dontFragment: false, Options.DefaultTtl) == 0)
        {
            Counters.IcmpOutMsgs++;
            Counters.IcmpOutEchoReps++;
        }
    }

    /// <summary>
    /// Sends an ICMP error about a received frame, unless RFC 1122 §3.2.2 forbids one (errors about ICMP errors,
    /// broadcasts, non-first fragments, sources that are not one host) or the global rate limit is spent.
    /// </summary>
    private void SendIcmpError(Span<byte> offendingFrame, byte type, byte code)
    {
        var offending = new Ipv4Packet(offendingFrame[EthernetFrame.HeaderLength..]);
        if (offending.FragmentOffset != 0)
            return;
        if (offending.Protocol == IpProtocol.Icmp)
        {
            var inner = offending.Payload;
            if (inner.Length > 0 && inner[0] is not (IcmpType.EchoRequest or IcmpType.EchoReply))
                return;
        }
        var src = offending.Source;
        if (src.IsAny || src.IsMulticast || src.IsLimitedBroadcast || src == _subnet.DirectedBroadcast)
            return;
        if (!_icmpErrorLimit.TryTake(_now))
        {
            Counters.Count(DropReason.IcmpRateLimited);
            return;
        }
        int buffer = AllocateTx();
        if (buffer < 0)
            return;
        int room = Math.Min(IcmpErrorMaxPacket, _mtu) - Ipv4Packet.MinHeaderLength - IcmpPacket.HeaderLength;
        var quoted = offending.Bytes[..offending.TotalLength];
        if (quoted.Length > room)
            quoted = quoted[..room];
        var frame = _pool.Span(buffer);
        var icmp = new IcmpPacket(frame.Slice(IpPayloadOffset, IcmpPacket.HeaderLength + quoted.Length));
        icmp.Type = type;
        icmp.Code = code;
        frame.Slice(IpPayloadOffset + 4, 4).Clear();
        quoted.CopyTo(icmp.Data);
        icmp.FillChecksum();
        // Linux marks its errors with precedence "internetwork control" (IPTOS_PREC_INTERNETCONTROL).
        byte tos = (byte)((offending.TypeOfService & 0x1E) | 0xC0);
        if (Ipv4Output(buffer, src, IpProtocol.Icmp, IcmpPacket.HeaderLength + quoted.Length, dontFragment: false, tos) == 0)
        {
            Counters.IcmpOutMsgs++;
            if (type == IcmpType.DestinationUnreachable)
                Counters.IcmpOutDestUnreachs++;
        }
    }

    /// <summary>
    /// Hands a received ICMP error to the socket it quotes: a TCP connection (<see cref="TcpIcmpError"/>) or a UDP
    /// socket. It must quote a datagram we sent: our address, and at least 8 bytes past its header (RFC 792).
    /// </summary>
    private void IcmpErrorToSocket(IcmpPacket icmp)
    {
        var quote = icmp.Data;
        if (quote.Length < Ipv4Packet.MinHeaderLength || quote[0] >> 4 != 4)
        {
            Counters.Count(DropReason.IcmpTruncated);
            return;
        }
        var inner = new Ipv4Packet(quote);
        int ihl = inner.HeaderLength;
        if (ihl < Ipv4Packet.MinHeaderLength || quote.Length < ihl + 8)
        {
            Counters.Count(DropReason.IcmpTruncated);
            return;
        }
        if (inner.Source != _address || inner.FragmentOffset != 0)
        {
            Counters.Count(DropReason.IcmpErrorNoSocket);
            return;
        }
        if (inner.Protocol == IpProtocol.Tcp)
            TcpIcmpError(icmp, inner, quote[ihl..]);
        else if (inner.Protocol == IpProtocol.Udp)
            UdpIcmpError(icmp, inner, quote[ihl..]);
        else
            Counters.Count(DropReason.IcmpErrorNoSocket);
    }

    /// <summary>
    /// An ICMP error to the UDP socket it quotes, as Linux's __udp4_lib_err: only "hard" errors, and only to a
    /// connected socket (without IP_RECVERR the kernel reports nothing to an unconnected one).
    /// </summary>
    private void UdpIcmpError(IcmpPacket icmp, Ipv4Packet inner, Span<byte> quotedUdp)
    {
        var udp = new UdpDatagram(quotedUdp);
        if (!_udp.PortInUse(udp.SourcePort))
        {
            Counters.Count(DropReason.IcmpErrorNoSocket);
            return;
        }
        // Only a connected socket hears of its datagrams' fate (as Linux): the one on the port connected to the
        // quoted destination.
        int s = _udp.FirstOnPort(udp.SourcePort);
        while (s >= 0 && !ConnectedTo(ref _udp[s], inner.Destination, udp.DestinationPort))
            s = _udp.NextOnPort(s);
        if (s < 0)
            return;
        ref UdpSocket socket = ref _udp[s];
        var (errno, hard) = IcmpErrors.ToErrno(icmp.Type, icmp.Code);
        if (hard)
            socket.Error = errno;
    }

    private static bool ConnectedTo(ref UdpSocket socket, Ipv4Address remote, ushort remotePort) =>
        socket.Connected && socket.RemoteAddress == remote && socket.RemotePort == remotePort;
}
