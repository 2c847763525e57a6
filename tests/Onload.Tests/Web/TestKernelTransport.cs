using System.IO.Pipelines;
using System.Net;
using System.Net.Sockets;
using Onload.Sockets;

namespace Onload.Tests.Web;

/// <summary>
/// A stand-in for Onload.Sockets' KernelTransport until it is built: TCP listeners over kernel sockets, each
/// connection two pipes pumped by a task each. Only what the Kestrel tests use.
/// </summary>
internal sealed class TestKernelTransport : ITransport
{
    public ValueTask<IPipeListener> ListenAsync(IPEndPoint local, int backlog = 512, CancellationToken cancellationToken = default)
    {
        var socket = new Socket(local.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            if (local.AddressFamily == AddressFamily.InterNetworkV6)
                socket.DualMode = true;
            socket.Bind(local);
            socket.Listen(backlog);
            return ValueTask.FromResult<IPipeListener>(new Listener(socket));
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    public ValueTask<IPipeConnection> ConnectAsync(IPEndPoint remote, CancellationToken cancellationToken = default) =>
        throw new NotSupportedException();

    public ValueTask<IDatagramSocket> BindUdpAsync(IPEndPoint local, CancellationToken cancellationToken = default) =>
        throw new NotSupportedException();

    public ValueTask DisposeAsync() => ValueTask.CompletedTask;

    private sealed class Listener(Socket socket) : IPipeListener
    {
        public IPEndPoint LocalEndPoint => (IPEndPoint)socket.LocalEndPoint!;

        public async ValueTask<IPipeConnection> AcceptAsync(CancellationToken cancellationToken = default)
        {
            var accepted = await socket.AcceptAsync(cancellationToken).ConfigureAwait(false);
            accepted.NoDelay = true;
            return new Connection(accepted);
        }

        public ValueTask DisposeAsync()
        {
            socket.Dispose();
            return ValueTask.CompletedTask;
        }
    }

    /// <summary>Two pipes pumped by a receive loop and a send loop; disposing sends what was written, then closes.</summary>
    private sealed class Connection : IPipeConnection
    {
        private readonly Socket _socket;
        private readonly Pipe _received = new();
        private readonly Pipe _toSend = new();
        private readonly Task _receiving;
        private readonly Task _sending;

        public Connection(Socket socket)
        {
            _socket = socket;
            LocalEndPoint = (IPEndPoint)socket.LocalEndPoint!;
            RemoteEndPoint = (IPEndPoint)socket.RemoteEndPoint!;
            _receiving = ReceiveAsync();
            _sending = SendAsync();
        }

        public PipeReader Input => _received.Reader;

        public PipeWriter Output => _toSend.Writer;

        public IPEndPoint LocalEndPoint { get; }

        public IPEndPoint RemoteEndPoint { get; }

        public void Abort()
        {
            _socket.LingerState = new LingerOption(true, 0);
            _socket.Dispose();
        }

        public async ValueTask DisposeAsync()
        {
            await _toSend.Writer.CompleteAsync().ConfigureAwait(false);
            await _sending.ConfigureAwait(false);
            _socket.Dispose();
            await _receiving.ConfigureAwait(false);
        }

        private async Task ReceiveAsync()
        {
            Exception? error = null;
            try
            {
                while (true)
                {
                    int n = await _socket.ReceiveAsync(_received.Writer.GetMemory(8192), SocketFlags.None).ConfigureAwait(false);
                    if (n == 0)
                        break;
                    _received.Writer.Advance(n);
                    if ((await _received.Writer.FlushAsync().ConfigureAwait(false)).IsCompleted)
                        break;
                }
            }
            catch (Exception e) when (e is SocketException or ObjectDisposedException)
            {
                error = e;
            }
            await _received.Writer.CompleteAsync(error).ConfigureAwait(false);
        }

        private async Task SendAsync()
        {
            try
            {
                while (true)
                {
                    var read = await _toSend.Reader.ReadAsync().ConfigureAwait(false);
                    foreach (var segment in read.Buffer)
                        await _socket.SendAsync(segment, SocketFlags.None).ConfigureAwait(false);
                    _toSend.Reader.AdvanceTo(read.Buffer.End);
                    if (read.IsCompleted)
                        break;
                }
                _socket.Shutdown(SocketShutdown.Send);
            }
            catch (Exception e) when (e is SocketException or ObjectDisposedException)
            {
                // reset or aborted: nothing more to send
            }
            await _toSend.Reader.CompleteAsync().ConfigureAwait(false);
        }
    }
}
