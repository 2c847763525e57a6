using System.Buffers;
using System.IO.Pipelines;
using System.Net;
using System.Net.Sockets;
using Onload.Stack;
using Onload.Stack.Wire;

namespace Onload.Sockets;

/// <summary>
/// A TCP connection on the stack as two pipes. The stack thread moves the bytes: from the connection's receive ring
/// into the Input pipe's writer (copied once, straight into the pipe's memory), pausing while the application has
/// not read what the pipe holds (so the TCP window closes, as a kernel socket's does when its reader lags); and from
/// the Output pipe's reader into the send ring, as much as the send buffer takes, the rest when it has room.
/// </summary>
public sealed class OnloadConnection : IPipeConnection
{
    private readonly OnloadStack _owner;
    private readonly Pipe _input;
    private readonly Pipe _output;
    private readonly Action _onFlushed;
    private readonly Action _onReadable;
    private readonly TaskCompletionSource _closed = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private TaskCompletionSource<IPipeConnection>? _connect;
    private CancellationTokenRegistration _connectCancel;
    private Ipv4Endpoint _connectTo;
    private int _socket = -1;
    private int _disposed;

    // The stack thread's state of the two directions.
    private ValueTask<FlushResult> _flush;
    private bool _flushPending;
    private bool _flushDone;
    private bool _inputDone;
    private ValueTask<ReadResult> _read;
    private bool _readPending;
    private bool _readDone;
    private bool _sendBufferFull;
    private bool _outputDone;
    private bool _closing;

    private OnloadConnection(OnloadStack owner, IPEndPoint local, IPEndPoint remote)
    {
        _owner = owner;
        LocalEndPoint = local;
        RemoteEndPoint = remote;
        _input = new Pipe(owner.InputPipeOptions);
        _output = new Pipe(owner.OutputPipeOptions);
        // Run on the stack thread: the stack scheduler is the Input pipe's writer scheduler and the Output pipe's
        // reader scheduler.
        _onFlushed = () => _flushDone = true;
        _onReadable = () => _readDone = true;
    }

    /// <summary>An accepted connection (stack thread).</summary>
    internal OnloadConnection(OnloadStack owner, int socket, IPEndPoint local, IPEndPoint remote)
        : this(owner, local, remote)
    {
        _socket = socket;
    }

    /// <summary>A connection to be made by <see cref="ConnectAsync"/>.</summary>
    internal OnloadConnection(OnloadStack owner, IPEndPoint remote)
        : this(owner, new IPEndPoint(IPAddress.Any, 0), remote)
    {
    }

    public PipeReader Input => _input.Reader;

    public PipeWriter Output => _output.Writer;

    public IPEndPoint LocalEndPoint { get; private set; }

    public IPEndPoint RemoteEndPoint { get; }

    /// <summary>Whether the stack thread is done with this connection (its row closed).</summary>
    internal bool Finished { get; private set; }

    // -------------------------------------------------------------------------------------------- connect

    internal Task<IPipeConnection> ConnectAsync(Ipv4Endpoint remote, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        _connectTo = remote;
        // The stack thread may finish the connect (and forget it) before this returns.
        var connect = new TaskCompletionSource<IPipeConnection>(TaskCreationOptions.RunContinuationsAsynchronously);
        _connect = connect;
        _owner.Scheduler.Schedule(static o => ((OnloadConnection)o!).StartConnect(), this);
        if (cancellationToken.CanBeCanceled)
            _connectCancel = cancellationToken.UnsafeRegister(static (o, token) =>
                ((OnloadConnection)o!)._owner.Scheduler.Schedule(static c => ((OnloadConnection)c!).CancelConnect(), o), this);
        return connect.Task;
    }

    private void StartConnect()
    {
        if (_owner.Stopped)
        {
            FailConnect(new ObjectDisposedException(nameof(OnloadStack)));
            return;
        }
        var stack = _owner.Stack;
        int c = stack.TcpOpen();
        if (c < 0)
        {
            FailConnect(SocketErrors.Exception(c));
            return;
        }
        if (_owner.Options.NoDelay)
            stack.TcpSetNoDelay(c, true);
        int rc = stack.TcpConnect(c, _connectTo);
        if (rc != -(int)Errno.EINPROGRESS)
        {
            stack.TcpClose(c);
            FailConnect(SocketErrors.Exception(rc < 0 ? rc : -(int)Errno.EINVAL));
            return;
        }
        _socket = c;
        _owner.Add(this);
    }

