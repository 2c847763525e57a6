using System.IO.Pipelines;
using System.Net;
using System.Net.Sockets;
using Onload.Driverlink;
using Onload.Stack;
using Onload.Stack.Wire;
using Onload.Vnic;

namespace Onload.Sockets;

/// <summary>
/// The user-level stack as a <see cref="ITransport"/>: TCP listeners and connections as pipes, UDP sockets, over one
/// <see cref="NetStack"/> that a thread of its own owns. That thread polls the VNIC, moves bytes between each
/// connection's TCP rings and its pipes, completes the UDP sockets' operations, and, idle for
/// <see cref="OnloadStackOptions.SpinTime"/>, sleeps on the VNIC and on a wake event that application threads ring
/// when they hand it work, until the stack's next timer. Application threads never touch the stack.
/// Disposing closes every listener, connection and socket, stops the thread and closes the VNIC.
/// </summary>
public sealed class OnloadStack : ITransport
{
    private readonly OpenedStack _opened;
    private readonly NetStack _stack;
    private readonly WakeEvent _wake;
    private readonly Thread _thread;
    private readonly long _spinNs;
    private readonly TaskCompletionSource _stopped = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly List<OnloadConnection> _connections = [];
    private readonly List<OnloadListener> _listeners = [];
    private readonly List<OnloadUdpSocket> _udpSockets = [];
    private bool _stopRequested;
    private int _disposed;

    private OnloadStack(OpenedStack opened, OnloadStackOptions options)
    {
        _opened = opened;
        _stack = opened.Stack;
        Options = options;
        _spinNs = (long)(options.SpinTime.TotalMilliseconds * 1_000_000);
        _wake = new WakeEvent();
        Scheduler = new StackScheduler(_wake.Set);
        InputPipeOptions = options.InputPipe(Scheduler);
        OutputPipeOptions = options.OutputPipe(Scheduler);
        Address = EndPoints.ToAddress(_stack.Address);
        _thread = new Thread(Run) { IsBackground = true, Name = "onload-stack" };
        _thread.Start();
    }

    /// <summary>
    /// Direct mode: the stack owns <see cref="OnloadStackOptions.Address"/> on the VNIC
    /// <see cref="OnloadStackOptions.Vnic"/> and does its own ARP (for tests and samples: the kernel must not hold
    /// the address). Throws ArgumentException for missing or bad options, IOException when the VNIC cannot be opened.
    /// </summary>
    public static OnloadStack Open(OnloadStackOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (options.Vnic is null || options.Address is null)
            throw new ArgumentException("direct mode needs Vnic and Address", nameof(options));
        if (!EndPoints.TryToStack(new IPEndPoint(options.Address, 0), out var address))
            throw new ArgumentException($"Address {options.Address}: the stack speaks IPv4", nameof(options));
        Ipv4Address? gateway = null;
        if (options.Gateway is not null)
        {
            if (!EndPoints.TryToStack(new IPEndPoint(options.Gateway, 0), out var g))
                throw new ArgumentException($"Gateway {options.Gateway}: the stack speaks IPv4", nameof(options));
            gateway = g.Address;
        }
        var stackOptions = new StackOptions { Address = new Ipv4Cidr(address.Address, options.PrefixLength), Gateway = gateway };
        if (options.ConfigureStack is not null)
            stackOptions = options.ConfigureStack(stackOptions);
        return new OnloadStack(OpenedStack.Direct(options.Vnic, stackOptions), options);
    }

    /// <summary>
    /// Driverlink mode: accelerates <paramref name="interfaceName"/>, whose address the kernel keeps, through
    /// onload-driverd (started if none answers), in shared or exclusive mode. Throws IOException when the daemon
    /// cannot be reached or refuses.
    /// </summary>
    public static OnloadStack Attach(string interfaceName, VnicMode mode = VnicMode.Shared, OnloadStackOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(interfaceName);
        options ??= new OnloadStackOptions();
        var template = new StackOptions { Address = default };
        if (options.ConfigureStack is not null)
            template = options.ConfigureStack(template);
        return new OnloadStack(OpenedStack.Driverlink(interfaceName, mode, template, options.Driverlink), options);
    }

