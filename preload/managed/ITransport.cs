using System.IO.Pipelines;
using System.Net;

namespace Onload.Sockets;

/// <summary>
/// What a program needs of a network transport: TCP listeners and connections as pipes, UDP sockets. Implemented by
/// <see cref="OnloadStack"/> (the user-level stack) and <see cref="KernelTransport"/> (kernel sockets through
/// Pipelines.Sockets.Unofficial), so a program switches transport where it makes the one it uses.
/// </summary>
public interface ITransport : IAsyncDisposable
{
    /// <summary>Listens on <paramref name="local"/> (port 0: an ephemeral port; see the listener's LocalEndPoint).</summary>
    ValueTask<IPipeListener> ListenAsync(IPEndPoint local, int backlog = 512, CancellationToken cancellationToken = default);

    /// <summary>Connects to <paramref name="remote"/>; throws <see cref="System.Net.Sockets.SocketException"/> with
    /// the error Linux gives (ConnectionRefused, TimedOut, HostUnreachable...).</summary>
    ValueTask<IPipeConnection> ConnectAsync(IPEndPoint remote, CancellationToken cancellationToken = default);

    /// <summary>A UDP socket bound to <paramref name="local"/> (port 0: an ephemeral port).</summary>
    ValueTask<IDatagramSocket> BindUdpAsync(IPEndPoint local, CancellationToken cancellationToken = default);
}

/// <summary>A TCP listener. Disposing it stops listening; a pending accept then throws ObjectDisposedException.</summary>
public interface IPipeListener : IAsyncDisposable
{
    IPEndPoint LocalEndPoint { get; }

    ValueTask<IPipeConnection> AcceptAsync(CancellationToken cancellationToken = default);
}

/// <summary>
/// A TCP connection as a pair of pipes. <see cref="IDuplexPipe.Input"/> completes at the peer's FIN (or with a
/// SocketException at a reset); completing <see cref="IDuplexPipe.Output"/> sends FIN once what was written is sent.
/// Disposing closes the connection (FIN, or RST with unread data, as close(2)); <see cref="Abort"/> resets it.
/// </summary>
public interface IPipeConnection : IDuplexPipe, IAsyncDisposable
{
    IPEndPoint LocalEndPoint { get; }

    IPEndPoint RemoteEndPoint { get; }

    void Abort();
}

/// <summary>A UDP socket: whole datagrams, sent and received without allocating per datagram.</summary>
public interface IDatagramSocket : IAsyncDisposable
{
    IPEndPoint LocalEndPoint { get; }

    /// <summary>Sends one datagram; returns its length.</summary>
    ValueTask<int> SendToAsync(ReadOnlyMemory<byte> datagram, IPEndPoint remote, CancellationToken cancellationToken = default);

    /// <summary>Receives one datagram into <paramref name="buffer"/> (truncated to it, as recvfrom).</summary>
    ValueTask<DatagramReceived> ReceiveFromAsync(Memory<byte> buffer, CancellationToken cancellationToken = default);
}

/// <summary>What <see cref="IDatagramSocket.ReceiveFromAsync"/> received: the bytes copied and the sender.</summary>
public readonly record struct DatagramReceived(int Length, IPEndPoint RemoteEndPoint);
