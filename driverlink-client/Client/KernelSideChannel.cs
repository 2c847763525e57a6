using System.Buffers.Binary;
using System.Runtime.InteropServices;
using Onload.Stack.Wire;
using Onload.Vnic;
using Onload.Vnic.Native;

namespace Onload.Driverlink;

/// <summary>
/// UDP datagrams that reach a port's backing kernel socket instead of the VNIC: what port filters cannot steer.
/// The XDP program passes every IPv4 fragment to the kernel (only the first carries the ports), and traffic a local
/// program sends to the host's own address never crosses the interface; the kernel delivers both, whole, to the
/// kernel socket bound to the port. This reads them there and hands them to the stack as received frames (one, or
/// IPv4 fragments the stack reassembles as any others), so a socket on the stack sees every datagram sent to it.
/// </summary>
/// <remarks>
/// A watcher thread waits on an epoll set of the UDP backing sockets (edge-triggered) and raises a flag that
/// <see cref="Drain"/> (called from the VNIC's Receive, on the stack's thread) reads with one volatile load: the
/// busy-polling path costs nothing more until a datagram comes this way. The thread also writes an eventfd that
/// is part of the VNIC's wait set, so a sleeping stack wakes for it.
/// </remarks>
internal sealed unsafe class KernelSideChannel : IDisposable
{
    private const int MaxDatagram = 65_535;
    private const int EthHeader = 14;
    private const int IpHeader = 20;
    private const int UdpHeader = 8;
    /// <summary>The source MAC of the frames made here: locally administered, never a real neighbour's.</summary>
    private static readonly MacAddress KernelMac = MacAddress.Parse("02:00:00:00:00:00");

    private readonly MacAddress _mac;
    private readonly int _epoll;
    private readonly int _wake;
    private readonly int _stop;
    private readonly Thread _watcher;
    private readonly Dictionary<int, (uint Address, ushort Port)> _sockets = [];
    private readonly byte[] _datagram = new byte[MaxDatagram];
    private int[] _fds = [];
    private volatile int _pending;
    private volatile bool _stopping;
    private ushort _ipId;

    /// <summary>Datagrams taken from the kernel sockets and handed to the stack.</summary>
    public long Delivered;
    /// <summary>Datagrams dropped because the VNIC's pool had too few buffers for their frames.</summary>
    public long DroppedNoBuffer;

    public KernelSideChannel(MacAddress mac)
    {
        _mac = mac;
        _epoll = Libc.EpollCreate1(EpollConstants.EPOLL_CLOEXEC);
        _wake = Libc.EventFd(0, UnixIpcConstants.EFD_NONBLOCK | UnixIpcConstants.EFD_CLOEXEC);
        _stop = Libc.EventFd(0, UnixIpcConstants.EFD_NONBLOCK | UnixIpcConstants.EFD_CLOEXEC);
        if (_epoll < 0 || _wake < 0 || _stop < 0 || Libc.EpollAdd(_epoll, _stop, EpollConstants.EPOLLIN) != 0)
            throw new IOException($"driverlink: kernel side channel: errno {Marshal.GetLastPInvokeError()}");
        _watcher = new Thread(Watch) { IsBackground = true, Name = "driverlink kernel sockets" };
        _watcher.Start();
    }

    /// <summary>Readable while datagrams wait: part of the VNIC's wait set.</summary>
    public int WaitHandle => _wake;

    public bool Pending => _pending != 0;

    /// <summary>Watches a UDP backing socket bound to <paramref name="address"/>:<paramref name="port"/>.</summary>
    public void Add(int fd, uint address, ushort port)
    {
        if (Libc.EpollAdd(_epoll, fd, EpollConstants.EPOLLIN | EpollConstants.EPOLLET) != 0)
            throw new IOException($"driverlink: epoll_ctl(ADD) of a backing socket: errno {Marshal.GetLastPInvokeError()}");
        _sockets[fd] = (address, port);
        _fds = [.. _sockets.Keys];
        _pending = 1; // something may have come before the socket was watched
    }

    public void Remove(int fd)
    {
        if (_sockets.Remove(fd))
        {
            _ = Libc.EpollCtl(_epoll, EpollConstants.EPOLL_CTL_DEL, fd, null);
            _fds = [.. _sockets.Keys];
        }
    }

    /// <summary>
    /// Moves waiting datagrams into <paramref name="batch"/> as frames in <paramref name="pool"/>'s buffers; returns
    /// how many frames. A datagram needing more frames than the batch has room for goes out over several calls,
    /// the flag staying up meanwhile.
    /// </summary>
    public int Drain(Span<PacketDescriptor> batch, BufferPool pool, int mtu)
    {
        _pending = 0;
        Libc.DrainEventFd(_wake);
        int n = 0;
        int perFragment = (mtu - IpHeader) & ~7;
        while (n < batch.Length)
        {
            if (_stagedLength < 0 && !_stagedError && !TakeNext())
                return n;
            n += _stagedError ? EmitError(batch[n..], pool) : EmitStaged(batch[n..], pool, perFragment);
        }
        _pending = 1; // the batch is full: there may be more
        return n;
    }

