using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using Onload.Stack.Wire;

namespace Onload.Sockets;

/// <summary>The stack's endpoints (<see cref="Ipv4Endpoint"/>, a value) and .NET's (<see cref="IPEndPoint"/>, an object).</summary>
internal static class EndPoints
{
    /// <summary>The stack's form of <paramref name="endPoint"/> without allocating; false for anything but IPv4
    /// (an IPv4-mapped IPv6 address counts as IPv4).</summary>
    public static bool TryToStack(IPEndPoint endPoint, out Ipv4Endpoint result)
    {
        result = default;
        var address = endPoint.Address;
        if (address.AddressFamily == AddressFamily.InterNetworkV6 && address.IsIPv4MappedToIPv6)
            address = address.MapToIPv4();
        if (address.AddressFamily != AddressFamily.InterNetwork)
            return false;
        Span<byte> four = stackalloc byte[4];
        if (!address.TryWriteBytes(four, out _))
            return false;
        result = new Ipv4Endpoint(Ipv4Address.Read(four), (ushort)endPoint.Port);
        return true;
    }

    public static IPAddress ToAddress(Ipv4Address address) =>
        // IPAddress(long) takes the four bytes in network order as they lie in memory (little-endian here).
        new(BinaryPrimitives.ReverseEndianness(address.Value));

    public static IPEndPoint ToEndPoint(Ipv4Endpoint endpoint) => new(ToAddress(endpoint.Address), endpoint.Port);
}

/// <summary>
/// The last <see cref="IPEndPoint"/> made for a peer: a program talking to one peer (the usual case) gets the same
/// object back for each datagram instead of a new one, so receiving allocates nothing.
/// </summary>
internal struct EndPointCache
{
    private Ipv4Endpoint _last;
    private IPEndPoint? _lastEndPoint;

    public IPEndPoint Get(Ipv4Endpoint endpoint)
    {
        if (_lastEndPoint is null || _last != endpoint)
        {
            _lastEndPoint = EndPoints.ToEndPoint(endpoint);
            _last = endpoint;
        }
        return _lastEndPoint;
    }
}
