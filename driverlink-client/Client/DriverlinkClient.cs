using System.Collections.Concurrent;
using System.Diagnostics;
using System.Reflection;
using System.Runtime.InteropServices;
using Onload.Vnic.Native;

namespace Onload.Driverlink;

/// <summary>How a client finds (and if need be starts) its namespace's daemon.</summary>
public sealed record DriverlinkClientOptions
{
    /// <summary>The daemon's abstract socket name (<c>ONLOAD_DRIVERD_SOCKET</c>, else <see cref="DriverlinkSocket.DefaultName"/>).</summary>
    public string SocketName { get; init; } = Environment.GetEnvironmentVariable("ONLOAD_DRIVERD_SOCKET") is { Length: > 0 } n ? n : DriverlinkSocket.DefaultName;

    /// <summary>Start <c>onload-driverd</c> when none answers (<c>ONLOAD_DRIVERD_AUTOSTART</c>, default on).</summary>
    public bool StartDaemon { get; init; } = Environment.GetEnvironmentVariable("ONLOAD_DRIVERD_AUTOSTART") != "0";

    /// <summary>The daemon program: <c>ONLOAD_DRIVERD</c>, else <c>onload-driverd</c> beside this program, else on PATH.</summary>
    public string? DaemonPath { get; init; } = Environment.GetEnvironmentVariable("ONLOAD_DRIVERD");

