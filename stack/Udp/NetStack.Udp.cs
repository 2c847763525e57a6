using Onload.Stack.Udp;
using Onload.Stack.Wire;
using Onload.Vnic;

namespace Onload.Stack;

// UDP (RFC 768): demultiplexing to sockets, and the socket calls. Calls return a count or a negated errno, and
// follow Linux's udp.c where the RFC leaves a choice.
public sealed partial class NetStack
{
    /// <summary>The largest UDP payload one frame carries without fragmenting (fragmentation arrives with issue 3).</summary>
    public int UdpMaxPayload => _mtu - Ipv4Packet.MinHeaderLength - UdpDatagram.HeaderLength;

    private bool UdpInput(in PacketDescriptor d, Ipv4Packet ip, bool broadcast)
    {
        var datagram = ip.Payload;
        var src = ip.Source;
        var reason = UdpDatagram.Validate(datagram, src, ip.Destination, (d.Flags & PacketFlags.ChecksumTrusted) != 0);
        if (reason != DropReason.None)
            return UdpError(reason);
        var udp = new UdpDatagram(datagram);
        var queued = new UdpQueuedDatagram
        {
            Buffer = d.Buffer,
            Reassembly = -1,
            Charge = _pool.BufferSize,
            PayloadOffset = (ushort)(EthernetFrame.HeaderLength + ip.HeaderLength + UdpDatagram.HeaderLength),
            PayloadLength = (ushort)(udp.Length - UdpDatagram.HeaderLength),
            SourceAddress = src,
            SourcePort = udp.SourcePort,
        };
        return UdpDeliver(in queued, ip.Destination, udp.DestinationPort, broadcast, d.Buffer);
    }

    /// <summary>A reassembled datagram: checked across its fragments and queued without copying them.</summary>
    private bool UdpInputReassembled(int queue, bool broadcast)
    {
        ref var q = ref _reassembler[queue];
        Span<byte> header = stackalloc byte[UdpDatagram.HeaderLength];
        if (q.Length < UdpDatagram.HeaderLength || _reassembler.CopyOut(queue, 0, header) != header.Length)
            return UdpError(DropReason.UdpTruncated);
        var udp = new UdpDatagram(header);
        if (udp.Length != q.Length)
            return UdpError(DropReason.UdpBadLength);
        if (udp.Checksum != 0)
        {
            ulong sum = Checksum.PseudoHeader(q.Source, q.Destination, IpProtocol.Udp, q.Length);
            if (Checksum.Finish(_reassembler.ChecksumAdd(queue, sum)) != 0)
                return UdpError(DropReason.UdpBadChecksum);
        }
        var queued = new UdpQueuedDatagram
        {
            Buffer = -1,
            Reassembly = queue,
            Charge = q.Fragments * _pool.BufferSize,
            PayloadOffset = UdpDatagram.HeaderLength,
            PayloadLength = (ushort)(q.Length - UdpDatagram.HeaderLength),
            SourceAddress = q.Source,
            SourcePort = udp.SourcePort,
        };
        return UdpDeliver(in queued, q.Destination, udp.DestinationPort, broadcast, _reassembler.FirstBuffer(queue));
    }

    private bool UdpError(DropReason reason)
    {
        Counters.UdpInErrors++;
        if (reason == DropReason.UdpBadChecksum)
            Counters.UdpInCsumErrors++;
        return Dropped(reason);
    }