    /// <summary>Stack thread: the handshake's outcome, once there is one.</summary>
    private int ServiceConnect()
    {
        var stack = _owner.Stack;
        if (stack.TcpIsConnected(_socket))
        {
            LocalEndPoint = EndPoints.ToEndPoint(stack.TcpLocalEndpoint(_socket));
            var connect = _connect!;
            _connect = null;
            _connectCancel.Dispose();
            connect.TrySetResult(this);
            return 1;
        }
        int error = stack.TcpTakeError(_socket);
        if (error > 0)
        {
            stack.TcpClose(_socket);
            Finished = true;
            FailConnect(SocketErrors.Exception(-error)); // ECONNREFUSED at a RST, ETIMEDOUT after the SYN retries
            return 1;
        }
        return 0;
    }

    private void CancelConnect()
    {
        if (_connect is null || Finished)
            return;
        if (_socket >= 0 && !_owner.Stopped)
        {
            _owner.Stack.TcpClose(_socket);
            Finished = true;
        }
        var connect = _connect;
        _connect = null;
        connect.TrySetCanceled();
        _closed.TrySetResult();
    }

    private void FailConnect(Exception error)
    {
        var connect = _connect;
        _connect = null;
        _connectCancel.Dispose();
        connect?.TrySetException(error);
        _closed.TrySetResult();
    }

    // -------------------------------------------------------------------------------------------- moving bytes

    /// <summary>Stack thread: moves what can move in both directions. Returns the work done (0: nothing moved).</summary>
    internal int Service()
    {
        if (_connect is not null)
            return ServiceConnect();
        int work = 0;
        if (!_inputDone)
            work += PumpInput();
        if (!_outputDone)
            work += PumpOutput();
        if (_closing && _outputDone)
            work += Close();
        return work;
    }

    /// <summary>Receive ring → Input pipe, until the ring is empty or the pipe says to wait for its reader.</summary>
    private int PumpInput()
    {
        if (_flushPending)
        {
            if (!_flushDone)
                return 0; // the application has not read enough yet: the window closes meanwhile
            _flushPending = false;
            if (_flush.GetAwaiter().GetResult().IsCompleted)
                return StopInput();
        }
        var stack = _owner.Stack;
        var writer = _input.Writer;
        long moved = 0;
        int work = 0;
        while (stack.TcpReadable(_socket))
        {
            var span = writer.GetSpan(2048);
            int n = stack.TcpReceive(_socket, span);
            if (n > 0)
            {
                writer.Advance(n);
                moved += n;
                if (moved >= _owner.Options.InputPauseThreshold)
                    break; // let the reader have it before taking more
                continue;
            }
            if (n == -(int)Errno.EAGAIN)
                break;
            // The peer's FIN (0) or an error (a reset: ECONNRESET; the retransmissions given up: ETIMEDOUT). What
            // was advanced is flushed by Complete.
            writer.Complete(n == 0 ? null : SocketErrors.Exception(n));
            _inputDone = true;
            return 1;
        }
        if (moved == 0)
            return work;
        var flush = writer.FlushAsync();
        if (flush.IsCompleted)
        {
            if (flush.GetAwaiter().GetResult().IsCompleted)
                return StopInput();
        }
        else
        {
            _flush = flush;
            _flushPending = true;
            _flushDone = false;
            flush.GetAwaiter().UnsafeOnCompleted(_onFlushed);
        }
        return 1;
    }

    /// <summary>The application completed the Input pipe's reader: it reads no more.</summary>
    private int StopInput()
    {
        _inputDone = true;
        _input.Writer.Complete();
        return 1;
    }

