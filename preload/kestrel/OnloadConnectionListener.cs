using System.Buffers;
using System.Net;
using System.Net.Sockets;
using Microsoft.AspNetCore.Connections;
using Onload.Sockets;

namespace Onload.Kestrel;

/// <summary>Kestrel's view of one <see cref="IPipeListener"/>: each accepted connection becomes a
/// <see cref="OnloadConnectionContext"/>.</summary>
internal sealed class OnloadConnectionListener(IPipeListener listener, MemoryPool<byte> memoryPool) : IConnectionListener
{
    private int _unbound;

    public EndPoint EndPoint => listener.LocalEndPoint;

    /// <summary>The next connection, or null once unbound: Kestrel's signal that the accept loop is over.</summary>
    public async ValueTask<ConnectionContext?> AcceptAsync(CancellationToken cancellationToken = default)
    {
        if (Volatile.Read(ref _unbound) != 0)
            return null;
        while (true)
        {
            try
            {
                var connection = await listener.AcceptAsync(cancellationToken).ConfigureAwait(false);
                return new OnloadConnectionContext(connection, memoryPool);
            }
            catch (SocketException e) when (e.SocketErrorCode is SocketError.ConnectionReset or SocketError.ConnectionAborted)
            {
                // reset while in the accept queue (ECONNABORTED): the next one, as accept(2) callers do
            }
            catch (ObjectDisposedException) when (Volatile.Read(ref _unbound) != 0)
            {
                return null;
            }
            catch (OperationCanceledException) when (Volatile.Read(ref _unbound) != 0)
            {
                return null;
            }
        }
    }

    /// <summary>Stops listening; connections already accepted go on.</summary>
    public ValueTask UnbindAsync(CancellationToken cancellationToken = default)
    {
        if (Interlocked.Exchange(ref _unbound, 1) != 0)
            return ValueTask.CompletedTask;
        return listener.DisposeAsync();
    }

    public ValueTask DisposeAsync() => UnbindAsync();
}
