using System.Net;
using Onload.Stack;

namespace Onload.Sockets;

/// <summary>A TCP listener on the stack. Connections wait in the stack's accept queue (the backlog) until accepted.</summary>
public sealed class OnloadListener : IPipeListener
{
    private readonly OnloadStack _owner;
    private readonly StackOperation<IPipeConnection> _accept;
    private readonly TaskCompletionSource _closed = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private bool _isClosed;
    private int _disposed;

    internal OnloadListener(OnloadStack owner, int socket, IPEndPoint local)
    {
        _owner = owner;
        Socket = socket;
        LocalEndPoint = local;
        _accept = new StackOperation<IPipeConnection>(owner.Scheduler, this, static o => ((OnloadListener)o!).TryAccept());
    }

    public IPEndPoint LocalEndPoint { get; }

    /// <summary>The listener's row in the stack's TCP table.</summary>
    internal int Socket { get; }

    internal bool AcceptPending => _accept.Pending;

    public ValueTask<IPipeConnection> AcceptAsync(CancellationToken cancellationToken = default)
    {
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
        _accept.Reserve();
        return _accept.Start(cancellationToken);
    }

    /// <summary>Stack thread: takes the next established connection, if any, for the pending accept.</summary>
    internal int TryAccept()
    {
        if (!_accept.Pending)
            return 0;
        if (_isClosed || _owner.Stopped)
        {
            _accept.Fail(new ObjectDisposedException(nameof(OnloadListener)));
            return 1;
        }
        var stack = _owner.Stack;
        int c = stack.TcpAccept(Socket, out var remote);
        if (c == -(int)Errno.EAGAIN)
            return 0;
        if (c < 0)
        {
            _accept.Fail(SocketErrors.Exception(c));
            return 1;
        }
        var connection = new OnloadConnection(_owner, c, EndPoints.ToEndPoint(stack.TcpLocalEndpoint(c)), EndPoints.ToEndPoint(remote));
        _owner.Add(connection);
        _accept.Complete(connection);
        return 1;
    }

    /// <summary>Stack thread: stops listening; connections not yet accepted are reset, as close(2) does.</summary>
    private void Close(Exception error)
    {
        if (_isClosed)
            return;
        _isClosed = true;
        if (_accept.Pending)
            _accept.Fail(error);
        if (!_owner.Stopped)
        {
            _owner.Stack.TcpClose(Socket);
            _owner.Remove(this);
        }
        _closed.TrySetResult();
    }

    internal void CloseForStack(Exception error) => Close(error);

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 0)
            _owner.Scheduler.Schedule(static o => ((OnloadListener)o!).Close(new ObjectDisposedException(nameof(OnloadListener))), this);
        await _closed.Task.ConfigureAwait(false);
    }
}