    /// <summary>Output pipe → send ring, as much as the send buffer takes; the FIN after the last byte.</summary>
    private int PumpOutput()
    {
        var reader = _output.Reader;
        var stack = _owner.Stack;
        int work = 0;
        for (int round = 0; round < 16; round++)
        {
            ReadResult result;
            if (_readPending)
            {
                if (!_readDone)
                    return work;
                _readPending = false;
                result = _read.GetAwaiter().GetResult();
            }
            else
            {
                if (_sendBufferFull)
                {
                    if (!stack.TcpWritable(_socket))
                        return work;
                    _sendBufferFull = false;
                }
                var read = reader.ReadAsync();
                if (!read.IsCompleted)
                {
                    _read = read;
                    _readPending = true;
                    _readDone = false;
                    read.GetAwaiter().UnsafeOnCompleted(_onReadable);
                    return work;
                }
                result = read.GetAwaiter().GetResult();
            }

            var buffer = result.Buffer;
            long sent = 0;
            int error = 0;
            foreach (var segment in buffer)
            {
                var span = segment.Span;
                while (!span.IsEmpty)
                {
                    int n = stack.TcpSend(_socket, span);
                    if (n < 0)
                    {
                        error = n;
                        break;
                    }
                    span = span[n..];
                    sent += n;
                }
                if (error != 0)
                    break;
            }
            reader.AdvanceTo(buffer.GetPosition(sent));
            if (sent > 0)
                work++;
            if (error == -(int)Errno.EAGAIN)
            {
                _sendBufferFull = true; // the rest waits until the peer acknowledges enough
                return work;
            }
            if (error != 0)
            {
                // A reset or an abort: nothing more can be sent.
                reader.Complete(SocketErrors.Exception(error));
                _outputDone = true;
                return work + 1;
            }
            if (result.IsCompleted)
            {
                stack.TcpShutdown(_socket, read: false, write: true); // FIN after what the send ring holds
                reader.Complete();
                _outputDone = true;
                return work + 1;
            }
        }
        return work;
    }

    // -------------------------------------------------------------------------------------------- closing

    /// <summary>Stack thread: the row goes back to the stack, which sends the FIN (or, with unread data, a RST)
    /// and finishes the connection on its own, as close(2) leaves it to the kernel.</summary>
    private int Close()
    {
        if (Finished)
            return 0;
        Finished = true;
        if (!_inputDone)
        {
            _inputDone = true;
            _input.Writer.Complete();
        }
        _owner.Stack.TcpClose(_socket);
        _closed.TrySetResult();
        return 1;
    }

    private void Abort(Exception error)
    {
        if (Finished)
            return;
        if (_connect is not null)
        {
            CancelConnect();
            return;
        }
        Finished = true;
        if (!_owner.Stopped)
        {
            _owner.Stack.TcpSetLingerZero(_socket, true); // close(2) with SO_LINGER 0: a RST
            _owner.Stack.TcpClose(_socket);
        }
        if (!_inputDone)
        {
            _inputDone = true;
            _input.Writer.Complete(error);
        }
        if (!_outputDone)
        {
            _outputDone = true;
            _output.Reader.Complete(error);
        }
        _closed.TrySetResult();
    }

    /// <summary>The stack is stopping, and with it whatever would finish a FIN handshake: the connection is reset
    /// (the peer learns at once, instead of retransmitting to a stack that is gone).</summary>
    internal void CloseForStack(Exception error) => Abort(error);

    /// <summary>Resets the connection (a RST); Input and Output complete with ConnectionAborted.</summary>
    public void Abort() =>
        _owner.Scheduler.Schedule(static o => ((OnloadConnection)o!).Abort(new SocketException((int)SocketError.ConnectionAborted)), this);

    /// <summary>
    /// Closes as close(2) does: what the application wrote is sent, then the FIN (a RST if data the application
    /// never read was left). Completes when the stack has taken the connection back.
    /// </summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 0)
        {
            _output.Writer.Complete();
            _input.Reader.Complete();
            _owner.Scheduler.Schedule(static o =>
            {
                var c = (OnloadConnection)o!;
                if (c._connect is not null || c._owner.Stopped)
                    c.Abort(new ObjectDisposedException(nameof(OnloadConnection)));
                else
                    c._closing = true;
            }, this);
        }
        await _closed.Task.ConfigureAwait(false);
    }
}
