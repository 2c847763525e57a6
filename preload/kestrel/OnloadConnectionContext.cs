using System.Buffers;
using System.IO.Pipelines;
using System.Net;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Connections.Features;
using Microsoft.AspNetCore.Http.Features;
using Onload.Sockets;

namespace Onload.Kestrel;

/// <summary>
/// One accepted connection as Kestrel sees it. Its <see cref="Transport"/> is the <see cref="IPipeConnection"/>'s own
/// pair of pipes, so Kestrel's reads and writes reach the transport with nothing in between: this class allocates
/// once per connection (itself, its feature table, its token source) and never per operation.
/// </summary>
/// <remarks>
/// <see cref="ConnectionClosed"/> fires once, when Kestrel aborts the connection or disposes of it (after it has
/// completed both pipes). Kestrel's socket transport also fires it when its receive loop meets the peer's FIN or
/// reset; an <see cref="IPipeConnection"/> says that only to a reader of its Input, so here a request whose handler
/// does not read learns of a departed client when it writes.
/// The features are those a transport owes Kestrel (id, transport, items, lifetime, end points, memory pool);
/// Kestrel adds its own (heartbeat, completion, lifetime notification) to the same table.
/// </remarks>
internal sealed class OnloadConnectionContext : ConnectionContext,
    IConnectionIdFeature, IConnectionTransportFeature, IConnectionItemsFeature, IConnectionLifetimeFeature,
    IConnectionEndPointFeature, IMemoryPoolFeature
{
    private readonly IPipeConnection _connection;
    private readonly CancellationTokenSource _closed = new();
    private readonly FeatureCollection _features = new(initialCapacity: 10);
    private IDuplexPipe _transport;
    private string? _connectionId;
    private IDictionary<object, object?>? _items;
    private int _closedFired;
    private int _disposed;

    public OnloadConnectionContext(IPipeConnection connection, MemoryPool<byte> memoryPool)
    {
        _connection = connection;
        MemoryPool = memoryPool;
        _transport = connection;
        LocalEndPoint = connection.LocalEndPoint;
        RemoteEndPoint = connection.RemoteEndPoint;
        ConnectionClosed = _closed.Token;
        _features.Set<IConnectionIdFeature>(this);
        _features.Set<IConnectionTransportFeature>(this);
        _features.Set<IConnectionItemsFeature>(this);
        _features.Set<IConnectionLifetimeFeature>(this);
        _features.Set<IConnectionEndPointFeature>(this);
        _features.Set<IMemoryPoolFeature>(this);
    }

    public override string ConnectionId
    {
        get => _connectionId ??= ConnectionIds.Next();
        set => _connectionId = value;
    }

    public override IFeatureCollection Features => _features;

    public override IDictionary<object, object?> Items
    {
        get => _items ??= new ConnectionItems();
        set => _items = value;
    }

    public override IDuplexPipe Transport
    {
        get => _transport;
        set => _transport = value;
    }

    /// <summary>The pool Kestrel takes its own buffers from (response data written before the headers, and data
    /// written while a flush waits): the factory's, which is also the pipes' for a stack it opened.</summary>
    public MemoryPool<byte> MemoryPool { get; }

    public override CancellationToken ConnectionClosed { get; set; }

    public override EndPoint? LocalEndPoint { get; set; }

    public override EndPoint? RemoteEndPoint { get; set; }

    /// <summary>Resets the connection (RST), as Kestrel's socket transport does on abort, and fires ConnectionClosed.</summary>
    public override void Abort(ConnectionAbortedException abortReason)
    {
        _connection.Abort();
        // Off the caller's thread, as Kestrel's socket transport does: the callbacks (request abort) may take locks
        // the aborting thread holds.
        if (Interlocked.Exchange(ref _closedFired, 1) == 0)
            ThreadPool.UnsafeQueueUserWorkItem(static state => state.CancelClosed(), this, preferLocal: false);
    }

    /// <summary>
    /// Completes both pipes on the application's side (Kestrel has normally done so already; again is harmless),
    /// then closes the connection: FIN once what was written is sent, or RST with unread data, as close(2).
    /// </summary>
    public override async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
            return;
        await _connection.Input.CompleteAsync().ConfigureAwait(false);
        await _connection.Output.CompleteAsync().ConfigureAwait(false);
        try
        {
            await _connection.DisposeAsync().ConfigureAwait(false);
        }
        finally
        {
            if (Interlocked.Exchange(ref _closedFired, 1) == 0)
                CancelClosed();
        }
    }

    // The source is never disposed: it has no timer, and a registration made after the connection closed must still
    // see it cancelled rather than throw.
    private void CancelClosed() => _closed.Cancel();

    /// <summary>Connection ids unique within the process: a per-process random prefix and a counter.</summary>
    private static class ConnectionIds
    {
        private static readonly string Prefix = Convert.ToHexString(BitConverter.GetBytes(Random.Shared.Next()));
        private static long _last;

        public static string Next()
        {
            long n = Interlocked.Increment(ref _last);
            return string.Create(null, stackalloc char[32], $"{Prefix}:{n:X8}");
        }
    }
}
