using System.Buffers.Binary;
using System.Diagnostics;
using Onload.Stack;
using Onload.Stack.Wire;

namespace Onload.Apps.PingPong;

/// <summary>What the client measures and how.</summary>
internal sealed record ClientSettings
{
    public required Ipv4Endpoint Server { get; init; }
    /// <summary>Bytes per message, UDP payload or TCP message (sockperf's <c>-m</c>: the whole sockperf message).</summary>
    public int Size { get; init; } = 64;
    public int Warmup { get; init; } = 1000;
    /// <summary>Measured messages; 0 = no limit (then <see cref="Seconds"/> ends the run).</summary>
    public long Count { get; init; }
    /// <summary>Measuring time; 0 = no limit (then <see cref="Count"/> ends the run).</summary>
    public double Seconds { get; init; }
    /// <summary>How long one message waits for its reply before it counts as lost.</summary>
    public long TimeoutNs { get; init; } = 1_000_000_000;
    public bool Sockperf { get; init; }
    public ushort LocalPort { get; init; }
    /// <summary>One TCP connection with TCP_NODELAY instead of UDP datagrams.</summary>
    public bool Tcp { get; init; }
}

/// <summary>
/// One message in flight at a time: send it, busy-poll the stack until its reply arrives (or the timeout passes:
/// lost, and the next message goes out), record half the round trip. Never sleeps, never allocates in the loop.
/// </summary>
internal sealed class PingPongClient(NetStack stack, ClientSettings settings) : LatencyClient(stack, settings)
{
    private readonly byte[] _tx = Message(settings.Size);
    private readonly byte[] _rx = new byte[Math.Max(settings.Size, 2048)];
    private int _socket = -1;
    private ulong _sequence;

    public long Sent { get; private set; }

    /// <summary>Opens and connects the socket. Returns 0 or a negated errno.</summary>
    public int Open()
    {
        int s = Stack.UdpOpen();
        if (s < 0)
            return s;
        int rc = Stack.UdpBind(s, new Ipv4Endpoint(Ipv4Address.Any, Settings.LocalPort));
        if (rc == 0)
            rc = Stack.UdpConnect(s, Settings.Server);
        if (rc < 0)
        {
            Stack.UdpClose(s);
            return rc;
        }
        _socket = s;
        return 0;
    }

    public Ipv4Endpoint LocalEndpoint => new(Stack.Address, Stack.UdpLocalEndpoint(_socket).Port);

    /// <summary>One message and its reply. True with half the round trip, false when lost.</summary>
    protected override bool Step(out long halfRttNs)
    {
        ulong seq = ++_sequence;
        WriteRequest(_tx, seq);

        long t0 = Stopwatch.GetTimestamp();
        int rc = Stack.UdpSend(_socket, _tx);
        Sent++;
        if (rc < 0)
            Count(rc);
        long deadline = t0 + TimeoutTicks;
        while (true)
        {
            Stack.Poll();
            int n;
            while ((n = Stack.UdpReceiveFrom(_socket, _rx, out _)) != -(int)Errno.EAGAIN)
            {
                if (n < 0)
                {
                    Count(n);
                    continue;
                }
                if (IsReplyTo(_rx.AsSpan(0, n), seq))
                {
                    halfRttNs = Nanoseconds(Stopwatch.GetTimestamp() - t0) / 2;
                    return true;
                }
                Stale++;
            }
            if (Stopwatch.GetTimestamp() >= deadline)
            {
                Lost++;
                halfRttNs = 0;
                return false;
            }
        }
    }

    private bool IsReplyTo(Span<byte> reply, ulong seq)
    {
        if (reply.Length != Settings.Size)
            return false;
        if (!Settings.Sockperf)
            return BinaryPrimitives.ReadUInt64BigEndian(reply) == seq;
        if (!SockperfHeader.IsValid(reply))
            return false;
        var h = new SockperfHeader(reply);
        // sockperf's server answers with the client flag cleared and everything else as sent.
        return h.Sequence == seq && !h.IsClient;
    }
}
