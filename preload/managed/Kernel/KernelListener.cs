using System.IO.Pipelines;
using System.Net;
using System.Net.Sockets;

namespace Onload.Sockets;

/// <summary>A kernel listening socket.</summary>
internal sealed class KernelListener(Socket socket, PipeOptions pipeOptions) : IPipeListener
{
    private volatile bool _disposed;

    public IPEndPoint LocalEndPoint { get; } = (IPEndPoint)socket.LocalEndPoint!;

    public async ValueTask<IPipeConnection> AcceptAsync(CancellationToken cancellationToken = default)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        Socket accepted;
        try
        {
            accepted = await socket.AcceptAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (SocketException e) when (_disposed && e.SocketErrorCode == SocketError.OperationAborted)
        {
            throw new ObjectDisposedException(nameof(KernelListener));
        }
        return new KernelConnection(accepted, pipeOptions);
    }

    public ValueTask DisposeAsync()
    {
        _disposed = true;
        socket.Dispose();
        return ValueTask.CompletedTask;
    }
}
