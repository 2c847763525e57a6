using System.Net;
using System.Net.Sockets;

namespace Onload.Sockets;

/// <summary>
/// A kernel UDP socket through Socket's SocketAddress overloads (no EndPoint serialised per datagram): the last
/// destination's and the last sender's addresses are kept while they repeat, so neither direction allocates per
/// datagram beyond what the runtime's socket engine does.
/// </summary>
internal sealed class KernelUdpSocket : IDatagramSocket
{
    private readonly Socket _socket;
    private readonly SocketAddress _received;
    private IPEndPoint? _lastDestination;
    private SocketAddress? _lastDestinationAddress;
    private SocketAddress? _lastSenderAddress;
    private IPEndPoint? _lastSender;

    public KernelUdpSocket(Socket socket)
    {
        _socket = socket;
        LocalEndPoint = (IPEndPoint)socket.LocalEndPoint!;
        _received = new SocketAddress(socket.AddressFamily);
    }

    public IPEndPoint LocalEndPoint { get; }

    public ValueTask<int> SendToAsync(ReadOnlyMemory<byte> datagram, IPEndPoint remote, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(remote);
        if (!ReferenceEquals(remote, _lastDestination) && !remote.Equals(_lastDestination))
        {
            _lastDestinationAddress = remote.Serialize();
            _lastDestination = remote;
        }
        return _socket.SendToAsync(datagram, SocketFlags.None, _lastDestinationAddress!, cancellationToken);
    }

    // Pooled: an async method's box would otherwise be allocated for each datagram that has to be waited for.
    [System.Runtime.CompilerServices.AsyncMethodBuilder(typeof(System.Runtime.CompilerServices.PoolingAsyncValueTaskMethodBuilder<>))]
    public async ValueTask<DatagramReceived> ReceiveFromAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        int n = await _socket.ReceiveFromAsync(buffer, SocketFlags.None, _received, cancellationToken).ConfigureAwait(false);
        if (_lastSender is null || !_received.Equals(_lastSenderAddress))
        {
            _lastSender = (IPEndPoint)new IPEndPoint(IPAddress.Any, 0).Create(_received);
            _lastSenderAddress = new SocketAddress(_received.Family, _received.Size);
            _received.Buffer.CopyTo(_lastSenderAddress.Buffer);
        }
        return new DatagramReceived(n, _lastSender);
    }

    public ValueTask DisposeAsync()
    {
        _socket.Dispose();
        return ValueTask.CompletedTask;
    }
}
