using Onload.Stack.Udp;
using Onload.Stack.Wire;
using Onload.Vnic;

namespace Onload.Stack;

// UDP (RFC 768): demultiplexing to sockets, and the socket calls. Calls return a count or a negated errno, and
// follow Linux's udp.c where the RFC leaves a choice.
public sealed partial class NetStack
{
    /// <summary>The largest UDP payload one frame carries without fragmenting (fragmentation arrives with issue 3).</summary>
    public int UdpMaxPayload => _vnic.Mtu - Ipv4Packet.MinHeaderLength - UdpDatagram.HeaderLength;

    private bool UdpInput(in PacketDescriptor d, Ipv4Packet ip, bool broadcast)
    {
        var datagram = ip.Payload;
        var src = ip.Source;
        var reason = UdpDatagram.Validate(datagram, src, ip.Destination, (d.Flags & PacketFlags.ChecksumTrusted) != 0);
        if (reason != DropReason.None)
        {
            Counters.UdpInErrors++;
            if (reason == DropReason.UdpBadChecksum)
                Counters.UdpInCsumErrors++;
            return Dropped(reason);
        }
        var udp = new UdpDatagram(datagram);
        int s = _udp.OwnerOf(udp.DestinationPort);
        if (s >= 0)
        {
            ref var socket = ref _udp[s];
            // A connected socket hears only its peer (RFC 768 leaves it open; Linux's lookup scores it so).
            if (socket.Connected && (socket.RemoteAddress != src || socket.RemotePort != udp.SourcePort))
                s = -1;
        }
        if (s < 0)
        {
            Counters.UdpNoPorts++;
            if (!broadcast)
                SendIcmpError(_pool.Span(in d), IcmpType.DestinationUnreachable, IcmpUnreachableCode.Port);
            return Dropped(DropReason.UdpNoPort);
        }
        var payload = udp.Payload;
        var queued = new UdpQueuedDatagram
        {
            Buffer = d.Buffer,
            PayloadOffset = (ushort)(IpPayloadOffset - Ipv4Packet.MinHeaderLength + ip.HeaderLength + UdpDatagram.HeaderLength),
            PayloadLength = (ushort)payload.Length,
            SourceAddress = src,
            SourcePort = udp.SourcePort,
        };
        if (!_udp.TryEnqueue(s, in queued, _pool.BufferSize))
        {
            _udp[s].Drops++;
            Counters.UdpRcvbufErrors++;
            Counters.UdpInErrors++;
            return Dropped(DropReason.UdpReceiveBufferFull);
        }
        _udp[s].InDatagrams++;
        Counters.UdpInDatagrams++;
        return true;
    }

    /// <summary>socket(AF_INET, SOCK_DGRAM, 0): a new UDP socket's handle, or -EMFILE when the table is full.</summary>
    public int UdpOpen()
    {
        int s = _udp.Allocate(Options.UdpReceiveBufferBytes);
        return s < 0 ? -(int)Errno.EMFILE : s;
    }

    /// <summary>bind(): port 0 picks an ephemeral port; the address must be ours or INADDR_ANY.</summary>
    public int UdpBind(int s, Ipv4Endpoint local)
    {
        if (!_udp.IsValid(s))
            return -(int)Errno.EBADF;
        ref var socket = ref _udp[s];
        if (socket.Bound)
            return -(int)Errno.EINVAL;
        if (!local.Address.IsAny && local.Address != _address)
            return -(int)Errno.EADDRNOTAVAIL;
        ushort port = local.Port;
        if (port == 0)
        {
            int picked = PickEphemeralPort();
            if (picked < 0)
                return picked;
            port = (ushort)picked;
        }
        else if (_udp.PortInUse(port))
            return -(int)Errno.EADDRINUSE;
        socket.Bound = true;
        socket.LocalAddress = local.Address;
        socket.LocalPort = port;
        _udp.BindPort(s, port);
        return 0;
    }

