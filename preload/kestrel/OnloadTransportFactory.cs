using System.Buffers;
using System.Net;
using System.Net.Sockets;
using Microsoft.AspNetCore.Connections;
using Microsoft.Extensions.Options;
using Onload.Sockets;

namespace Onload.Kestrel;

/// <summary>
/// Kestrel's transport factory over an <see cref="ITransport"/>. It binds IP end points only
/// (<see cref="CanBind"/>): Unix sockets and named pipes stay with Kestrel's own transports. A transport it made from
/// options (the stack) is made at the first bind, so a bad interface fails the server's start, and is disposed of
/// with the host; a transport it was given stays its owner's.
/// </summary>
public sealed class OnloadTransportFactory : IConnectionListenerFactory, IConnectionListenerFactorySelector, IAsyncDisposable
{
    private readonly OnloadTransportOptions _options;
    private readonly SemaphoreSlim _opening = new(1, 1);
    private readonly MemoryPool<byte> _memoryPool;
    private ITransport? _transport;
    private bool _owned;

    /// <param name="options">Which transport.</param>
    /// <param name="memoryPools">Kestrel's pool maker (the one its socket transport uses); without it the shared pool.</param>
    public OnloadTransportFactory(IOptions<OnloadTransportOptions> options, IMemoryPoolFactory<byte>? memoryPools = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        _options = options.Value;
        _options.Validate();
        _memoryPool = memoryPools?.Create(new MemoryPoolOptions { Owner = "onload" }) ?? MemoryPool<byte>.Shared;
    }

    public bool CanBind(EndPoint endpoint) => endpoint is IPEndPoint;

    public async ValueTask<IConnectionListener> BindAsync(EndPoint endpoint, CancellationToken cancellationToken = default)
    {
        if (endpoint is not IPEndPoint ip)
            throw new NotSupportedException($"{endpoint.GetType().Name} {endpoint}: the Onload transport binds IP end points only");
        var transport = await TransportAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            return new OnloadConnectionListener(await transport.ListenAsync(ip, cancellationToken: cancellationToken).ConfigureAwait(false), _memoryPool);
        }
        catch (SocketException e) when (e.SocketErrorCode == SocketError.AddressAlreadyInUse)
        {
            // Kestrel's own words for a port in use.
            throw new AddressInUseException(e.Message, e);
        }
        // Anything else as the transport threw it: http://*:PORT binds [::] first and falls back to 0.0.0.0 on a
        // SocketException (AddressFamilyNotSupported from an IPv4-only stack, as from a kernel without IPv6).
    }

    public async ValueTask DisposeAsync()
    {
        if (_owned && _transport is { } t)
            await t.DisposeAsync().ConfigureAwait(false);
        _transport = null;
        _opening.Dispose();
        if (_memoryPool != MemoryPool<byte>.Shared)
            _memoryPool.Dispose();
    }

    private async ValueTask<ITransport> TransportAsync(CancellationToken cancellationToken)
    {
        if (Volatile.Read(ref _transport) is { } ready)
            return ready;
        await _opening.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            if (_transport is null)
            {
                _owned = _options.Transport is null;
                _transport = _options.Transport ?? OnloadTransports.Open(_options, _memoryPool);
            }
            return _transport;
        }
        finally
        {
            _opening.Release();
        }
    }
}
