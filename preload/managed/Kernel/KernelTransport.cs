using System.IO.Pipelines;
using System.Net;
using System.Net.Sockets;
using Pipelines.Sockets.Unofficial;

namespace Onload.Sockets;

/// <summary>
/// The kernel's sockets as a <see cref="ITransport"/>: connections are Pipelines.Sockets.Unofficial's
/// <see cref="SocketConnection"/>, datagrams go through a Socket's non-allocating SocketAddress overloads. The same
/// shape as <see cref="OnloadStack"/>, so a program switches transport by making the other one.
/// Sockets are made on the calling thread (so in its network namespace).
/// </summary>
public sealed class KernelTransport : ITransport
{
    private readonly PipeOptions _pipeOptions;

    /// <param name="pipeOptions">The connections' pipe options (Pipelines' defaults when null).</param>
    public KernelTransport(PipeOptions? pipeOptions = null) => _pipeOptions = pipeOptions ?? PipeOptions.Default;

    public ValueTask<IPipeListener> ListenAsync(IPEndPoint local, int backlog = 512, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(local);
        cancellationToken.ThrowIfCancellationRequested();
        var socket = new Socket(local.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            SocketConnection.SetRecommendedServerOptions(socket); // TCP_NODELAY, inherited by accepted sockets
            if (local.Address.Equals(IPAddress.IPv6Any))
                socket.DualMode = true; // [::] takes IPv4 clients too, as Kestrel's own sockets do for http://*
            socket.Bind(local);
            socket.Listen(backlog);
        }
        catch
        {
            socket.Dispose();
            throw;
        }
        return ValueTask.FromResult<IPipeListener>(new KernelListener(socket, _pipeOptions));
    }

    public async ValueTask<IPipeConnection> ConnectAsync(IPEndPoint remote, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(remote);
        var socket = new Socket(remote.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            SocketConnection.SetRecommendedClientOptions(socket);
            await socket.ConnectAsync(remote, cancellationToken).ConfigureAwait(false);
        }
        catch
        {
            socket.Dispose();
            throw;
        }
        return new KernelConnection(socket, _pipeOptions);
    }

    public ValueTask<IDatagramSocket> BindUdpAsync(IPEndPoint local, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(local);
        cancellationToken.ThrowIfCancellationRequested();
        var socket = new Socket(local.AddressFamily, SocketType.Dgram, ProtocolType.Udp);
        try
        {
            socket.Bind(local);
        }
        catch
        {
            socket.Dispose();
            throw;
        }
        return ValueTask.FromResult<IDatagramSocket>(new KernelUdpSocket(socket));
    }

    /// <summary>Nothing to release: each listener, connection and socket is disposed on its own.</summary>
    public ValueTask DisposeAsync() => ValueTask.CompletedTask;
}
