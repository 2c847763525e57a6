using System.Buffers.Binary;
using System.Diagnostics;
using System.Globalization;
using Onload.Stack;
using Onload.Stack.Wire;

namespace Onload.Apps.PingPong;

/// <summary>
/// Connection set-up rate, as netperf's TCP_CRR counts it: connect, send one request of
/// <see cref="ClientSettings.Size"/> bytes, read the reply of as many bytes, read on until the server closes (it closes
/// first, as an HTTP/1.0 server does, so TIME_WAIT stays on its side), close; then the next connection. One
/// connection at a time, busy-polling. Records each cycle's duration and the cycles per second.
/// </summary>
internal sealed class TcpConnectRateClient(NetStack stack, ClientSettings settings) : LatencyClient(stack, settings)
{
    private const int MaxConsecutiveErrors = 100;
    private readonly byte[] _request = Message(settings.Size);
    private readonly byte[] _reply = new byte[settings.Size];
    private ulong _sequence;
    private int _failuresInARow; // counted in the measured run only: the warm-up tries every cycle

    // Histogram: whole cycles (connect to close). Lost: cycles that did not finish within the timeout (their
    // connection is reset).
    public long Connections => Histogram.TotalCount;
    public double PerSecond => MeasuredSeconds > 0 ? Connections / MeasuredSeconds : 0;

    /// <summary>A server that fails this many connections in a row ends the measured run.</summary>
    protected override bool Ended => _failuresInARow >= MaxConsecutiveErrors;

    /// <summary>One whole cycle; true with its duration.</summary>
    protected override bool Step(out long cycleNs)
    {
        long t0 = Stopwatch.GetTimestamp();
        int rc = Cycle();
        cycleNs = Nanoseconds(Stopwatch.GetTimestamp() - t0);
        if (Measuring)
            _failuresInARow = rc == 0 ? 0 : _failuresInARow + 1;
        return rc == 0;
    }

    /// <summary>One connection: 0, or a negated errno (also counted).</summary>
    private int Cycle()
    {
        long deadline = Stopwatch.GetTimestamp() + TimeoutTicks;
        int c = TcpDial.Connect(Stack, Settings.Server, 0, TimeoutTicks);
        if (c < 0)
            return Count(c);
        BinaryPrimitives.WriteUInt64BigEndian(_request, ++_sequence);
        int rc = Exchange(c, deadline);
        if (rc == 0)
            Stack.TcpClose(c); // in CLOSE_WAIT: our FIN goes out and the row frees itself when it is acknowledged
        else
        {
            Stack.TcpSetLingerZero(c, true); // a stuck cycle ends with a RST, leaving nothing behind
            Stack.TcpClose(c);
        }
        return rc;
    }

    private int Exchange(int c, long deadline)
    {
        for (int off = 0; off < _request.Length;)
        {
            int rc = Stack.TcpSend(c, _request.AsSpan(off));
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
            int n = Stack.TcpReceive(c, _reply.AsSpan(filled));
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
        Stack.Poll();
        return Stopwatch.GetTimestamp() < deadline;
    }

    private int TimedOut()
    {
        Lost++;
        return Count(-(int)Errno.ETIMEDOUT);
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
        JsonResults.Write(path, label, j =>
        {
            j.WriteString("mode", "connect-rate");
            j.WriteString("protocol", "tcp");
            j.WriteString("vnic", vnic);
            j.WriteString("server", Settings.Server.ToString());
            j.WriteNumber("size", Settings.Size);
            j.WriteNumber("warmup", Settings.Warmup);
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
        });
    }
}