    /// <summary>Linux starts the search at a random offset in the range (RFC 6056 §3.3.1, algorithm 1).</summary>
    private int PickEphemeralPort()
    {
        int first = Options.EphemeralPortFirst;
        int count = Options.EphemeralPortLast - first + 1;
        int offset = (int)(_random.NextUInt64() % (ulong)count);
        for (int n = 0; n < count; n++)
        {
            ushort port = (ushort)(first + (offset + n) % count);
            if (!_udp.PortInUse(port))
                return port;
        }
        return -(int)Errno.EAGAIN; // what Linux's udp_v4_get_port gives when the range is used up
    }

    /// <summary>connect(): sets the default destination and filters what is received to that peer; binds if needed.</summary>
    public int UdpConnect(int s, Ipv4Endpoint remote)
    {
        if (!_udp.IsValid(s))
            return -(int)Errno.EBADF;
        if (remote.Port == 0 && !remote.Address.IsAny)
            return -(int)Errno.EINVAL;
        int rc = Route(remote.Address, out _, out _);
        if (rc != 0)
            return rc;
        ref var socket = ref _udp[s];
        if (!socket.Bound && (rc = UdpBind(s, new Ipv4Endpoint(Ipv4Address.Any, 0))) != 0)
            return rc;
        socket.Connected = true;
        socket.RemoteAddress = remote.Address;
        socket.RemotePort = remote.Port;
        socket.Error = 0;
        return 0;
    }

    /// <summary>connect() with AF_UNSPEC: forget the peer.</summary>
    public int UdpDisconnect(int s)
    {
        if (!_udp.IsValid(s))
            return -(int)Errno.EBADF;
        ref var socket = ref _udp[s];
        socket.Connected = false;
        socket.RemoteAddress = Ipv4Address.Any;
        socket.RemotePort = 0;
        return 0;
    }

    /// <summary>setsockopt(SO_BROADCAST).</summary>
    public int UdpSetBroadcast(int s, bool enabled)
    {
        if (!_udp.IsValid(s))
            return -(int)Errno.EBADF;
        _udp[s].Broadcast = enabled;
        return 0;
    }

    /// <summary>setsockopt(SO_RCVBUF): Linux doubles the value it is given to allow for bookkeeping.</summary>
    public int UdpSetReceiveBuffer(int s, int bytes)
    {
        if (!_udp.IsValid(s))
            return -(int)Errno.EBADF;
        _udp[s].ReceiveBufferBytes = Math.Max(2304, (int)Math.Min(int.MaxValue, bytes * 2L)); // SOCK_MIN_RCVBUF
        return 0;
    }

    /// <summary>getsockopt(SO_ERROR): the pending error, cleared.</summary>
    public int UdpTakeError(int s)
    {
        if (!_udp.IsValid(s))
            return -(int)Errno.EBADF;
        return TakeError(ref _udp[s]);
    }

    /// <summary>Reports a pending asynchronous error once, as sock_error() does.</summary>
    private static int TakeError(ref UdpSocket socket)
    {
        int e = socket.Error;
        socket.Error = 0;
        return e;
    }

    public Ipv4Endpoint UdpLocalEndpoint(int s) =>
        _udp.IsValid(s) ? new Ipv4Endpoint(_udp[s].LocalAddress, _udp[s].LocalPort) : default;

    /// <summary>Whether a receive would not block: a datagram is queued or an error is pending.</summary>
    public bool UdpReadable(int s) => _udp.IsValid(s) && (_udp[s].QueueCount > 0 || _udp[s].Error != 0);

    /// <summary>send() on a connected socket.</summary>
    public int UdpSend(int s, ReadOnlySpan<byte> payload)
    {
        if (!_udp.IsValid(s))
            return -(int)Errno.EBADF;
        if (!_udp[s].Connected)
            return -(int)Errno.EDESTADDRREQ;
        return UdpSendTo(s, payload, new Ipv4Endpoint(_udp[s].RemoteAddress, _udp[s].RemotePort));
    }