    // The datagram being handed on: its bytes in _datagram, and the next fragment to emit.
    private int _stagedLength = -1;
    private int _stagedOffset;
    private ushort _stagedId;
    private Ipv4Endpoint _stagedSource;
    private Ipv4Endpoint _stagedDestination;
    private int _cursor;

    /// <summary>Reads the next datagram from the sockets in turn into <see cref="_datagram"/>; false when all are empty.</summary>
    private bool TakeNext()
    {
        var fds = _fds;
        for (int tried = 0; tried < fds.Length; tried++)
        {
            int fd = fds[_cursor % fds.Length];
            SockAddrIn from;
            uint fromLength = (uint)sizeof(SockAddrIn);
            nint got;
            fixed (byte* p = _datagram)
                got = Libc.RecvFrom(fd, p, (nuint)_datagram.Length, LinuxConstants.MSG_DONTWAIT, &from, &fromLength);
            if (got < 0)
            {
                // An ICMP error about what the port sent (IP_RECVERR) is reported first, then waits in the error queue.
                if (Marshal.GetLastPInvokeError() != Errno.EAGAIN && TakeError(fd))
                    return true;
                _cursor++; // EAGAIN: this socket is empty (an edge comes with its next datagram)
                continue;
            }
            var (address, port) = _sockets[fd];
            _stagedLength = (int)got;
            _stagedOffset = 0;
            _stagedId = ++_ipId;
            _stagedSource = new Ipv4Endpoint(new Ipv4Address(from.Address), from.Port);
            _stagedDestination = new Ipv4Endpoint(new Ipv4Address(address), port);
            Delivered++;
            return true;
        }
        return false;
    }

    // The ICMP error being handed on (IP_RECVERR's sock_extended_err, SO_EE_ORIGIN_ICMP).
    private bool _stagedError;
    private byte _errorType, _errorCode;
    private uint _errorOffender;

    private const int IPPROTO_IP = 0;
    private const int IP_RECVERR = 11;
    private const int MSG_ERRQUEUE = 0x2000;
    private const byte SO_EE_ORIGIN_ICMP = 2;

    /// <summary>
    /// Reads one ICMP error from <paramref name="fd"/>'s error queue and stages it: the original datagram's
    /// destination (msg_name), the ICMP type and code and the router or host that sent it (the offender).
    /// </summary>
    private bool TakeError(int fd)
    {
        SockAddrIn original;
        byte* control = stackalloc byte[128];
        var msg = new MsgHdr { Name = &original, NameLength = (uint)sizeof(SockAddrIn), Control = control, ControlLength = 128 };
        if (Libc.RecvMsg(fd, &msg, MSG_ERRQUEUE | LinuxConstants.MSG_DONTWAIT) < 0)
            return false;
        for (byte* c = control; c + CmsgHdr.Size <= control + (int)msg.ControlLength;)
        {
            var h = (CmsgHdr*)c;
            if (h->Length < (nuint)CmsgHdr.Size)
                break;
            // struct sock_extended_err (16 bytes), then the offender's sockaddr_in.
            byte* ee = c + CmsgHdr.Size;
            if (h->Level == IPPROTO_IP && h->Type == IP_RECVERR && h->Length >= (nuint)(CmsgHdr.Size + 16 + sizeof(SockAddrIn)) &&
                ee[4] == SO_EE_ORIGIN_ICMP)
            {
                var (address, port) = _sockets[fd];
                _errorType = ee[5];
                _errorCode = ee[6];
                _errorOffender = ((SockAddrIn*)(ee + 16))->Address;
                _stagedSource = new Ipv4Endpoint(new Ipv4Address(address), port);
                _stagedDestination = new Ipv4Endpoint(new Ipv4Address(original.Address), original.Port);
                _stagedError = true;
                return true;
            }
            c += ((int)h->Length + 7) & ~7;
        }
        return false;
    }

