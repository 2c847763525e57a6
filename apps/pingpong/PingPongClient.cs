using System.Buffers.Binary;
using System.Diagnostics;
using HdrHistogram;
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
internal sealed class PingPongClient : ILatencyRun
{
    private readonly NetStack _stack;
    private readonly ClientSettings _settings;
    private readonly byte[] _tx;
    private readonly byte[] _rx;
    private readonly long _timeoutTicks;
    private int _socket = -1;
    private ulong _sequence;
    private volatile bool _stop;

    public PingPongClient(NetStack stack, ClientSettings settings)
    {
        _stack = stack;
        _settings = settings;
        _tx = new byte[settings.Size];
        _rx = new byte[Math.Max(settings.Size, 2048)];
        for (int i = 0; i < _tx.Length; i++)
            _tx[i] = (byte)('a' + i % 26);
        _timeoutTicks = settings.TimeoutNs * Stopwatch.Frequency / 1_000_000_000;
    }

    /// <summary>Half round trips in nanoseconds. Up to an hour, 3 significant digits (0.1% resolution).</summary>
    public LongHistogram Histogram { get; } = new(3_600_000_000_000L, 3);

    public long Sent { get; private set; }
    public long Lost { get; private set; }
    /// <summary>Replies that came after their message had timed out (their sequence number is past).</summary>
    public long Stale { get; private set; }
    /// <summary>Errors from send or receive (e.g. ECONNREFUSED from an ICMP port unreachable).</summary>
    public long Errors { get; private set; }
    public int LastError { get; private set; }
    public long WarmupReplies { get; private set; }
    public double MeasuredSeconds { get; private set; }

    public void Stop() => _stop = true;

    /// <summary>Opens and connects the socket. Returns 0 or a negated errno.</summary>
    public int Open()
    {
        int s = _stack.UdpOpen();
        if (s < 0)
            return s;
        int rc = _stack.UdpBind(s, new Ipv4Endpoint(Ipv4Address.Any, _settings.LocalPort));
        if (rc == 0)
            rc = _stack.UdpConnect(s, _settings.Server);
        if (rc < 0)
        {
            _stack.UdpClose(s);
            return rc;
        }
        _socket = s;
        return 0;
    }

    public Ipv4Endpoint LocalEndpoint => new(_stack.Address, _stack.UdpLocalEndpoint(_socket).Port);

    /// <summary>Warm-up messages (not recorded; the first resolves the server's MAC). Returns the replies seen.</summary>
    public long RunWarmup()
    {
        for (int i = 0; i < _settings.Warmup && !_stop; i++)
            if (PingOnce(out _))
                WarmupReplies++;
        return WarmupReplies;
    }

    /// <summary>The measured run: until the count or the time is reached, or <see cref="Stop"/>.</summary>
    public void RunMeasured()
    {
        long freq = Stopwatch.Frequency;
        long start = Stopwatch.GetTimestamp();
        long end = _settings.Seconds > 0 ? start + (long)(_settings.Seconds * freq) : long.MaxValue;
        long count = _settings.Count > 0 ? _settings.Count : long.MaxValue;
        long done = 0;
        long now = start;
        while (!_stop && done < count && now < end)
        {
            if (PingOnce(out long rttTicks))
                Histogram.RecordValue(rttTicks * 1_000_000_000 / freq / 2);
            done++;
            now = Stopwatch.GetTimestamp();
        }
        MeasuredSeconds = (double)(now - start) / freq;
    }

    /// <summary>One message and its reply. True with the round trip in Stopwatch ticks, false when lost.</summary>
    private bool PingOnce(out long rttTicks)
    {
        ulong seq = ++_sequence;
        if (_settings.Sockperf)
            SockperfHeader.WritePongRequest(_tx, seq);
        else
            BinaryPrimitives.WriteUInt64BigEndian(_tx, seq);

        long t0 = Stopwatch.GetTimestamp();
        int rc = _stack.UdpSend(_socket, _tx);
        Sent++;
        if (rc < 0)
        {
            Errors++;
            LastError = rc;
        }
        long deadline = t0 + _timeoutTicks;
        while (true)
        {
            _stack.Poll();
            int n;
            while ((n = _stack.UdpReceiveFrom(_socket, _rx, out _)) != -(int)Errno.EAGAIN)
            {
                if (n < 0)
                {
                    Errors++;
                    LastError = n;
                    continue;
                }
                if (IsReplyTo(_rx.AsSpan(0, n), seq))
                {
                    rttTicks = Stopwatch.GetTimestamp() - t0;
                    return true;
                }
                Stale++;
            }
            if (Stopwatch.GetTimestamp() >= deadline)
            {
                Lost++;
                rttTicks = 0;
                return false;
            }
        }
    }

    private bool IsReplyTo(Span<byte> reply, ulong seq)
    {
        if (reply.Length != _settings.Size)
            return false;
        if (!_settings.Sockperf)
            return BinaryPrimitives.ReadUInt64BigEndian(reply) == seq;
        if (!SockperfHeader.IsValid(reply))
            return false;
        var h = new SockperfHeader(reply);
        // sockperf's server answers with the client flag cleared and everything else as sent.
        return h.Sequence == seq && !h.IsClient;
    }
}
