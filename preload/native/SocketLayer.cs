using Onload.Driverlink;
using Onload.Native.Dump;
using Onload.Stack;
using Onload.Stack.Memory;
using Onload.Stack.Tcp;
using Onload.Stack.Wire;
using Onload.Vnic;

namespace Onload.Native;

/// <summary>
/// The process-wide stack behind the preload shim: one <see cref="NetStack"/> on one <see cref="DriverlinkSession"/>
/// (the interface in <c>ONLOAD_INTERFACE</c>), made at the first accelerated socket and guarded by one lock.
/// </summary>
/// <remarks>
/// Every call here is non-blocking: it polls the stack once and then acts. The shim does the waiting (spin, then
/// sleep on its own eventfd registered with <see cref="BeginWait"/>, together with the kernel's fds), so one wait loop
/// serves blocking calls, poll, select and epoll alike; every stack poll wakes the sleepers whose sockets it made
/// ready (SocketLayer.Waiters.cs). A background thread runs the stack while no program thread does
/// (SocketLayer.Background.cs). One more thread answers onload-stackdump (<see cref="Dump.StackDumpServer"/>) and
/// takes the lock only to copy.
/// </remarks>
internal sealed partial class SocketLayer : IDisposable
{
    private static readonly Lock s_startLock = new();
    private static SocketLayer? s_instance;
    private static int s_startError;

    private readonly Lock _lock = new();
    private readonly string _interface;
    private readonly DriverlinkSession _session;
    private readonly NetStack _stack;

    private SocketLayer(string interfaceName, DriverlinkSession session, NetStack stack)
    {
        _interface = interfaceName;
        _session = session;
        _stack = stack;
        MakeLockWaitEvent();
    }

    /// <summary>
    /// The runtime's <see cref="Lock"/> makes its wait event (about 120 bytes of handles) the first time a thread
    /// has to sleep on it. Left to chance, that is whenever the background thread, a dump or another program
    /// thread first holds <see cref="_lock"/> a little too long as a thread arrives: an allocation in the middle of
    /// steady traffic (seen as 120 B between two dumps in one steady-state run in five). It is made here instead:
    /// a helper thread holds the lock for a few milliseconds, far beyond the entering thread's spinning, while this
    /// thread enters; its own allocation count says whether it slept (a thread descheduled for the whole hold would
    /// not have: then again, a few times at most).
    /// </summary>
    private void MakeLockWaitEvent()
    {
        const int HoldMs = 5;
        for (int attempt = 0; attempt < 4; attempt++)
        {
            using var holding = new ManualResetEventSlim();
            var holder = new Thread(() =>
            {
                lock (_lock)
                {
                    holding.Set();
                    Thread.Sleep(HoldMs);
                }
            }) { IsBackground = true, Name = "onload-lock-warmup" };
            holder.Start();
            holding.Wait();
            long before = GC.GetAllocatedBytesForCurrentThread();
            lock (_lock)
            {
            }
            bool slept = GC.GetAllocatedBytesForCurrentThread() != before;
            holder.Join();
            if (slept)
                return;
        }
    }

    /// <summary>Why the stack could not start, for the shim's one warning line.</summary>
    public static string StartFailure { get; private set; } = "";

    /// <summary>The layer, started on first use; null (with <see cref="StartFailure"/> and <paramref name="errno"/>)
    /// when it cannot start. A failure is remembered: the process asks the daemon once.</summary>
    public static SocketLayer? Get(out int errno)
    {
        errno = 0;
        if (Volatile.Read(ref s_instance) is { } ready)
            return ready;
        lock (s_startLock)
        {
            if (s_instance is not null)
                return s_instance;
            if (s_startError != 0)
            {
                errno = s_startError;
                return null;
            }
            try
            {
                s_instance = Start();
            }
            catch (Exception e)
            {
                s_startError = e is DriverlinkException { Errno: > 0 } d ? d.Errno : (int)Errno.ENETDOWN;
                StartFailure = e.Message;
                errno = s_startError;
                return null;
            }
            // After the stack is up, and outside the try: a stack that cannot be dumped still carries the program.
            StackDumpServer.Start(s_instance);
            s_instance.StartBackground();
            return s_instance;
        }
    }