    /// <summary>sendto(): builds the datagram straight into a VNIC buffer and sends it at once. Returns the payload length.</summary>
    public int UdpSendTo(int s, ReadOnlySpan<byte> payload, Ipv4Endpoint destination)
    {
        if (!_udp.IsValid(s))
            return -(int)Errno.EBADF;
        ref var socket = ref _udp[s];
        if (socket.Error != 0)
            return -TakeError(ref socket);
        if (destination.Port == 0)
            return -(int)Errno.EINVAL;
        if (payload.Length > UdpMaxPayload)
            return -(int)Errno.EMSGSIZE;
        var dst = destination.Address;
        if (dst.IsAny)
            dst = _address; // Linux sends to INADDR_ANY as to itself; with no loopback here that is unreachable
        if ((dst.IsLimitedBroadcast || dst == _subnet.DirectedBroadcast) && !socket.Broadcast)
            return -(int)Errno.EACCES;
        if (dst == _address)
            return -(int)Errno.ENETUNREACH; // sending to our own address needs loopback, which the stack lacks yet
        int rc = Route(dst, out _, out _);
        if (rc != 0)
            return rc;
        if (!socket.Bound && (rc = UdpBind(s, new Ipv4Endpoint(Ipv4Address.Any, 0))) != 0)
            return rc;
        int buffer = AllocateTx();
        if (buffer < 0)
        {
            Counters.UdpSndbufErrors++;
            return -(int)Errno.ENOBUFS;
        }
        var frame = _pool.Span(buffer);
        payload.CopyTo(frame[(IpPayloadOffset + UdpDatagram.HeaderLength)..]);
        var udp = new UdpDatagram(frame[IpPayloadOffset..]);
        udp.Write(_udp[s].LocalPort, destination.Port, payload.Length, _address, dst);
        // Linux sets DF on UDP under its default path-MTU discovery (IP_PMTUDISC_WANT).
        rc = Ipv4Output(buffer, dst, IpProtocol.Udp, UdpDatagram.HeaderLength + payload.Length, dontFragment: true);
        if (rc != 0)
            return rc;
        Counters.UdpOutDatagrams++;
        Flush();
        return payload.Length;
    }

    /// <summary>recvfrom() without blocking: copies the next datagram (truncated to <paramref name="buffer"/>, as
    /// without MSG_TRUNC) and returns the bytes copied; -EAGAIN when none is queued; a pending error first.</summary>
    public int UdpReceiveFrom(int s, Span<byte> buffer, out Ipv4Endpoint from) =>
        UdpReceiveFrom(s, buffer, out from, out _);

    /// <param name="datagramLength">The datagram's full length, which MSG_TRUNC would return.</param>
    public int UdpReceiveFrom(int s, Span<byte> buffer, out Ipv4Endpoint from, out int datagramLength)
    {
        from = default;
        datagramLength = 0;
        if (!_udp.IsValid(s))
            return -(int)Errno.EBADF;
        ref var socket = ref _udp[s];
        if (socket.Error != 0)
            return -TakeError(ref socket);
        if (socket.QueueCount == 0)
            return -(int)Errno.EAGAIN;
        ref var q = ref _udp.Peek(s);
        var payload = _pool.Span(q.Buffer).Slice(q.PayloadOffset, q.PayloadLength);
        int n = Math.Min(buffer.Length, payload.Length);
        payload[..n].CopyTo(buffer);
        from = new Ipv4Endpoint(q.SourceAddress, q.SourcePort);
        datagramLength = q.PayloadLength;
        _pool.Release(q.Buffer);
        _udp.Pop(s, _pool.BufferSize);
        return n;
    }

    /// <summary>close(): queued datagrams are freed and the port returns.</summary>
    public int UdpClose(int s)
    {
        if (!_udp.IsValid(s))
            return -(int)Errno.EBADF;
        while (_udp[s].QueueCount > 0)
        {
            _pool.Release(_udp.Peek(s).Buffer);
            _udp.Pop(s, _pool.BufferSize);
        }
        _udp.Free(s);
        return 0;
    }
}
