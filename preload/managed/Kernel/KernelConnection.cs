using System.IO.Pipelines;
using System.Net;
using System.Net.Sockets;
using Pipelines.Sockets.Unofficial;

namespace Onload.Sockets;

/// <summary>
/// A kernel TCP connection: Pipelines.Sockets.Unofficial's <see cref="SocketConnection"/> moves the bytes between the
/// socket and the pipes. Its send loop sends the FIN (shutdown SHUT_WR) once the Output pipe completes and is empty.
/// </summary>
internal sealed class KernelConnection : IPipeConnection
{
    private readonly Socket _socket;
    private readonly SocketConnection _connection;
    private readonly CountingWriter _output;
    private readonly ResetUnwrappingReader _input;
    private int _disposed;

    public KernelConnection(Socket socket, PipeOptions pipeOptions)
    {
        _socket = socket;
        LocalEndPoint = (IPEndPoint)socket.LocalEndPoint!;
        RemoteEndPoint = (IPEndPoint)socket.RemoteEndPoint!;
        _connection = SocketConnection.Create(socket, pipeOptions);
        _output = new CountingWriter(_connection.Output);
        _input = new ResetUnwrappingReader(_connection.Input);
    }

    public PipeReader Input => _input;

    public PipeWriter Output => _output;

    public IPEndPoint LocalEndPoint { get; }

    public IPEndPoint RemoteEndPoint { get; }

    public void Abort()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
            return;
        try
        {
            // Closed here first: SocketConnection's dispose shuts the socket down (a FIN) before it closes it.
            _socket.LingerState = new LingerOption(true, 0); // close(2) with SO_LINGER 0: a RST
            _socket.Close();
        }
        catch (ObjectDisposedException)
        {
        }
        _connection.Dispose();
    }

    /// <summary>
    /// Closes as close(2) does: what was written goes out first. SocketConnection's dispose closes the socket at
    /// once, so this waits (up to 10 s, then closes anyway) until its send loop has sent all the application wrote.
    /// </summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
            return;
        _output.Complete();
        _connection.Input.Complete();
        var deadline = DateTime.UtcNow.AddSeconds(10);
        while (_connection.BytesSent < _output.Written && DateTime.UtcNow < deadline &&
               _connection.ShutdownKind is PipeShutdownKind.None or PipeShutdownKind.OutputWriterCompleted or PipeShutdownKind.InputReaderCompleted
                   or PipeShutdownKind.ReadEndOfStream or PipeShutdownKind.ReadFlushCompleted)
            await Task.Delay(1).ConfigureAwait(false);
        _connection.Dispose();
    }

    /// <summary>
    /// SocketConnection completes Input with its own ConnectionResetException (an IOException) at a reset; the
    /// contract says a SocketException (ConnectionReset), which it carries inside. Only a failed read pays for the
    /// unwrapping.
    /// </summary>
    private sealed class ResetUnwrappingReader(PipeReader inner) : PipeReader
    {
        public override ValueTask<ReadResult> ReadAsync(CancellationToken cancellationToken = default)
        {
            ValueTask<ReadResult> read;
            try
            {
                read = inner.ReadAsync(cancellationToken);
            }
            catch (IOException e) when (e.InnerException is SocketException s)
            {
                throw s;
            }
            return read.IsCompletedSuccessfully ? read : Unwrap(read);
        }

        [System.Runtime.CompilerServices.AsyncMethodBuilder(typeof(System.Runtime.CompilerServices.PoolingAsyncValueTaskMethodBuilder<>))]
        private static async ValueTask<ReadResult> Unwrap(ValueTask<ReadResult> read)
        {
            try
            {
                return await read.ConfigureAwait(false);
            }
            catch (IOException e) when (e.InnerException is SocketException s)
            {
                throw s;
            }
        }

        public override bool TryRead(out ReadResult result)
        {
            try
            {
                return inner.TryRead(out result);
            }
            catch (IOException e) when (e.InnerException is SocketException s)
            {
                throw s;
            }
        }

        public override void AdvanceTo(SequencePosition consumed) => inner.AdvanceTo(consumed);

        public override void AdvanceTo(SequencePosition consumed, SequencePosition examined) => inner.AdvanceTo(consumed, examined);

        public override void CancelPendingRead() => inner.CancelPendingRead();

        public override void Complete(Exception? exception = null) => inner.Complete(exception);

        public override ValueTask CompleteAsync(Exception? exception = null) => inner.CompleteAsync(exception);
    }

    /// <summary>Counts the bytes the application commits, to know when the send loop has sent them all.</summary>
    private sealed class CountingWriter(PipeWriter inner) : PipeWriter
    {
        public long Written { get; private set; }

        public override void Advance(int bytes)
        {
            inner.Advance(bytes);
            Written += bytes;
        }

        public override Memory<byte> GetMemory(int sizeHint = 0) => inner.GetMemory(sizeHint);

        public override Span<byte> GetSpan(int sizeHint = 0) => inner.GetSpan(sizeHint);

        public override ValueTask<FlushResult> FlushAsync(CancellationToken cancellationToken = default) => inner.FlushAsync(cancellationToken);

        public override ValueTask<FlushResult> WriteAsync(ReadOnlyMemory<byte> source, CancellationToken cancellationToken = default)
        {
            Written += source.Length;
            return inner.WriteAsync(source, cancellationToken);
        }

        public override void CancelPendingFlush() => inner.CancelPendingFlush();

        public override void Complete(Exception? exception = null) => inner.Complete(exception);

        public override ValueTask CompleteAsync(Exception? exception = null) => inner.CompleteAsync(exception);

        public override bool CanGetUnflushedBytes => inner.CanGetUnflushedBytes;

        public override long UnflushedBytes => inner.UnflushedBytes;
    }
}