    /// <summary>The stack's IPv4 address (the kernel's, in driverlink mode).</summary>
    public IPAddress Address { get; }

    /// <summary>The VNIC's spec (af_xdp:veth0, driverlink:eth0...).</summary>
    public string VnicSpec => _opened.Vnic.Spec;

    public OnloadStackOptions Options { get; }

    internal StackScheduler Scheduler { get; }

    internal PipeOptions InputPipeOptions { get; }

    internal PipeOptions OutputPipeOptions { get; }

    internal NetStack Stack => _stack;

    /// <summary>Whether the stack thread has stopped: set on that thread before it closes the scheduler, read by the
    /// work scheduled after (which then fails with ObjectDisposedException instead of touching the stack).</summary>
    internal bool Stopped { get; private set; }

    /// <summary>Runs <paramref name="inspect"/> on the stack thread (counters, tables: <see cref="NetStack"/> is that
    /// thread's alone) and returns its result.</summary>
    public Task<T> InspectAsync<T>(Func<NetStack, T> inspect)
    {
        ArgumentNullException.ThrowIfNull(inspect);
        var invocation = new Invocation<T>(this, inspect);
        Scheduler.Schedule(static o => ((Invocation<T>)o!).Run(), invocation);
        return invocation.Task;
    }

    private sealed class Invocation<T>(OnloadStack owner, Func<NetStack, T> f)
    {
        private readonly TaskCompletionSource<T> _done = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public Task<T> Task => _done.Task;

        public void Run()
        {
            if (owner.Stopped)
            {
                _done.TrySetException(new ObjectDisposedException(nameof(OnloadStack)));
                return;
            }
            try
            {
                _done.TrySetResult(f(owner._stack));
            }
#pragma warning disable CA1031 // handed to the caller
            catch (Exception e)
#pragma warning restore CA1031
            {
                _done.TrySetException(e);
            }
        }
    }

    public async ValueTask<IPipeListener> ListenAsync(IPEndPoint local, int backlog = 512, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(local);
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
        cancellationToken.ThrowIfCancellationRequested();
        var endpoint = ToStack(local);
        return await InspectAsync(stack =>
        {
            int l = stack.TcpOpen();
            if (l < 0)
                throw SocketErrors.Exception(l);
            int rc = stack.TcpBind(l, endpoint);
            if (rc == 0)
                rc = stack.TcpListen(l, backlog);
            if (rc == 0 && Options.NoDelay)
                rc = stack.TcpSetNoDelay(l, true); // accepted connections inherit it
            if (rc < 0)
            {
                stack.TcpClose(l);
                throw SocketErrors.Exception(rc);
            }
            var listener = new OnloadListener(this, l, EndPoints.ToEndPoint(stack.TcpLocalEndpoint(l)));
            _listeners.Add(listener);
            return listener;
        }).ConfigureAwait(false);
    }

    public ValueTask<IPipeConnection> ConnectAsync(IPEndPoint remote, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(remote);
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
        var endpoint = ToStack(remote);
        var connection = new OnloadConnection(this, remote);
        return new ValueTask<IPipeConnection>(connection.ConnectAsync(endpoint, cancellationToken));
    }

    public async ValueTask<IDatagramSocket> BindUdpAsync(IPEndPoint local, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(local);
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
        cancellationToken.ThrowIfCancellationRequested();
        var endpoint = ToStack(local);
        return await InspectAsync(stack =>
        {
            int s = stack.UdpOpen();
            if (s < 0)
                throw SocketErrors.Exception(s);
            int rc = stack.UdpBind(s, endpoint);
            if (rc < 0)
            {
                stack.UdpClose(s);
                throw SocketErrors.Exception(rc);
            }
            var socket = new OnloadUdpSocket(this, s, EndPoints.ToEndPoint(stack.UdpLocalEndpoint(s)));
            _udpSockets.Add(socket);
            return socket;
        }).ConfigureAwait(false);
    }

