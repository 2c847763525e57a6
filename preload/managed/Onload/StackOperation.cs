using System.Threading.Tasks.Sources;

namespace Onload.Sockets;

/// <summary>
/// One asynchronous operation at a time on an object the stack thread serves (an accept, a datagram received or
/// sent): a reusable <see cref="IValueTaskSource{T}"/>, so awaiting it allocates nothing. The application thread
/// starts it; the stack thread alone completes it, with a result, an error, or the cancellation the application's
/// token asked for, so a result is never lost to a race with a cancellation.
/// </summary>
internal sealed class StackOperation<T> : IValueTaskSource<T>
{
    private ManualResetValueTaskSourceCore<T> _core = new() { RunContinuationsAsynchronously = true };
    private readonly StackScheduler _scheduler;
    private readonly Action<object?> _start;
    private readonly object _owner;
    private CancellationTokenRegistration _registration;
    private CancellationToken _token;
    private int _busy;
    private int _cancelVersion = -1;

    /// <param name="start">Runs on the stack thread with <paramref name="owner"/> when an operation starts.</param>
    public StackOperation(StackScheduler scheduler, object owner, Action<object?> start)
    {
        _scheduler = scheduler;
        _owner = owner;
        _start = start;
    }

    /// <summary>Whether an operation waits for the stack thread to complete it (stack thread only).</summary>
    public bool Pending { get; private set; }

    /// <summary>Claims the operation for one call (before the caller stores its arguments for the stack thread);
    /// throws InvalidOperationException while another is in flight.</summary>
    public void Reserve()
    {
        if (Interlocked.Exchange(ref _busy, 1) != 0)
            throw new InvalidOperationException("an operation of this kind is already in progress on this socket");
    }

    /// <summary>Hands the reserved operation to the stack thread.</summary>
    public ValueTask<T> Start(CancellationToken cancellationToken)
    {
        if (cancellationToken.IsCancellationRequested)
        {
            Volatile.Write(ref _busy, 0);
            return ValueTask.FromCanceled<T>(cancellationToken);
        }
        _core.Reset();
        short version = _core.Version;
        _token = cancellationToken;
        _scheduler.Schedule(static o => ((StackOperation<T>)o!).Begin(), this);
        if (cancellationToken.CanBeCanceled)
            _registration = cancellationToken.UnsafeRegister(static o => ((StackOperation<T>)o!).RequestCancel(), this);
        return new ValueTask<T>(this, version);
    }

    private void Begin()
    {
        Pending = true;
        _start(_owner);
    }

    private void RequestCancel()
    {
        // The registration ends (GetResult disposes it, waiting for a running callback) before the next operation
        // starts, so the version read here is that of the operation the token was given for.
        Volatile.Write(ref _cancelVersion, _core.Version);
        _scheduler.Schedule(static o => ((StackOperation<T>)o!).Cancel(), this);
    }

    private void Cancel()
    {
        if (Pending && Volatile.Read(ref _cancelVersion) == _core.Version)
        {
            Pending = false;
            _core.SetException(new OperationCanceledException(_token));
        }
    }

    /// <summary>Completes the pending operation (stack thread).</summary>
    public void Complete(T result)
    {
        Pending = false;
        _core.SetResult(result);
    }

    /// <summary>Fails the pending operation (stack thread).</summary>
    public void Fail(Exception error)
    {
        Pending = false;
        _core.SetException(error);
    }

    public T GetResult(short token)
    {
        try
        {
            return _core.GetResult(token);
        }
        finally
        {
            _registration.Dispose();
            _registration = default;
            Volatile.Write(ref _busy, 0);
        }
    }

    public ValueTaskSourceStatus GetStatus(short token) => _core.GetStatus(token);

    public void OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags) =>
        _core.OnCompleted(continuation, state, token, flags);
}