    private static SocketLayer Start()
    {
        string? name = Environment.GetEnvironmentVariable("ONLOAD_INTERFACE");
        if (string.IsNullOrEmpty(name))
            throw new InvalidOperationException("ONLOAD_INTERFACE is not set (the interface to accelerate)");
        var mode = Environment.GetEnvironmentVariable("ONLOAD_VNIC_MODE") == "exclusive" ? VnicMode.Exclusive : VnicMode.Shared;
        var settings = StackSettings.FromEnvironment();
        var session = DriverlinkSession.Open(name, mode, ringSize: settings.RingSize, bufferCount: settings.PacketBuffers,
            tcpConnections: settings.TcpSockets);
        try
        {
            var options = session.StackOptions(settings.ApplyTo(new StackOptions { Address = default }));
            options.Validate();
            return new SocketLayer(name, session, new NetStack(session.Vnic, options));
        }
        catch
        {
            session.Dispose();
            throw;
        }
    }

    public Ipv4Address Address => _stack.Address;

    public int Open()
    {
        lock (_lock)
            return _stack.TcpOpen();
    }

    public int Bind(int c, Ipv4Endpoint local)
    {
        lock (_lock)
            return _stack.TcpBind(c, local);
    }

    public int Listen(int c, int backlog)
    {
        lock (_lock)
        {
            PollStack();
            return _stack.TcpListen(c, backlog);
        }
    }

    public int Accept(int c, out Ipv4Endpoint remote)
    {
        lock (_lock)
        {
            PollStack();
            return _stack.TcpAccept(c, out remote);
        }
    }

    public int Connect(int c, Ipv4Endpoint remote)
    {
        lock (_lock)
        {
            PollStack();
            return _stack.TcpConnect(c, remote);
        }
    }

    public int Send(int c, ReadOnlySpan<byte> data)
    {
        lock (_lock)
        {
            PollStack();
            return _stack.TcpSend(c, data);
        }
    }

    public int Receive(int c, Span<byte> buffer)
    {
        lock (_lock)
        {
            PollStack();
            return _stack.TcpReceive(c, buffer);
        }
    }

    /// <summary>recv(MSG_PEEK): as <see cref="Receive"/>, leaving the bytes in place.</summary>
    public int Peek(int c, Span<byte> buffer)
    {
        lock (_lock)
        {
            PollStack();
            return _stack.TcpPeek(c, buffer);
        }
    }

    /// <summary>ioctl FIONREAD (<paramref name="send"/> false: bytes readable; EINVAL on a listener, as Linux) and
    /// SIOCOUTQ (true: bytes in the send queue, unsent and unacknowledged).</summary>
    public int Queued(int c, bool send)
    {
        lock (_lock)
        {
            PollStack();
            var table = _stack.TcpConnections;
            if (!table.IsValid(c))
                return -(int)Errno.EBADF;
            ref var t = ref table[c];
            if (t.State == TcpState.Listen)
                return -(int)Errno.EINVAL;
            return send ? t.SndQueued : Math.Max(0, t.Readable);
        }
    }

    public int Shutdown(int c, bool read, bool write)
    {
        lock (_lock)
        {
            PollStack();
            int rc = _stack.TcpShutdown(c, read, write);
            WakeReadyWaiters(); // a thread asleep on the socket's other direction sees the end (Linux wakes it too)
            return rc;
        }
    }

    public int Close(int c)
    {
        lock (_lock)
        {
            int rc = _stack.TcpClose(c);
            PollStack();
            return rc;
        }
    }

    /// <summary>getsockname (peer false) or getpeername (peer true).</summary>
    public int Name(int c, bool peer, out Ipv4Endpoint endpoint)
    {
        endpoint = default;
        lock (_lock)
        {
            var table = _stack.TcpConnections;
            if (!table.IsValid(c))
                return -(int)Errno.EBADF;
            ref var t = ref table[c];
            if (!peer)
            {
                endpoint = _stack.TcpLocalEndpoint(c);
                return 0;
            }
            if (!_stack.TcpIsConnected(c) && t.State != TcpState.SynReceived)
                return -(int)Errno.ENOTCONN;
            endpoint = new Ipv4Endpoint(t.RemoteAddress, t.RemotePort);
            return 0;
        }
    }