    private static Ipv4Endpoint ToStack(IPEndPoint endPoint) =>
        EndPoints.TryToStack(endPoint, out var e) ? e : throw new SocketException((int)SocketError.AddressFamilyNotSupported);

    // ------------------------------------------------------------------------------------------ the stack thread

    internal void Add(OnloadConnection connection) => _connections.Add(connection);

    internal void Remove(OnloadListener listener) => _listeners.Remove(listener);

    internal void Remove(OnloadUdpSocket socket) => _udpSockets.Remove(socket);

    private void Run()
    {
        Exception? failure = null;
        try
        {
            Loop();
        }
#pragma warning disable CA1031 // every user of the stack is told, instead of the process dying with the thread
        catch (Exception e)
#pragma warning restore CA1031
        {
            failure = e;
        }
        CloseAll(failure);
        Stopped = true;
        Scheduler.Close();
        _stopped.TrySetResult();
    }

    private void Loop()
    {
        long idleSince = MonotonicClock.Instance.NowNanoseconds;
        while (!_stopRequested)
        {
            int work = _stack.Poll();
            work += Scheduler.RunPending();
            work += Service();
            long now = MonotonicClock.Instance.NowNanoseconds;
            if (work > 0)
            {
                idleSince = now;
                continue;
            }
            if (now - idleSince < _spinNs || !Scheduler.TryBeginSleep())
                continue;
            // Asleep until a frame, an application's request, or the next timer (rounded up to the millisecond;
            // at most a second, for the driverlink session's housekeeping).
            long next = _stack.NextTimerNs;
            int timeoutMs = next == long.MaxValue ? 1000 : (int)Math.Clamp((next - now + 999_999) / 1_000_000, 0, 1000);
            VnicWait.Wait(_stack.Vnic, _wake, timeoutMs);
            Scheduler.EndSleep();
            _wake.Reset();
            idleSince = MonotonicClock.Instance.NowNanoseconds;
        }
    }

    /// <summary>Moves bytes for every connection and completes what the sockets waited for. Returns the work done.</summary>
    private int Service()
    {
        int work = 0;
        for (int i = _connections.Count - 1; i >= 0; i--)
        {
            var connection = _connections[i];
            work += connection.Service();
            if (connection.Finished)
            {
                _connections[i] = _connections[^1];
                _connections.RemoveAt(_connections.Count - 1);
            }
        }
        foreach (var listener in _listeners)
            if (listener.AcceptPending && _stack.TcpReadable(listener.Socket))
                work += listener.TryAccept();
        foreach (var socket in _udpSockets)
            if (socket.ReceivePending && _stack.UdpReadable(socket.Socket))
                work += socket.TryReceive();
        return work;
    }

    private void CloseAll(Exception? failure)
    {
        Exception error = failure is null ? new ObjectDisposedException(nameof(OnloadStack)) : new IOException("the stack thread failed", failure);
        foreach (var connection in _connections)
            connection.CloseForStack(error);
        _connections.Clear();
        foreach (var listener in _listeners.ToArray())
            listener.CloseForStack(error);
        foreach (var socket in _udpSockets.ToArray())
            socket.CloseForStack(error);
        try
        {
            _stack.Poll(); // the FINs and RSTs of the closes go out
        }
#pragma warning disable CA1031 // nothing more to tell anyone
        catch (Exception)
#pragma warning restore CA1031
        {
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            await _stopped.Task.ConfigureAwait(false);
            return;
        }
        Scheduler.Schedule(static o => ((OnloadStack)o!)._stopRequested = true, this);
        await _stopped.Task.ConfigureAwait(false);
        _thread.Join();
        _opened.Dispose();
        _wake.Dispose();
    }
}