    /// <summary>
    /// Emits the staged ICMP error as the frame that carried it (RFC 792): from the offender to the port's address,
    /// quoting the IP and UDP headers of the datagram the port sent, so the stack reports it to the socket as Linux's
    /// __udp4_lib_err does.
    /// </summary>
    private int EmitError(Span<PacketDescriptor> batch, BufferPool pool)
    {
        if (batch.IsEmpty)
            return 0;
        _stagedError = false;
        if (!pool.TryAllocate(out int buffer))
        {
            DroppedNoBuffer++;
            return 0;
        }
        const int IcmpHeader = 8, Quote = IpHeader + UdpHeader, Length = IcmpHeader + Quote;
        var frame = pool.Span(buffer);
        new EthernetFrame(frame).WriteHeader(_mac, KernelMac, EtherType.Ipv4);
        var icmp = frame.Slice(EthHeader + IpHeader, Length);
        icmp.Clear();
        icmp[0] = _errorType;
        icmp[1] = _errorCode;
        var quote = icmp[IcmpHeader..];
        new Ipv4Packet(quote).WriteHeader(_stagedSource.Address, _stagedDestination.Address, IpProtocol.Udp, UdpHeader, 0, 64, 0, 0, optionWords: 0);
        BinaryPrimitives.WriteUInt16BigEndian(quote[IpHeader..], _stagedSource.Port);
        BinaryPrimitives.WriteUInt16BigEndian(quote[(IpHeader + 2)..], _stagedDestination.Port);
        BinaryPrimitives.WriteUInt16BigEndian(quote[(IpHeader + 4)..], UdpHeader);
        BinaryPrimitives.WriteUInt16BigEndian(icmp[2..], Checksum.Compute(icmp));
        new Ipv4Packet(frame[EthHeader..]).WriteHeader(new Ipv4Address(_errorOffender), _stagedSource.Address, IpProtocol.Icmp, Length,
            ++_ipId, 64, 0, 0, optionWords: 0);
        batch[0] = new PacketDescriptor(buffer, EthHeader + IpHeader + Length, PacketFlags.FromHostKernel);
        return 1;
    }

    /// <summary>
    /// Emits the staged datagram's next frames: one frame if it fits the MTU, else IPv4 fragments of
    /// <paramref name="perFragment"/> bytes, which the stack reassembles as any others. UDP checksum 0 (none, valid
    /// for IPv4): the kernel has checked it already.
    /// </summary>
    private int EmitStaged(Span<PacketDescriptor> batch, BufferPool pool, int perFragment)
    {
        int ipPayload = UdpHeader + _stagedLength;
        var payload = _datagram.AsSpan(0, _stagedLength);
        int n = 0;
        while (n < batch.Length && _stagedOffset < ipPayload)
        {
            if (!pool.TryAllocate(out int buffer))
            {
                // The rest of this datagram is lost; fragments already handed on time out in reassembly.
                DroppedNoBuffer++;
                _stagedLength = -1;
                return n;
            }
            int offset = _stagedOffset;
            int length = Math.Min(perFragment, ipPayload - offset);
            bool last = offset + length == ipPayload;
            var frame = pool.Span(buffer);
            new EthernetFrame(frame).WriteHeader(_mac, KernelMac, EtherType.Ipv4);
            var ipBytes = frame[EthHeader..];
            var data = ipBytes[IpHeader..];
            int copy = length;
            int payloadStart = offset - UdpHeader;
            if (offset == 0)
            {
                // The UDP header travels in the first fragment; the payload's bytes follow it across the others.
                BinaryPrimitives.WriteUInt16BigEndian(data, _stagedSource.Port);
                BinaryPrimitives.WriteUInt16BigEndian(data[2..], _stagedDestination.Port);
                BinaryPrimitives.WriteUInt16BigEndian(data[4..], (ushort)ipPayload);
                BinaryPrimitives.WriteUInt16BigEndian(data[6..], 0);
                data = data[UdpHeader..];
                copy -= UdpHeader;
                payloadStart = 0;
            }
            payload.Slice(payloadStart, copy).CopyTo(data);
            ushort flagsAndOffset = (ushort)((offset / 8) | (last ? 0 : 0x2000));
            new Ipv4Packet(ipBytes).WriteHeader(_stagedSource.Address, _stagedDestination.Address, IpProtocol.Udp, length,
                _stagedId, 64, flagsAndOffset, 0, optionWords: 0);
            batch[n++] = new PacketDescriptor(buffer, EthHeader + IpHeader + length, PacketFlags.FromHostKernel);
            _stagedOffset += length;
        }
        if (_stagedOffset >= ipPayload)
            _stagedLength = -1;
        return n;
    }

    private void Watch()
    {
        var events = stackalloc EpollEvent[16];
        while (!_stopping)
        {
            int n = Libc.EpollWait(_epoll, events, 16, -1);
            if (n <= 0 || _stopping)
                continue;
            _pending = 1;
            Libc.SignalEventFd(_wake);
        }
    }

    public void Dispose()
    {
        _stopping = true;
        Libc.SignalEventFd(_stop);
        _watcher.Join();
        _ = Libc.Close(_epoll);
        _ = Libc.Close(_wake);
        _ = Libc.Close(_stop);
    }
}