    /// <summary>getsockopt(TCP_INFO): fills <paramref name="info"/> (<see cref="Onload.Native.TcpInfo.Size"/> bytes).</summary>
    public int TcpInfo(int c, Span<byte> info)
    {
        lock (_lock)
        {
            var table = _stack.TcpConnections;
            if (!table.IsValid(c))
                return -(int)Errno.EBADF;
            Onload.Native.TcpInfo.Fill(ref table[c], _stack.Mtu, info);
            return Onload.Native.TcpInfo.Size;
        }
    }

    /// <summary>getsockopt(SO_ERROR): the pending error, cleared (0 when none).</summary>
    public int TakeError(int c)
    {
        lock (_lock)
            return _stack.TcpTakeError(c);
    }

    /// <summary>In <see cref="PollSockets"/>, marks a handle as a UDP socket's (<c>ONLOAD_SOCK_UDP</c>): UDP sockets and TCP
    /// connections are numbered apart.</summary>
    public const int UdpHandleTag = 0x4000_0000;

    /// <summary>
    /// poll() over stack sockets: polls the stack once, then fills <paramref name="revents"/> for each handle
    /// (POLLIN, POLLOUT, POLLERR, POLLHUP as Linux's tcp_poll and udp_poll set them; a handle with
    /// <see cref="UdpHandleTag"/> is a UDP socket's). Returns how many have events.
    /// </summary>
    public int PollSockets(ReadOnlySpan<int> handles, ReadOnlySpan<short> events, Span<short> revents)
    {
        const short PollErr = 0x008, PollHup = 0x010, PollNval = 0x020;
        int ready = 0;
        lock (_lock)
        {
            PollStack();
            for (int i = 0; i < handles.Length; i++)
            {
                // poll(2) reports these whether asked or not.
                revents[i] = (short)(PollBits(handles[i]) & (events[i] | PollErr | PollHup | PollNval));
                if (revents[i] != 0)
                    ready++;
            }
        }
        return ready;
    }

    /// <summary>
    /// At exit: runs the stack until every closed connection has had its data and FIN acknowledged (FIN-WAIT-2 or
    /// later), or <paramref name="timeoutMs"/> passes. The kernel keeps sending a closed socket's data after its
    /// process is gone; this stack lives in the process, so it finishes before the process does. Returns how many
    /// connections were still sending.
    /// </summary>
    public int Drain(int timeoutMs)
    {
        long deadline = MonotonicClock.Instance.NowNanoseconds + timeoutMs * 1_000_000L;
        while (true)
        {
            int pending = 0, txPending, waitFd;
            lock (_lock)
            {
                PollStack();
                var table = _stack.TcpConnections;
                for (int c = 0; c < table.Capacity; c++)
                    if (table.IsValid(c) && table[c].State is TcpState.SynReceived or TcpState.Established or TcpState.CloseWait
                            or TcpState.FinWait1 or TcpState.Closing or TcpState.LastAck)
                        pending++;
                // Frames still in the VNIC's rings (the RST of a connection closed with SO_LINGER zero, the last
                // FIN's ACK) would go with the process: wait for the backend to take them too.
                txPending = _stack.Vnic.TxPending();
                waitFd = pending > 0 && _stack.Vnic.PrepareToSleep() ? _stack.Vnic.WaitHandle : -1;
            }
            long now = MonotonicClock.Instance.NowNanoseconds;
            if ((pending == 0 && txPending == 0) || now >= deadline)
                return pending;
            if (waitFd >= 0)
                WaitReadable(waitFd, (int)Math.Clamp((Math.Min(deadline, _stack.NextTimerNs) - now) / 1_000_000, 1, 10));
            else if (pending == 0)
                WaitReadable(-1, 1); // only frames in the rings: the backend takes them without a wake-up to us
        }
    }

    private static unsafe void WaitReadable(int fd, int timeoutMs)
    {
        var p = new NativeWait.PollFd { Fd = fd, Events = NativeWait.PollIn };
        _ = NativeWait.Poll(&p, 1, timeoutMs);
    }

    public void Dispose()
    {
        lock (_lock)
        {
            _disposed = true;
            _stack.Dispose();
            _session.Dispose();
        }
        if (_backgroundKick >= 0)
            NativeWait.Signal(_backgroundKick);
    }
}
