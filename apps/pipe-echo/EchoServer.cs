using System.Net;
using Onload.Sockets;

namespace Onload.Apps.PipeEcho;

/// <summary>The echo itself, knowing only <see cref="ITransport"/>: whatever carries it, the code is the same.</summary>
internal sealed class EchoServer(ITransport transport)
{
    private readonly List<IPipeListener> _listeners = [];
    private readonly List<IDatagramSocket> _sockets = [];
    private long _connections;
    private long _tcpBytes;
    private long _datagrams;

    public long Connections => Interlocked.Read(ref _connections);

    public long TcpBytes => Interlocked.Read(ref _tcpBytes);

    public long Datagrams => Interlocked.Read(ref _datagrams);

    public async Task ListenAsync(int port, CancellationToken cancellationToken) =>
        _listeners.Add(await transport.ListenAsync(new IPEndPoint(IPAddress.Any, port), cancellationToken: cancellationToken));

    public async Task BindUdpAsync(int port, CancellationToken cancellationToken) =>
        _sockets.Add(await transport.BindUdpAsync(new IPEndPoint(IPAddress.Any, port), cancellationToken));

    /// <summary>Serves until <paramref name="cancellationToken"/> is cancelled, then closes everything.</summary>
    public async Task RunAsync(CancellationToken cancellationToken)
    {
        var loops = _listeners.Select(l => AcceptLoopAsync(l, cancellationToken))
            .Concat(_sockets.Select(s => UdpLoopAsync(s, cancellationToken))).ToArray();
        await Task.WhenAll(loops).ConfigureAwait(false);
        foreach (var l in _listeners)
            await l.DisposeAsync().ConfigureAwait(false);
        foreach (var s in _sockets)
            await s.DisposeAsync().ConfigureAwait(false);
    }

    private async Task AcceptLoopAsync(IPipeListener listener, CancellationToken cancellationToken)
    {
        var connections = new List<Task>();
        try
        {
            while (true)
            {
                var connection = await listener.AcceptAsync(cancellationToken).ConfigureAwait(false);
                Interlocked.Increment(ref _connections);
                connections.RemoveAll(t => t.IsCompleted);
                connections.Add(EchoAsync(connection));
            }
        }
        catch (OperationCanceledException)
        {
        }
        await Task.WhenAll(connections).ConfigureAwait(false);
    }

    /// <summary>Input to Output until the peer's FIN, then our FIN and close.</summary>
    private async Task EchoAsync(IPipeConnection connection)
    {
        await using (connection)
        {
            try
            {
                while (true)
                {
                    var result = await connection.Input.ReadAsync().ConfigureAwait(false);
                    foreach (var segment in result.Buffer)
                        await connection.Output.WriteAsync(segment).ConfigureAwait(false);
                    Interlocked.Add(ref _tcpBytes, result.Buffer.Length);
                    connection.Input.AdvanceTo(result.Buffer.End);
                    if (result.IsCompleted)
                        break;
                }
                await connection.Output.CompleteAsync().ConfigureAwait(false);
            }
            catch (Exception e) when (e is IOException or System.Net.Sockets.SocketException)
            {
                Console.Error.WriteLine($"onload-pipe-echo: {connection.RemoteEndPoint}: {e.Message}");
            }
        }
    }

    private async Task UdpLoopAsync(IDatagramSocket socket, CancellationToken cancellationToken)
    {
        var buffer = new byte[65536];
        try
        {
            while (true)
            {
                var received = await socket.ReceiveFromAsync(buffer, cancellationToken).ConfigureAwait(false);
                await socket.SendToAsync(buffer.AsMemory(0, received.Length), received.RemoteEndPoint, cancellationToken).ConfigureAwait(false);
                Interlocked.Increment(ref _datagrams);
            }
        }
        catch (OperationCanceledException)
        {
        }
    }
}
