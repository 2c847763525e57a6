using System.Buffers.Binary;
using System.Diagnostics;
using HdrHistogram;
using Onload.Stack;
using Onload.Stack.Wire;

namespace Onload.Apps.PingPong;

/// <summary>
/// TCP ping-pong over one connection with TCP_NODELAY, as <c>sockperf ping-pong --tcp</c> measures it: one message
/// of <see cref="ClientSettings.Size"/> bytes in flight, the reply read whole, half the round trip recorded. A TCP
/// stream has no message boundaries, so messages are framed by their size (sockperf's header carries it; the server
/// answers each with a message as long). Busy-polls, never sleeps, never allocates in the loop.
/// </summary>
/// <remarks>TCP loses nothing, so a message "lost" here is one whose reply took longer than the timeout; that reply
/// is read later and counted stale, and the stream stays in step because every reply has the same size.</remarks>
internal sealed class TcpPingPongClient : ILatencyRun
{
    private static readonly long CloseTicks = Stopwatch.Frequency;
    private readonly NetStack _stack;
    private readonly ClientSettings _settings;
    private readonly byte[] _tx;
    private readonly byte[] _rx;
    private readonly long _timeoutTicks;
    private int _socket = -1;
    private int _filled; // bytes of the reply in progress already in _rx
    private ulong _sequence;
    private volatile bool _stop;

    public TcpPingPongClient(NetStack stack, ClientSettings settings)
    {
        _stack = stack;
        _settings = settings;
        _tx = new byte[settings.Size];
        _rx = new byte[settings.Size];
        for (int i = 0; i < _tx.Length; i++)
            _tx[i] = (byte)('a' + i % 26);
        _timeoutTicks = settings.TimeoutNs * Stopwatch.Frequency / 1_000_000_000;
    }

    public LongHistogram Histogram { get; } = new(3_600_000_000_000L, 3);
    public long Sent { get; private set; }
    public long Lost { get; private set; }
    public long Stale { get; private set; }
    public long Errors { get; private set; }
    public int LastError { get; private set; }
    /// <summary>The connection failed (reset, closed by the peer): the run ended early.</summary>
    public bool Broken { get; private set; }
    public double MeasuredSeconds { get; private set; }

    public void Stop() => _stop = true;

    /// <summary>Connects, waiting for the handshake (at least 3 s: the first SYN may wait for ARP). Returns 0 or a
    /// negated errno.</summary>
    public int Open()
    {
        int c = TcpDial.Connect(_stack, _settings.Server, _settings.LocalPort, Math.Max(_timeoutTicks, 3 * Stopwatch.Frequency));
        if (c < 0)
            return c;
        _socket = c;
        return 0;
    }

    public Ipv4Endpoint LocalEndpoint => _stack.TcpLocalEndpoint(_socket);

    /// <summary>Closes the connection, waiting briefly for the peer to acknowledge our FIN.</summary>
    public void Close()
    {
        if (_socket >= 0)
            TcpDial.Close(_stack, _socket, CloseTicks);
        _socket = -1;
    }

    public long RunWarmup()
    {
        long replies = 0;
        for (int i = 0; i < _settings.Warmup && !_stop && !Broken; i++)
            if (PingOnce(out _))
                replies++;
        return replies;
    }

    public void RunMeasured()
    {
        long freq = Stopwatch.Frequency;
        long start = Stopwatch.GetTimestamp();
        long end = _settings.Seconds > 0 ? start + (long)(_settings.Seconds * freq) : long.MaxValue;
        long count = _settings.Count > 0 ? _settings.Count : long.MaxValue;
        long done = 0;
        long now = start;
        while (!_stop && !Broken && done < count && now < end)
        {
            if (PingOnce(out long rttTicks))
                Histogram.RecordValue(rttTicks * 1_000_000_000 / freq / 2);
            done++;
            now = Stopwatch.GetTimestamp();
        }
        MeasuredSeconds = (double)(now - start) / freq;
    }

    private void Fail(int errno)
    {
        Errors++;
        LastError = errno;
        Broken = true;
    }

    private bool PingOnce(out long rttTicks)
    {
        rttTicks = 0;
        ulong seq = ++_sequence;
        if (_settings.Sockperf)
            SockperfHeader.WritePongRequest(_tx, seq);
        else
            BinaryPrimitives.WriteUInt64BigEndian(_tx, seq);

        long t0 = Stopwatch.GetTimestamp();
        long deadline = t0 + _timeoutTicks;
        Sent++;
        // The whole message goes into the send ring (a message larger than the room left waits for ACKs).
        for (int off = 0; off < _tx.Length;)
        {
            int rc = _stack.TcpSend(_socket, _tx.AsSpan(off));
            if (rc >= 0)
                off += rc;
            else if (rc != -(int)Errno.EAGAIN)
            {
                Fail(rc);
                return false;
            }
            else
                _stack.Poll();
        }
        while (true)
        {
            _stack.Poll();
            while (true)
            {
                int n = _stack.TcpReceive(_socket, _rx.AsSpan(_filled));
                if (n == -(int)Errno.EAGAIN)
                    break;
                if (n <= 0)
                {
                    Fail(n == 0 ? -(int)Errno.ECONNRESET : n); // end of stream mid-run: the server went away
                    return false;
                }
                _filled += n;
                if (_filled < _rx.Length)
                    continue;
                _filled = 0;
                if (IsReplyTo(_rx, seq))
                {
                    rttTicks = Stopwatch.GetTimestamp() - t0;
                    return true;
                }
                Stale++;
            }
            if (Stopwatch.GetTimestamp() >= deadline)
            {
                Lost++;
                return false;
            }
        }
    }

    private bool IsReplyTo(Span<byte> reply, ulong seq)
    {
        if (!_settings.Sockperf)
            return BinaryPrimitives.ReadUInt64BigEndian(reply) == seq;
        if (!SockperfHeader.IsValid(reply))
            return false;
        var h = new SockperfHeader(reply);
        return h.Sequence == seq && !h.IsClient && h.MessageLength == (uint)reply.Length;
    }
}