    /// <summary>
    /// Queues a checked datagram on the socket bound to its port that hears it, or for a broadcast or multicast
    /// datagram on every one. A closed port gets Port Unreachable (quoting <paramref name="offendingBuffer"/>'s
    /// frame) unless the datagram was a broadcast or multicast. Returns true when a socket took it (and with it the
    /// buffers).
    /// </summary>
    private bool UdpDeliver(in UdpQueuedDatagram queued, Ipv4Address destination, ushort port, bool broadcast, int offendingBuffer)
    {
        int s = broadcast ? UdpDeliverCopies(in queued, destination, port) : UdpSocketFor(in queued, destination, port);
        if (s < 0)
        {
            Counters.UdpNoPorts++;
            if (!broadcast)
                SendIcmpError(_pool.Span(offendingBuffer), IcmpType.DestinationUnreachable, IcmpUnreachableCode.Port);
            return Dropped(DropReason.UdpNoPort);
        }
        return UdpEnqueue(s, in queued);
    }

    private bool UdpEnqueue(int s, in UdpQueuedDatagram queued)
    {
        bool low = PacketBuffersLow;
        if (low || !_udp.TryEnqueue(s, in queued))
        {
            _udp[s].Drops++;
            Counters.UdpRcvbufErrors++;
            Counters.UdpInErrors++;
            return Dropped(low ? DropReason.PacketBuffersLow : DropReason.UdpReceiveBufferFull);
        }
        _udp[s].InDatagrams++;
        Counters.UdpInDatagrams++;
        return true;
    }

    /// <summary>Whether socket <paramref name="s"/> hears a datagram to <paramref name="destination"/> from
    /// <paramref name="source"/> (Linux's compute_score), and how well: -1 not at all, more for a socket bound to the
    /// address and more again for one connected to the source.</summary>
    private int UdpScore(int s, Ipv4Address destination, Ipv4Address source, ushort sourcePort)
    {
        ref var socket = ref _udp[s];
        int score = 0;
        // Linux's IP_MULTICAST_ALL (on by default) delivers any group the host joined to a socket bound to the port.
        if (!socket.LocalAddress.IsAny)
        {
            if (socket.LocalAddress != destination)
                return -1;
            score += 4;
        }
        // A connected socket hears only its peer (RFC 768 leaves it open; Linux's lookup scores it so).
        if (socket.Connected)
        {
            if (socket.RemoteAddress != source || socket.RemotePort != sourcePort)
                return -1;
            score += 4;
        }
        return score;
    }

    /// <summary>
    /// The socket a unicast datagram goes to, or -1: of those on the port that hear it, the best placed (the one
    /// bound most recently among equals, as Linux for sockets sharing a port with SO_REUSEADDR); when that one is of
    /// an SO_REUSEPORT group (unconnected, on one address), a member picked by a keyed hash of the four-tuple, as
    /// Linux's reuseport_select_sock, so each flow keeps to one socket.
    /// </summary>
    private int UdpSocketFor(in UdpQueuedDatagram queued, Ipv4Address destination, ushort port)
    {
        int best = -1, bestScore = -1;
        // Counted in the same walk: the group's members score alike, so none comes before the first best.
        uint members = 0;
        for (int s = _udp.FirstOnPort(port); s >= 0; s = _udp.NextOnPort(s))
        {
            int score = UdpScore(s, destination, queued.SourceAddress, queued.SourcePort);
            if (score > bestScore)
                (best, bestScore, members) = (s, score, 1);
            else if (best >= 0 && score == bestScore && SameReusePortGroup(s, best))
                members++;
        }
        if (members <= 1)
            return best;
        uint pick = ReuseportPick(destination, port, queued.SourceAddress, queued.SourcePort, members);
        for (int s = best; ; s = _udp.NextOnPort(s))
            if (SameReusePortGroup(s, best) && pick-- == 0)
                return s;
    }

    /// <summary>Whether sockets <paramref name="s"/> and <paramref name="member"/> (on one port) form an SO_REUSEPORT
    /// group: both set it, neither is connected, and both are bound to one address.</summary>
    private bool SameReusePortGroup(int s, int member) =>
        _udp[s].ReusePort && _udp[member].ReusePort && !_udp[s].Connected && !_udp[member].Connected &&
        _udp[s].LocalAddress == _udp[member].LocalAddress;

