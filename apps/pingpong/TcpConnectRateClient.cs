using System.Buffers.Binary;
using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using HdrHistogram;
using Onload.Stack;
using Onload.Stack.Wire;

namespace Onload.Apps.PingPong;

/// <summary>
/// Connection set-up rate, as netperf's TCP_CRR counts it: connect, send one request of
/// <see cref="ClientSettings.Size"/> bytes, read the reply of as many bytes, read on until the server closes (it closes
/// first, as an HTTP/1.0 server does, so TIME_WAIT stays on its side), close; then the next connection. One
/// connection at a time, busy-polling. Records each cycle's duration and the cycles per second.
/// </summary>
internal sealed class TcpConnectRateClient : ILatencyRun
{
    private const int MaxConsecutiveErrors = 100;
    private readonly NetStack _stack;
    private readonly ClientSettings _settings;
    private readonly byte[] _request;
    private readonly byte[] _reply;
    private readonly long _timeoutTicks;
    private ulong _sequence;
    private volatile bool _stop;

    public TcpConnectRateClient(NetStack stack, ClientSettings settings)
    {
        _stack = stack;
        _settings = settings;
        _request = new byte[settings.Size];
        _reply = new byte[settings.Size];
        for (int i = 0; i < _request.Length; i++)
            _request[i] = (byte)('a' + i % 26);
        _timeoutTicks = settings.TimeoutNs * Stopwatch.Frequency / 1_000_000_000;
    }

    /// <summary>Whole cycles (connect to close) in nanoseconds.</summary>
    public LongHistogram Histogram { get; } = new(3_600_000_000_000L, 3);
    public long Connections => Histogram.TotalCount;
    /// <summary>Cycles that did not finish within the timeout (their connection is reset).</summary>
    public long Lost { get; private set; }
    public long Stale => 0;
    public long Errors { get; private set; }
    public int LastError { get; private set; }
    public double MeasuredSeconds { get; private set; }
    public double PerSecond => MeasuredSeconds > 0 ? Connections / MeasuredSeconds : 0;

    public void Stop() => _stop = true;

    /// <summary>Warm-up cycles, not recorded (the first resolves the server's MAC). Returns how many completed.</summary>
    public long RunWarmup()
    {
        long ok = 0;
        for (int i = 0; i < _settings.Warmup && !_stop; i++)
            if (Cycle() == 0)
                ok++;
        return ok;
    }

    public void RunMeasured()
    {
        long freq = Stopwatch.Frequency;
        long start = Stopwatch.GetTimestamp();
        long end = _settings.Seconds > 0 ? start + (long)(_settings.Seconds * freq) : long.MaxValue;
        long count = _settings.Count > 0 ? _settings.Count : long.MaxValue;
        long done = 0;
        int consecutiveErrors = 0;
        long now = start;
        while (!_stop && done < count && now < end && consecutiveErrors < MaxConsecutiveErrors)
        {
            long t0 = now;
            int rc = Cycle();
            now = Stopwatch.GetTimestamp();
            done++;
            if (rc == 0)
            {
                Histogram.RecordValue((now - t0) * 1_000_000_000 / freq);
                consecutiveErrors = 0;
            }
            else
                consecutiveErrors++;
        }
        MeasuredSeconds = (double)(now - start) / freq;
    }

    /// <summary>One connection: 0, or a negated errno (also counted).</summary>
    private int Cycle()
    {
        long deadline = Stopwatch.GetTimestamp() + _timeoutTicks;
        int c = TcpDial.Connect(_stack, _settings.Server, 0, _timeoutTicks);
        if (c < 0)
            return Count(c);
        BinaryPrimitives.WriteUInt64BigEndian(_request, ++_sequence);
        int rc = Exchange(c, deadline);
        if (rc == 0)
            _stack.TcpClose(c); // in CLOSE_WAIT: our FIN goes out and the row frees itself when it is acknowledged
        else
        {
            _stack.TcpSetLingerZero(c, true); // a stuck cycle ends with a RST, leaving nothing behind
            _stack.TcpClose(c);
        }
        return rc;
    }

    private int Exchange(int c, long deadline)
    {
        for (int off = 0; off < _request.Length;)
        {
            int rc = _stack.TcpSend(c, _request.AsSpan(off));
            if (rc >= 0)
                off += rc;
            else if (rc != -(int)Errno.EAGAIN)
                return Count(rc);
            if (!Wait(deadline))
                return TimedOut();
        }
        // The reply, then the end of stream (an empty span asks only whether the FIN has come).
        int filled = 0;
        while (true)
        {
            int n = _stack.TcpReceive(c, _reply.AsSpan(filled));
            if (n > 0)
            {
                filled += n;
                continue;
            }
            if (n == 0)
                return filled == _reply.Length ? 0 : Count(-(int)Errno.ECONNRESET); // closed before the whole reply
            if (n != -(int)Errno.EAGAIN)
                return Count(n);
            if (!Wait(deadline))
                return TimedOut();
        }
    }

    private bool Wait(long deadline)
    {
        _stack.Poll();
        return Stopwatch.GetTimestamp() < deadline;
    }

    private int TimedOut()
    {
        Lost++;
        return Count(-(int)Errno.ETIMEDOUT);
    }

    private int Count(int errno)
    {
        Errors++;
        LastError = errno;
        return errno;
    }

    public void Print(TextWriter w)
    {
        var s = LatencySummary.From(Histogram);
        static string F(double v) => v.ToString("0.0", CultureInfo.InvariantCulture);
        w.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"connect-request-close: {Connections} connections in {MeasuredSeconds:0.000} s = {PerSecond:0} per second; errors {Errors} (timed out {Lost})")
            + (LastError != 0 ? $", last {(Errno)(-LastError)}" : ""));
        w.WriteLine($"one connection (us): min {F(s.Min)}  median {F(s.Median)}  p99 {F(s.P99)}  p99.9 {F(s.P999)}  max {F(s.Max)}");
        w.Flush();
    }

    public void WriteJson(string path, string? label, string vnic)
    {
        var s = LatencySummary.From(Histogram);
        using var stream = File.Create(path);
        using var j = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true });
        j.WriteStartObject();
        if (label != null)
            j.WriteString("label", label);
        j.WriteString("tool", "onload-pingpong");
        j.WriteString("mode", "connect-rate");
        j.WriteString("protocol", "tcp");
        j.WriteString("vnic", vnic);
        j.WriteString("server", _settings.Server.ToString());
        j.WriteNumber("size", _settings.Size);
        j.WriteNumber("warmup", _settings.Warmup);
        j.WriteNumber("seconds", Math.Round(MeasuredSeconds, 3));
        j.WriteNumber("connections", Connections);
        j.WriteNumber("per_second", Math.Round(PerSecond, 1));
        j.WriteNumber("errors", Errors);
        j.WriteNumber("timed_out", Lost);
        j.WriteString("unit", "us");
        j.WriteNumber("median", Math.Round(s.Median, 3));
        j.WriteNumber("p99", Math.Round(s.P99, 3));
        j.WriteNumber("p99_9", Math.Round(s.P999, 3));
        j.WriteNumber("max", Math.Round(s.Max, 3));
        j.WriteEndObject();
    }
}
