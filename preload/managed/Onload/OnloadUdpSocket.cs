using System.Net;
using Onload.Stack;

namespace Onload.Sockets;

/// <summary>
/// A UDP socket on the stack. One send and one receive may be in flight at a time (as with a Socket's
/// SocketAsyncEventArgs); each is a reusable value-task source, and the sender of received datagrams is kept while it
/// repeats, so neither direction allocates per datagram.
/// </summary>
public sealed class OnloadUdpSocket : IDatagramSocket
{
    private readonly OnloadStack _owner;
    private readonly StackOperation<int> _send;
    private readonly StackOperation<DatagramReceived> _receive;
    private readonly TaskCompletionSource _closed = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private ReadOnlyMemory<byte> _sendData;
    private IPEndPoint? _sendTo;
    private Memory<byte> _receiveBuffer;
    private EndPointCache _senders;
    private bool _isClosed;
    private int _disposed;

    internal OnloadUdpSocket(OnloadStack owner, int socket, IPEndPoint local)
    {
        _owner = owner;
        Socket = socket;
        LocalEndPoint = local;
        _send = new StackOperation<int>(owner.Scheduler, this, static o => ((OnloadUdpSocket)o!).Send());
        _receive = new StackOperation<DatagramReceived>(owner.Scheduler, this, static o => ((OnloadUdpSocket)o!).TryReceive());
    }

    public IPEndPoint LocalEndPoint { get; }

    /// <summary>The socket's row in the stack's UDP table.</summary>
    internal int Socket { get; }

    internal bool ReceivePending => _receive.Pending;

    public ValueTask<int> SendToAsync(ReadOnlyMemory<byte> datagram, IPEndPoint remote, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(remote);
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
        _send.Reserve();
        _sendData = datagram;
        _sendTo = remote;
        return _send.Start(cancellationToken);
    }

    public ValueTask<DatagramReceived> ReceiveFromAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
        _receive.Reserve();
        _receiveBuffer = buffer;
        return _receive.Start(cancellationToken);
    }

    /// <summary>Stack thread: sends the datagram now (the stack queues it on the neighbour if ARP must answer first).</summary>
    private void Send()
    {
        var data = _sendData;
        _sendData = default;
        if (_isClosed || _owner.Stopped)
        {
            _send.Fail(new ObjectDisposedException(nameof(OnloadUdpSocket)));
            return;
        }
        if (!EndPoints.TryToStack(_sendTo!, out var destination))
        {
            _send.Fail(new System.Net.Sockets.SocketException((int)System.Net.Sockets.SocketError.AddressFamilyNotSupported));
            return;
        }
        int rc = _owner.Stack.UdpSendTo(Socket, data.Span, destination);
        if (rc < 0)
            _send.Fail(SocketErrors.Exception(rc));
        else
            _send.Complete(rc);
    }

    /// <summary>Stack thread: completes the pending receive with the next datagram, if one is queued.</summary>
    internal int TryReceive()
    {
        if (!_receive.Pending)
            return 0;
        if (_isClosed || _owner.Stopped)
        {
            _receive.Fail(new ObjectDisposedException(nameof(OnloadUdpSocket)));
            return 1;
        }
        int n = _owner.Stack.UdpReceiveFrom(Socket, _receiveBuffer.Span, out var from);
        if (n == -(int)Errno.EAGAIN)
            return 0;
        _receiveBuffer = default;
        if (n < 0)
            _receive.Fail(SocketErrors.Exception(n)); // e.g. ECONNREFUSED, from an ICMP port unreachable
        else
            _receive.Complete(new DatagramReceived(n, _senders.Get(from)));
        return 1;
    }

    private void Close(Exception error)
    {
        if (_isClosed)
            return;
        _isClosed = true;
        if (_receive.Pending)
            _receive.Fail(error);
        if (!_owner.Stopped)
        {
            _owner.Stack.UdpClose(Socket);
            _owner.Remove(this);
        }
        _closed.TrySetResult();
    }

    internal void CloseForStack(Exception error) => Close(error);

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 0)
            _owner.Scheduler.Schedule(static o => ((OnloadUdpSocket)o!).Close(new ObjectDisposedException(nameof(OnloadUdpSocket))), this);
        await _closed.Task.ConfigureAwait(false);
    }
}