    /// <summary>
    /// A broadcast or multicast datagram: a copy for every socket on the port that hears it but the last, which is
    /// returned (-1 when none hears it) to take the datagram itself, as Linux's __udp4_lib_mcast_deliver clones
    /// the skb. A reassembled datagram (its fragments in several buffers) goes to that last socket only.
    /// </summary>
    private int UdpDeliverCopies(in UdpQueuedDatagram queued, Ipv4Address destination, ushort port)
    {
        int last = -1;
        for (int s = _udp.FirstOnPort(port); s >= 0; s = _udp.NextOnPort(s))
        {
            if (UdpScore(s, destination, queued.SourceAddress, queued.SourcePort) < 0)
                continue;
            if (last >= 0 && queued.Buffer >= 0)
                UdpEnqueueCopy(last, in queued);
            last = s;
        }
        return last;
    }

    private void UdpEnqueueCopy(int s, in UdpQueuedDatagram queued)
    {
        if (!_pool.TryAllocate(out int copy))
        {
            // No buffer for the copy: this socket misses it, as a failed skb_clone makes Linux's miss it.
            _udp[s].Drops++;
            Counters.UdpInErrors++;
            return;
        }
        int frame = queued.PayloadOffset + queued.PayloadLength;
        _pool.Span(queued.Buffer)[..frame].CopyTo(_pool.Span(copy));
        var copied = queued with { Buffer = copy };
        if (!UdpEnqueue(s, in copied))
            _pool.Release(copy);
    }

    /// <summary>socket(AF_INET, SOCK_DGRAM, 0): a new UDP socket's handle, or -EMFILE when the table is full.</summary>
    public int UdpOpen()
    {
        int s = _udp.Allocate(Options.UdpReceiveBufferBytes);
        if (s < 0)
            return -(int)Errno.EMFILE;
        _udp[s].MulticastTtl = 1;
        _udp[s].MulticastLoop = true;
        return s;
    }

    /// <summary>bind(): port 0 picks an ephemeral port; the address must be ours or INADDR_ANY.</summary>
    public int UdpBind(int s, Ipv4Endpoint local)
    {
        if (!_udp.IsValid(s))
            return -(int)Errno.EBADF;
        ref var socket = ref _udp[s];
        if (socket.Bound)
            return -(int)Errno.EINVAL;
        if (!local.Address.IsAny && local.Address != _address && !local.Address.IsMulticast)
            return -(int)Errno.EADDRNOTAVAIL;
        ushort port = local.Port;
        // The binder's address is the one asked for: the socket takes it only once the bind succeeds.
        if (port != 0 && BindConflict(_udp, s, port, _udp.Binder(s) with { Address = local.Address }))
            return -(int)Errno.EADDRINUSE;
        if (_control != null)
        {
            int rc = ReserveControlPort(_udp, IpProtocol.Udp, ref port, Errno.EAGAIN);
            if (rc != 0)
                return rc;
            socket.PortReserved = true;
        }
        else if (port == 0)
        {
            int picked = PickEphemeralPort(_udp, Errno.EAGAIN); // EAGAIN: what udp_v4_get_port gives
            if (picked < 0)
                return picked;
            port = (ushort)picked;
        }
        socket.LocalAddress = local.Address;
        _udp.BindPort(s, port);
        // Groups joined before the bind: the kernel joins them now that the port's kernel socket exists.
        if (_control != null && socket.Memberships > 0)
            for (int g = 0; g < _groups.Capacity; g++)
                if (_groups[g].InUse && _groups.IsMember(s, _groups[g].Group) && !GroupJoinedOnPort(s, _groups[g].Group))
                    _ = _control.JoinGroup(port, _groups[g].Group);
        return 0;
    }

    /// <summary>SO_REUSEADDR: decides later binds on the port, as on Linux.</summary>
    public int UdpSetReuseAddress(int s, bool on)
    {
        if (!_udp.IsValid(s))
            return -(int)Errno.EBADF;
        _udp[s].ReuseAddr = on;
        return 0;
    }