    /// <summary>How long to wait for a daemon this client started to answer.</summary>
    public TimeSpan StartTimeout { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>How long a request waits for its reply.</summary>
    public TimeSpan ReplyTimeout { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>
    /// How long a session whose daemon died keeps trying to reattach to a new one (started on demand as at first,
    /// or by a service manager) before its connections fail (<c>ONLOAD_DRIVERD_REATTACH</c>, seconds, default 10;
    /// 0: never reattach).
    /// </summary>
    public TimeSpan ReattachTimeout { get; init; } = ReattachFromEnvironment();

    private static TimeSpan ReattachFromEnvironment() =>
        double.TryParse(Environment.GetEnvironmentVariable("ONLOAD_DRIVERD_REATTACH"), System.Globalization.NumberStyles.Float,
            System.Globalization.CultureInfo.InvariantCulture, out double s) && s >= 0 && s <= 3600
            ? TimeSpan.FromSeconds(s) : TimeSpan.FromSeconds(10);
}

/// <summary>A driverlink request the daemon refused or could not answer.</summary>
public sealed class DriverlinkException(string message, int errno = 0) : IOException(message, errno)
{
    public int Errno { get; } = errno;

    /// <summary>The daemon's status when it refused an attach; null for any other failure.</summary>
    public AttachStatus? Refusal { get; init; }
}

/// <summary>
/// The client side of a driverlink connection: says Hello, makes requests (one at a time, each waiting for its
/// reply) and collects the daemon's events. A reader thread takes every message off the socket: replies go to the
/// waiting request, events into a queue that <see cref="TryTakeEvent"/> empties, with <see cref="EventFd"/> written
/// so that a sleeping stack wakes for them.
/// </summary>
public sealed class DriverlinkClient : IDisposable
{
    /// <summary>This library's software version, as Hello carries it.</summary>
    public static readonly string SoftwareVersion =
        "onload " + (typeof(DriverlinkClient).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion ?? "0");

    private readonly DriverlinkSocket _socket;
    private readonly DriverlinkClientOptions _options;
    private readonly Thread _reader;
    private readonly Lock _requestLock = new();
    private readonly ConcurrentQueue<Message> _events = new();
    private readonly int _eventFd;
    private uint _nextRequestId = 1;
    // The one request in flight: its id, and the reply with the descriptors that came with it (under _replyLock).
    private uint _awaiting;
    private Message? _reply;
    private int[] _replyFds = [];
    private readonly ManualResetEventSlim _replied = new();
    private readonly Lock _replyLock = new();
    // Requests that timed out whose grant must be undone if it comes after all (under _replyLock).
    private readonly Dictionary<uint, Message> _abandoned = [];
    private volatile bool _disposed;
    private volatile bool _closed;
    private volatile string? _closeReason;
    private int _eventsPending;

    private DriverlinkClient(DriverlinkSocket socket, DriverlinkClientOptions options, Hello daemon)
    {
        _socket = socket;
        _options = options;
        DaemonHello = daemon;
        _eventFd = Libc.EventFd(0, UnixIpcConstants.EFD_NONBLOCK | UnixIpcConstants.EFD_CLOEXEC);
        if (_eventFd < 0)
            throw new DriverlinkException("driverlink: eventfd failed", Marshal.GetLastPInvokeError());
        _reader = new Thread(ReadLoop) { IsBackground = true, Name = "driverlink reader" };
        _reader.Start();
    }

    /// <summary>The daemon's Hello: its software and protocol versions.</summary>
    public Hello DaemonHello { get; }

    /// <summary>Readable while events wait (an eventfd; <see cref="TryTakeEvent"/> clears it when the queue empties).</summary>
    public int EventFd => _eventFd;

    /// <summary>True while events wait: a volatile read, cheap enough for every poll of a stack.</summary>
    public bool EventsPending => Volatile.Read(ref _eventsPending) != 0;

    /// <summary>Null while connected; why the connection ended otherwise.</summary>
    public string? CloseReason => _closeReason;

    /// <summary>The connection ended from the daemon's side (it stopped or died), not by <see cref="Dispose"/>.</summary>
    public bool DaemonGone => _daemonGone;

    private volatile bool _daemonGone;

    /// <summary>The daemon's process (SO_PEERCRED at connect).</summary>
    public PeerCredentials Daemon { get; private init; }

    /// <summary>Makes <see cref="EventsPending"/> true and <see cref="EventFd"/> readable, with no event queued: wakes a
    /// stack asleep on its VNIC so that it looks at what another thread prepared for it (a reattachment).</summary>
    public void Wake()
    {
        Volatile.Write(ref _eventsPending, 1);
        Libc.SignalEventFd(_eventFd);
    }

    /// <summary>
    /// Connects to the namespace's daemon, starting one if none answers and <see cref="DriverlinkClientOptions.StartDaemon"/>,
    /// and exchanges Hellos. Throws <see cref="DriverlinkException"/> naming what failed (no daemon, incompatible
    /// versions, ...).
    /// </summary>
    public static DriverlinkClient Connect(DriverlinkClientOptions? options = null)
    {
        options ??= new DriverlinkClientOptions();
        var socket = ConnectOrStart(options);
        try
        {
            var hello = new Hello(PeerRole.Client, SoftwareVersion) { RequestId = 1 };
            int e = socket.Send(hello);
            if (e != 0)
                throw new DriverlinkException($"driverlink: sending Hello to @{options.SocketName}: errno {e}", e);
            Span<int> fds = stackalloc int[DriverlinkSocket.MaxDescriptors];
            var r = socket.Receive(fds, out var message);
            CloseAll(fds[..r.DescriptorCount]);
            if (r.Status != ReceiveStatus.Ok || message is not Hello daemon)
                throw new DriverlinkException($"driverlink: the daemon at @{options.SocketName} did not answer Hello ({r.Status}{(r.DecodeError != DecodeError.None ? ", " + r.DecodeError : "")})");
            if (Hello.Incompatibility(hello, daemon) is { } refusal)
                throw new DriverlinkException(refusal);
            return new DriverlinkClient(socket, options, daemon) { Daemon = socket.PeerCredentials() };
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    private static DriverlinkSocket ConnectOrStart(DriverlinkClientOptions options)
    {
        try
        {
            return DriverlinkSocket.Connect(options.SocketName);
        }
        catch (DriverlinkSocketException e) when (e.Errno == ECONNREFUSED && options.StartDaemon)
        {
        }
        StartDaemon(options);
        var deadline = Stopwatch.StartNew();
        int delayMs = 2;
        while (true)
        {
            try
            {
                return DriverlinkSocket.Connect(options.SocketName);
            }
            catch (DriverlinkSocketException e) when (e.Errno == ECONNREFUSED && deadline.Elapsed < options.StartTimeout)
            {
                Thread.Sleep(delayMs);
                delayMs = Math.Min(delayMs * 2, 100);
            }
            catch (DriverlinkSocketException e) when (e.Errno == ECONNREFUSED)
            {
                throw new DriverlinkException($"driverlink: started {DaemonPath(options)} but nothing answered at @{options.SocketName} " +
                    $"within {options.StartTimeout.TotalSeconds:0.#} s (see ONLOAD_DRIVERD_LOG)", e.Errno);
            }
        }
    }

    private static string DaemonPath(DriverlinkClientOptions options)
    {
        if (options.DaemonPath is { Length: > 0 } configured)
            return configured;
        string beside = Path.Combine(AppContext.BaseDirectory, "onload-driverd");
        return File.Exists(beside) ? beside : "onload-driverd";
    }

    /// <summary>
    /// Starts the daemon detached: through sh, with its output to <c>ONLOAD_DRIVERD_LOG</c> (else /dev/null), so
    /// that it holds none of our pipes; it calls setsid itself. A second daemon racing this one finds the name taken
    /// and exits; either way the connect loop finds whichever listens.
    /// </summary>
    private static void StartDaemon(DriverlinkClientOptions options) =>
        DaemonLauncher.RunShell("exec \"$0\" \"$@\" </dev/null >>\"${ONLOAD_DRIVERD_LOG:-/dev/null}\" 2>&1 &",
            DaemonPath(options), "--socket-name", options.SocketName);

    /// <summary>
    /// Asks for a VNIC. On success the reply and the descriptors that came with it (the AF_XDP socket in exclusive
    /// mode), which the caller now owns. A refusal throws <see cref="DriverlinkException"/> with the daemon's words.
    /// <paramref name="connectionMirror"/>, when given, is the memfd of the stack's connection mirror
    /// (<see cref="Onload.Stack.Tcp.ConnectionMirror"/>), which the daemon maps to close the stack's connections
    /// toward their peers if this process dies.
    /// </summary>
    public AttachReply Attach(AttachRequest request, out int[] descriptors, int connectionMirror = -1) =>
        Attach(request, out descriptors, connectionMirror >= 0 ? [connectionMirror] : []);

    /// <summary>As <see cref="Attach(AttachRequest, out int[], int)"/>, passing <paramref name="pass"/> (a reattach
    /// in exclusive mode: the AF_XDP socket it kept, then the connection mirror).</summary>
    public AttachReply Attach(AttachRequest request, out int[] descriptors, ReadOnlySpan<int> pass)
    {
        var reply = Request(request, out descriptors, pass);
        if (reply is not AttachReply attach)
        {
            CloseAll(descriptors);
            throw new DriverlinkException($"driverlink: the daemon answered an attach with {reply.Kind}");
        }
        if (attach.Status != AttachStatus.Ok)
        {
            CloseAll(descriptors);
            throw new DriverlinkException($"driverlink: attach to {request.InterfaceName} refused ({attach.Status}): {attach.ErrorText}") { Refusal = attach.Status };
        }
        return attach;
    }

    /// <summary>Inserts a filter, proving the port with <paramref name="backingSocket"/> (passed, not given away).</summary>
    public FilterStatus InsertFilter(uint vnicId, FilterSpec filter, int backingSocket) =>
        FilterRequest(new FilterInsert(vnicId, filter), backingSocket);

    public FilterStatus RemoveFilter(uint vnicId, FilterSpec filter) => FilterRequest(new FilterRemove(vnicId, filter), -1);

    private FilterStatus FilterRequest(Message request, int fd)
    {
        var reply = fd >= 0 ? Request(request, out var extra, [fd]) : Request(request, out extra);
        CloseAll(extra);
        return reply is FilterReply f ? f.Status : throw new DriverlinkException($"driverlink: the daemon answered a filter request with {reply.Kind}");
    }

    /// <summary>
    /// Has the daemon make <paramref name="socketFd"/> (an unconnected kernel TCP socket, passed, not given away) the
    /// connection <paramref name="state"/> describes, with TCP_REPAIR (see <see cref="TcpRepair.Restore"/>): the
    /// bytes travel in a sealed memfd. Returns 0 when the kernel holds the connection, else a negated errno with
    /// the daemon's reason (or this side's: the memfd, the connection to the daemon, a state the protocol cannot
    /// carry) in <paramref name="reason"/>. After ETIMEDOUT the outcome is unknown: the daemon may yet have done it.
    /// </summary>
    public int HandOverTcp(uint vnicId, in TcpRepairState state, int socketFd, ReadOnlySpan<byte> sent,
                           ReadOnlySpan<byte> unsent, ReadOnlySpan<byte> received, out string? reason)
    {
        int memfd = QueuedBytes(sent, unsent, received, out reason);
        if (memfd < 0)
            return memfd;
        try
        {
            var request = new TcpHandOver(vnicId, state, (uint)sent.Length, (uint)unsent.Length, (uint)received.Length);
            var reply = Request(request, out var extra, [socketFd, memfd]);
            CloseAll(extra);
            if (reply is not TcpHandOverReply answer)
            {
                reason = $"driverlink: the daemon answered a TCP hand-over with {reply.Kind}";
                return -EPROTO;
            }
            reason = answer.Errno == 0 ? null : answer.Reason;
            return -answer.Errno;
        }
        catch (DriverlinkException e)
        {
            reason = e.Message;
            return -(e.Errno != 0 ? e.Errno : EPROTO);
        }
        catch (ArgumentException e)
        {
            reason = $"driverlink: a TCP hand-over the protocol cannot carry: {e.Message}";
            return -Errno.EINVAL;
        }
        finally
        {
            _ = Libc.Close(memfd);
        }
    }

    /// <summary>A memfd holding <paramref name="sent"/>, <paramref name="unsent"/> and <paramref name="received"/> one
    /// after the other, sealed at that size: the daemon maps it, and a file that shrank under a mapping would fault
    /// the daemon. Returns the descriptor, or a negated errno with the reason.</summary>
    private static unsafe int QueuedBytes(ReadOnlySpan<byte> sent, ReadOnlySpan<byte> unsent, ReadOnlySpan<byte> received, out string? reason)
    {
        reason = null;
        int fd;
        fixed (byte* name = "onload-tcp-handover\0"u8)
            fd = Libc.MemfdCreate(name, UnixIpcConstants.MFD_CLOEXEC | UnixIpcConstants.MFD_ALLOW_SEALING);
        if (fd < 0)
        {
            int e = Marshal.GetLastPInvokeError();
            reason = $"driverlink: memfd for a TCP hand-over: errno {e}";
            return -e;
        }
        if (!WriteAll(fd, sent) || !WriteAll(fd, unsent) || !WriteAll(fd, received) ||
            Libc.Fcntl(fd, UnixIpcConstants.F_ADD_SEALS,
                UnixIpcConstants.F_SEAL_SHRINK | UnixIpcConstants.F_SEAL_GROW | UnixIpcConstants.F_SEAL_SEAL) != 0)
        {
            int e = Marshal.GetLastPInvokeError();
            _ = Libc.Close(fd);
            reason = $"driverlink: filling the memfd of a TCP hand-over: errno {e}";
            return -e;
        }
        return fd;
    }

    private static unsafe bool WriteAll(int fd, ReadOnlySpan<byte> bytes)
    {
        fixed (byte* p = bytes)
        {
            for (int done = 0; done < bytes.Length;)
            {
                nint n = Libc.Write(fd, p + done, (nuint)(bytes.Length - done));
                if (n > 0)
                    done += (int)n;
                else if (n == 0 || Marshal.GetLastPInvokeError() != Errno.EINTR)
                    return false;
            }
        }
        return true;
    }

    /// <summary>Asks the daemon to have the kernel resolve an address; the answer comes as a <see cref="NeighbourEvent"/>.</summary>
    public void ResolveNeighbour(uint vnicId, uint address)
    {
        Span<byte> message = stackalloc byte[MessageHeader.MaxMessageLength];
        Post(message[..Driverlink.ResolveNeighbour.Encode(message, vnicId, address)]);
    }

    /// <summary>Tells the daemon this client has stopped touching a suspended VNIC's rings.</summary>
    public void AcknowledgeSuspend(uint vnicId) => Post(new Suspended(vnicId));

    /// <summary>Gives a VNIC back.</summary>
    public void Detach(uint vnicId) => Post(new Detach(vnicId));

    private void Post(Message message)
    {
        Span<byte> buffer = stackalloc byte[MessageHeader.MaxMessageLength];
        Post(buffer[..message.Encode(buffer)]);
    }

    private void Post(ReadOnlySpan<byte> message)
    {
        lock (_requestLock)
        {
            if (!_closed)
                _socket.Send(message);
        }
    }

    /// <summary>Takes the next event, if any.</summary>
    public bool TryTakeEvent(out Message? message)
    {
        if (_events.TryDequeue(out message))
            return true;
        // Empty: clear the flag and the eventfd, then look once more (an event queued in between keeps both set).
        Volatile.Write(ref _eventsPending, 0);
        Libc.DrainEventFd(_eventFd);
        if (_events.TryDequeue(out message))
        {
            Volatile.Write(ref _eventsPending, 1);
            return true;
        }
        return false;
    }

    private Message Request(Message request, out int[] descriptors, ReadOnlySpan<int> fds = default)
    {
        lock (_requestLock)
        {
            if (_closed)
                throw new DriverlinkException($"driverlink: the connection to the daemon is closed ({_closeReason})");
            uint id = _nextRequestId++;
            if (_nextRequestId is 0 or UnawaitedId)
                _nextRequestId = 1;
            lock (_replyLock)
            {
                _awaiting = id;
                _reply = null;
                _replyFds = [];
                _replied.Reset();
            }
            int e = _socket.Send(request with { RequestId = id }, fds);
            if (e != 0)
                throw new DriverlinkException($"driverlink: sending {request.Kind}: errno {e}", e);
            bool answered = _replied.Wait(_options.ReplyTimeout);
            Message? reply;
            lock (_replyLock)
            {
                // Taken under the lock the reader fills it under: a reply that lands as the wait times out is still
                // this request's, and one that comes later finds nothing awaiting it and is discarded.
                reply = _reply;
                descriptors = _replyFds;
                _reply = null;
                _replyFds = [];
                _awaiting = 0;
            }
            if (reply is null && !answered && !_closed)
            {
                // If the daemon grants it after all, the reader gives it back (see Abandoned).
                if (request is AttachRequest or FilterInsert)
                    lock (_replyLock)
                        _abandoned[id] = request;
                throw new DriverlinkException($"driverlink: no reply to {request.Kind} within {_options.ReplyTimeout.TotalSeconds:0.#} s", ETIMEDOUT);
            }
            if (reply is null)
                throw new DriverlinkException($"driverlink: the connection to the daemon closed during {request.Kind} ({_closeReason})");
            return reply;
        }
    }

    /// <summary>Takes every message off the socket until the connection ends (by the daemon, or by
    /// <see cref="Dispose"/>'s shutdown), and then always runs <see cref="Close"/>, which wakes a waiting request.</summary>
    private void ReadLoop()
    {
        var fds = new int[DriverlinkSocket.MaxDescriptors];
        while (true)
        {
            var r = _socket.Receive(fds, out var message);
            var got = fds.AsSpan(0, r.DescriptorCount).ToArray();
            if (r.Status is ReceiveStatus.PeerClosed or ReceiveStatus.Error)
            {
                CloseAll(got);
                if (!_disposed)
                    _daemonGone = true;
                Close(r.Status == ReceiveStatus.PeerClosed ? "the daemon closed the connection" : $"recvmsg: errno {r.Errno}");
                return;
            }
            if (r.Status != ReceiveStatus.Ok || message is null)
            {
                CloseAll(got); // a malformed message from the daemon: nothing to act on
                continue;
            }
            bool taken = false;
            if (message.RequestId != 0)
            {
                lock (_replyLock)
                {
                    if (message.RequestId == _awaiting && _reply is null)
                    {
                        _reply = message;
                        _replyFds = got;
                        taken = true;
                        _replied.Set();
                    }
                }
            }
            if (taken)
                continue;
            CloseAll(got); // a reply nobody awaits any more (its request timed out)
            if (message.RequestId != 0)
                Abandoned(message);
            if (message.RequestId == 0)
                Enqueue(message);
        }
    }

    /// <summary>
    /// A reply to a request that timed out: what the daemon granted too late is given back at once, so that a VNIC or
    /// a port the client no longer expects is not kept (an exclusive VNIC would hold the queue from everyone).
    /// Sent from the reader's thread without the request lock, which a waiting request may hold.
    /// </summary>
    private void Abandoned(Message reply)
    {
        Message? request;
        lock (_replyLock)
            _abandoned.Remove(reply.RequestId, out request);
        Message? undo = (request, reply) switch
        {
            (AttachRequest, AttachReply { Status: AttachStatus.Ok } granted) => new Detach(granted.VnicId),
            (FilterInsert insert, FilterReply { Status: FilterStatus.Ok }) => new FilterRemove(insert.VnicId, insert.Filter) { RequestId = UnawaitedId },
            _ => null,
        };
        if (undo is not null)
            _socket.Send(undo);
    }

    /// <summary>The request id of a message whose reply nobody awaits (it is discarded when it comes).</summary>
    private const uint UnawaitedId = uint.MaxValue;

    private void Enqueue(Message message)
    {
        _events.Enqueue(message);
        Volatile.Write(ref _eventsPending, 1);
        Libc.SignalEventFd(_eventFd);
    }

    private void Close(string reason)
    {
        _closeReason ??= reason;
        _closed = true;
        lock (_replyLock)
            _awaiting = 0;
        _replied.Set();
        Enqueue(new RemoveEvent(0)); // every VNIC of this connection is gone
    }

    public void Dispose()
    {
        if (_disposed)
            return;
        _disposed = true;
        _closed = true;
        _closeReason ??= "closed by the client";
        // shutdown ends the reader's recvmsg; it runs Close, which wakes a request still waiting.
        _ = Libc.Shutdown(_socket.Fd, 2);
        _reader.Join();
        lock (_requestLock)
            _socket.Dispose(); // no request or post is sending on it now, and none will
        _ = Libc.Close(_eventFd);
        _replied.Dispose();
    }

    private static void CloseAll(ReadOnlySpan<int> fds)
    {
        foreach (int fd in fds)
            _ = Libc.Close(fd);
    }

    private const int ECONNREFUSED = 111;
    private const int ETIMEDOUT = 110;
    private const int EPROTO = 71;





}
