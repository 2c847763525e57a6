using System.Globalization;
using System.Numerics;
using Onload.Stack;
using Onload.Stack.Tcp;

namespace Onload.Driverlink;

/// <summary>
/// The stack's ONLOAD_* settings read from the environment (the README's settings table), for every program that
/// opens a stack: onload-run's, the sample programs and the managed API. A value that does not parse or is out of
/// range is refused with an <see cref="ArgumentException"/> naming the variable, never replaced by a default.
/// </summary>
public sealed record StackSettings
{
    /// <summary>The most rows a socket table has (its per-port lists index rows in 16 bits).</summary>
    private const int MaxSockets = 32766;

    /// <summary>The largest ring each way: a row's two rings and its records stay under 2 GiB.</summary>
    private const int MaxBuffer = 256 << 20;

    /// <summary>ONLOAD_TCP_SOCKETS: TCP rows (sockets, listeners, connections in TIME_WAIT) one stack holds.</summary>
    public int TcpSockets { get; init; } = DriverlinkSession.DefaultTcpConnections;

    /// <summary>ONLOAD_UDP_SOCKETS.</summary>
    public int UdpSockets { get; init; } = 256;

    /// <summary>ONLOAD_TCP_WMEM_MAX and ONLOAD_TCP_RMEM_MAX: the most a connection's send and receive buffers grow
    /// to (tcp_wmem and tcp_rmem's third value), rounded up to a power of two.</summary>
    public int TcpSendBufferMax { get; init; } = 4 << 20;
    public int TcpReceiveBufferMax { get; init; } = 4 << 20;

    /// <summary>ONLOAD_PACKET_BUFFERS and ONLOAD_RING_SIZE: asked of onload-driverd at attach; 0 takes its defaults.</summary>
    public int PacketBuffers { get; init; }
    public int RingSize { get; init; }

    public bool TcpSack { get; init; } = true;
    public bool TcpSyncookies { get; init; } = true;
    public CongestionControl TcpCongestion { get; init; } = CongestionControl.Cubic;

    /// <summary>The settings the environment gives; unset ones keep their defaults.</summary>
    public static StackSettings FromEnvironment()
    {
        var d = new StackSettings();
        string congestion = Environment.GetEnvironmentVariable("ONLOAD_TCP_CONGESTION") is { Length: > 0 } cc ? cc : "cubic";
        if (!NetStack.TryParseCongestionControl(congestion, out var algorithm))
            throw new ArgumentException($"ONLOAD_TCP_CONGESTION={congestion}: expected cubic or reno");
        return new StackSettings
        {
            TcpSockets = Int("ONLOAD_TCP_SOCKETS", d.TcpSockets, 1, MaxSockets),
            UdpSockets = Int("ONLOAD_UDP_SOCKETS", d.UdpSockets, 1, MaxSockets),
            TcpSendBufferMax = (int)BitOperations.RoundUpToPowerOf2((uint)Int("ONLOAD_TCP_WMEM_MAX", d.TcpSendBufferMax, 65536, MaxBuffer)),
            TcpReceiveBufferMax = (int)BitOperations.RoundUpToPowerOf2((uint)Int("ONLOAD_TCP_RMEM_MAX", d.TcpReceiveBufferMax, 65536, MaxBuffer)),
            PacketBuffers = Int("ONLOAD_PACKET_BUFFERS", d.PacketBuffers, 0, 1 << 20),
            RingSize = Int("ONLOAD_RING_SIZE", d.RingSize, 0, 1 << 16),
            TcpSack = Int("ONLOAD_TCP_SACK", 1, 0, 1) != 0,
            TcpSyncookies = Int("ONLOAD_TCP_SYNCOOKIES", 1, 0, 1) != 0,
            TcpCongestion = algorithm,
        };
    }

    /// <summary><paramref name="options"/> with these settings applied.</summary>
    public StackOptions ApplyTo(StackOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        return options with
        {
            TcpConnections = TcpSockets,
            UdpSockets = UdpSockets,
            TcpSendBufferBytes = TcpSendBufferMax,
            TcpReceiveBufferBytes = TcpReceiveBufferMax,
            TcpSack = TcpSack,
            TcpSyncookies = TcpSyncookies,
            TcpCongestionControl = TcpCongestion,
        };
    }

    private static int Int(string name, int fallback, int min, int max)
    {
        string? text = Environment.GetEnvironmentVariable(name);
        if (string.IsNullOrEmpty(text))
            return fallback;
        if (!int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out int v) || v < min || v > max)
            throw new ArgumentException($"{name}={text}: expected a whole number from {min} to {max}");
        return v;
    }
}