    /// <summary>SO_REUSEPORT: decides later binds on the port, and which sockets share its unicast datagrams.</summary>
    public int UdpSetReusePort(int s, bool on)
    {
        if (!_udp.IsValid(s))
            return -(int)Errno.EBADF;
        _udp[s].ReusePort = on;
        return 0;
    }

    /// <summary>connect(): sets the default destination and filters what is received to that peer; binds if needed.</summary>
    public int UdpConnect(int s, Ipv4Endpoint remote)
    {
        if (!_udp.IsValid(s))
            return -(int)Errno.EBADF;
        if (remote.Port == 0 && !remote.Address.IsAny)
            return -(int)Errno.EINVAL;
        int rc = KernelCarries(remote.Address) ? 0 : Route(remote.Address, out _, out _);
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
        return TakeError(ref _udp[s].Error);
    }

    public Ipv4Endpoint UdpLocalEndpoint(int s) =>
        _udp.IsValid(s) ? new Ipv4Endpoint(_udp[s].LocalAddress, _udp[s].LocalPort) : default;

    /// <summary>ioctl FIONREAD on a UDP socket: the next datagram's payload length (0 when none), as Linux's.</summary>
    public int UdpNextDatagramLength(int s) =>
        _udp.IsValid(s) && _udp[s].QueueCount > 0 ? _udp.Peek(s).PayloadLength : 0;

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
            return -TakeError(ref socket.Error);
        if (destination.Port == 0)
            return -(int)Errno.EINVAL;
        if (payload.Length > MaxIpPayload - UdpDatagram.HeaderLength)
            return -(int)Errno.EMSGSIZE;
        int rc0;
        var dst = destination.Address;
        if (dst.IsAny)
            dst = _address; // Linux sends to INADDR_ANY as to itself; with no loopback here that is unreachable
        if ((dst.IsLimitedBroadcast || dst == _subnet.DirectedBroadcast) && !socket.Broadcast)
            return -(int)Errno.EACCES;
        if (dst == _address || dst.IsLoopback)
        {
            // In driverlink mode our address is the host's, where the kernel's programs listen, and 127/8 the host's
            // loopback: the kernel delivers both, through the port's own kernel socket (and the answers come back
            // through it). In direct mode this needs loopback, which the stack lacks.
            if (!KernelCarries(dst))
                return -(int)Errno.ENETUNREACH;
            if (!socket.Bound && (rc0 = UdpBind(s, new Ipv4Endpoint(Ipv4Address.Any, 0))) != 0)
                return rc0;
            return _control.SendToKernel(_udp[s].LocalPort, new Ipv4Endpoint(dst, destination.Port), payload);
        }
        int rc = Route(dst, out _, out _);
        if (rc != 0)
            return rc;
        if (!socket.Bound && (rc = UdpBind(s, new Ipv4Endpoint(Ipv4Address.Any, 0))) != 0)
            return rc;
        ushort sourcePort = _udp[s].LocalPort;
        Span<byte> header = stackalloc byte[UdpDatagram.HeaderLength];
        new UdpDatagram(header).Write(sourcePort, destination.Port, payload, _address, dst);
        bool multicast = dst.IsMulticast;
        byte ttl = multicast ? _udp[s].MulticastTtl : Options.DefaultTtl;
        // Linux sets DF on UDP under its default path-MTU discovery (IP_PMTUDISC_WANT) and fragments locally what
        // does not fit the MTU.
        bool fits = payload.Length <= UdpMaxPayload;
        rc = Ipv4OutputPieces(dst, IpProtocol.Udp, header, payload, dontFragment: fits, ttl);
        if (rc != 0)
        {
            if (rc == -(int)Errno.ENOBUFS)
                Counters.UdpSndbufErrors++;
            return rc;
        }
        Counters.UdpOutDatagrams++;
        if (multicast && _udp[s].MulticastLoop && _groups.IsJoined(dst))
            LoopMulticast(dst, destination.Port, sourcePort, payload);
        Flush();
        return payload.Length;
    }

    /// <summary>IP_MULTICAST_LOOP: our own joined sockets hear what we send to the group (copied once, as Linux
    /// clones the skb). Datagrams larger than one buffer are not looped back.</summary>
    private void LoopMulticast(Ipv4Address group, ushort port, ushort sourcePort, ReadOnlySpan<byte> payload)
    {
        if (payload.Length > _pool.BufferSize - IpPayloadOffset - UdpDatagram.HeaderLength || !_pool.TryAllocate(out int buffer))
            return;
        int offset = IpPayloadOffset + UdpDatagram.HeaderLength;
        payload.CopyTo(_pool.Span(buffer)[offset..]);
        var queued = new UdpQueuedDatagram
        {
            Buffer = buffer,
            Reassembly = -1,
            Charge = _pool.BufferSize,
            PayloadOffset = (ushort)offset,
            PayloadLength = (ushort)payload.Length,
            SourceAddress = _address,
            SourcePort = sourcePort,
        };
        if (!UdpDeliver(in queued, group, port, broadcast: true, buffer))
            _pool.Release(buffer);
    }

    /// <summary>Whether datagrams to <paramref name="destination"/> go through the port's kernel socket instead of the
    /// VNIC: the host's own address and loopback, in driverlink mode.</summary>
    [System.Diagnostics.CodeAnalysis.MemberNotNullWhen(true, nameof(_control))]
    private bool KernelCarries(Ipv4Address destination) =>
        _control is not null && (destination == _address || destination.IsLoopback);

    /// <summary>recvfrom() without blocking: copies the next datagram (truncated to <paramref name="buffer"/>, as
    /// without MSG_TRUNC) and returns the bytes copied; -EAGAIN when none is queued; a pending error first.</summary>
    public int UdpReceiveFrom(int s, Span<byte> buffer, out Ipv4Endpoint from) =>
        UdpReceiveFrom(s, buffer, out from, out _);

    /// <param name="datagramLength">The datagram's full length, which MSG_TRUNC would return.</param>
    /// <param name="peek">MSG_PEEK: the datagram stays queued.</param>
    public int UdpReceiveFrom(int s, Span<byte> buffer, out Ipv4Endpoint from, out int datagramLength, bool peek = false)
    {
        from = default;
        datagramLength = 0;
        if (!_udp.IsValid(s))
            return -(int)Errno.EBADF;
        ref var socket = ref _udp[s];
        if (socket.Error != 0)
            return -TakeError(ref socket.Error);
        if (socket.QueueCount == 0)
            return -(int)Errno.EAGAIN;
        ref var q = ref _udp.Peek(s);
        int n = Math.Min(buffer.Length, (int)q.PayloadLength);
        if (q.Reassembly >= 0)
            _reassembler.CopyOut(q.Reassembly, q.PayloadOffset, buffer[..n]);
        else
            _pool.Span(q.Buffer).Slice(q.PayloadOffset, n).CopyTo(buffer);
        from = new Ipv4Endpoint(q.SourceAddress, q.SourcePort);
        datagramLength = q.PayloadLength;
        if (peek)
            return n;
        ReleaseQueued(in q);
        _udp.Pop(s);
        return n;
    }

    private void ReleaseQueued(in UdpQueuedDatagram q)
    {
        if (q.Reassembly >= 0)
            _reassembler.Free(q.Reassembly);
        else
            _pool.Release(q.Buffer);
    }

    /// <summary>close(): queued datagrams are freed and the port returns.</summary>
    public int UdpClose(int s)
    {
        if (!_udp.IsValid(s))
            return -(int)Errno.EBADF;
        while (_udp[s].QueueCount > 0)
        {
            ReleaseQueued(in _udp.Peek(s));
            _udp.Pop(s);
        }
        while (_groups.TryFirstMembership(s, out var group))
            UdpLeaveGroup(s, group);
        ushort port = _udp[s].LocalPort;
        bool reserved = _udp[s].PortReserved;
        _udp.Free(s);
        if (reserved && !_udp.PortInUse(port))
            _control!.ReleasePort(IpProtocol.Udp, port); // the last socket on the port gives it back
        return 0;
    }

    /// <summary>IP_MULTICAST_IF-less IP_ADD_MEMBERSHIP: joins <paramref name="group"/> on the stack's one interface.</summary>
    public int UdpJoinGroup(int s, Ipv4Address group)
    {
        if (!_udp.IsValid(s))
            return -(int)Errno.EBADF;
        if (!group.IsMulticast)
            return -(int)Errno.EINVAL;
        if (_groups.IsMember(s, group))
            return -(int)Errno.EADDRINUSE;
        if (_udp[s].Memberships >= MaxMembershipsPerSocket)
            return -(int)Errno.ENOBUFS;
        bool kernelJoins = _control is not null && _udp[s].Bound && !GroupJoinedOnPort(s, group);
        if (kernelJoins)
        {
            int rc = _control!.JoinGroup(_udp[s].LocalPort, group);
            if (rc < 0)
                return rc;
        }
        int g = _groups.Join(s, group, out bool first);
        if (g < 0)
        {
            if (kernelJoins)
                _control!.LeaveGroup(_udp[s].LocalPort, group);
            return -(int)Errno.ENOBUFS;
        }
        _udp[s].Memberships++;
        if (first)
            StackJoinedGroup(g);
        Flush();
        return 0;
    }

    /// <summary>IP_DROP_MEMBERSHIP: EADDRNOTAVAIL when the socket is not a member, as on Linux.</summary>
    public int UdpLeaveGroup(int s, Ipv4Address group)
    {
        if (!_udp.IsValid(s))
            return -(int)Errno.EBADF;
        int g = _groups.Leave(s, group, out bool last);
        if (g < 0)
            return -(int)Errno.EADDRNOTAVAIL;
        if (_control is not null && _udp[s].Bound && !GroupJoinedOnPort(s, group))
            _control.LeaveGroup(_udp[s].LocalPort, group);
        _udp[s].Memberships--;
        if (last)
            StackLeftGroup(g, group);
        Flush();
        return 0;
    }

    /// <summary>Driverlink mode: whether another socket on <paramref name="s"/>'s port is a member of
    /// <paramref name="group"/>, so the port's one kernel socket is joined for them all already (and stays joined).</summary>
    private bool GroupJoinedOnPort(int s, Ipv4Address group)
    {
        for (int o = _udp.FirstOnPort(_udp[s].LocalPort); o >= 0; o = _udp.NextOnPort(o))
            if (o != s && _groups.IsMember(o, group))
                return true;
        return false;
    }

    /// <summary>IP_MULTICAST_TTL: 0..255, or -1 for the default (1).</summary>
    public int UdpSetMulticastTtl(int s, int ttl)
    {
        if (!_udp.IsValid(s))
            return -(int)Errno.EBADF;
        if (ttl is < -1 or > 255)
            return -(int)Errno.EINVAL;
        _udp[s].MulticastTtl = (byte)(ttl == -1 ? 1 : ttl);
        return 0;
    }

    /// <summary>IP_MULTICAST_LOOP.</summary>
    public int UdpSetMulticastLoop(int s, bool loop)
    {
        if (!_udp.IsValid(s))
            return -(int)Errno.EBADF;
        _udp[s].MulticastLoop = loop;
        return 0;
    }

    /// <summary>IP_MAX_MEMBERSHIPS (net.ipv4.igmp_max_memberships = 20).</summary>
    private const int MaxMembershipsPerSocket = 20;
}
