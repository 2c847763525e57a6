using System.Diagnostics;
using System.Globalization;
using Onload.Stack;
using Onload.Stack.Wire;

namespace Onload.Apps.PingPong;

/// <summary>
/// Single-connection bulk throughput: writes as fast as the windows allow for the measuring time, then shuts down
/// its side and waits for the sink to close (a sink such as <c>socat -u TCP-LISTEN:P /dev/null</c> closes once it
/// has read everything), so the figure counts only bytes the peer's application has read.
/// </summary>
internal sealed class TcpStreamClient(NetStack stack, Ipv4Endpoint server, double seconds, ushort localPort)
{
    private static readonly long DrainTicks = 30 * Stopwatch.Frequency;
    private readonly byte[] _chunk = new byte[64 * 1024];
    private volatile bool _stop;

    public long Bytes { get; private set; }
    /// <summary>From the first write to the sink's end of stream.</summary>
    public double Seconds { get; private set; }
    /// <summary>From the first write to the last (what the sender saw; the sink's figure is <see cref="Seconds"/>).</summary>
    public double WritingSeconds { get; private set; }
    public long Errors { get; private set; }
    public int LastError { get; private set; }
    /// <summary>The sink closed after reading everything (else the figure is only what was written).</summary>
    public bool Confirmed { get; private set; }
    public Ipv4Endpoint LocalEndpoint { get; private set; }

    public void Stop() => _stop = true;

    /// <summary>Connects and streams. Returns 0, or a negated errno if the connection could not be made.</summary>
    public int Run()
    {
        for (int i = 0; i < _chunk.Length; i++)
            _chunk[i] = (byte)('a' + i % 26);
        int c = TcpDial.Connect(stack, server, localPort, 3 * Stopwatch.Frequency);
        if (c < 0)
            return c;
        LocalEndpoint = stack.TcpLocalEndpoint(c);
        long freq = Stopwatch.Frequency;
        long start = Stopwatch.GetTimestamp();
        long end = start + (long)(seconds * freq);
        long now = start;
        while (!_stop && now < end)
        {
            stack.Poll();
            int rc;
            while ((rc = stack.TcpSend(c, _chunk)) > 0)
                Bytes += rc;
            if (rc < 0 && rc != -(int)Errno.EAGAIN)
            {
                Errors++;
                LastError = rc;
                break;
            }
            now = Stopwatch.GetTimestamp();
        }
        WritingSeconds = (double)(now - start) / freq;

        stack.TcpShutdown(c, read: false, write: true);
        long deadline = Stopwatch.GetTimestamp() + DrainTicks;
        Span<byte> sink = stackalloc byte[2048];
        while (Stopwatch.GetTimestamp() < deadline && !_stop)
        {
            stack.Poll();
            int n = stack.TcpReceive(c, sink);
            if (n == 0)
            {
                Confirmed = Errors == 0;
                break;
            }
            if (n < 0 && n != -(int)Errno.EAGAIN)
            {
                Errors++;
                LastError = n;
                break;
            }
        }
        now = Stopwatch.GetTimestamp();
        Seconds = (double)(now - start) / freq;
        TcpDial.Close(stack, c, freq);
        return 0;
    }

    public double GbitPerSecond => Seconds > 0 ? Bytes * 8 / Seconds / 1e9 : 0;

    public void Print(TextWriter w, StackCounters counters)
    {
        w.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"stream: {Bytes} bytes in {Seconds:0.000} s = {GbitPerSecond:0.000} Gbit/s " +
            $"({(Confirmed ? "the sink read them all and closed" : "NOT confirmed by the sink")}; writing took {WritingSeconds:0.000} s)"));
        w.WriteLine($"segments out {counters.TcpOutSegs} in {counters.TcpInSegs} retransmitted {counters.TcpRetransSegs}  errors {Errors}" +
            (LastError != 0 ? $" (last {(Errno)(-LastError)})" : ""));
        w.Flush();
    }

    public void WriteJson(string path, string? label, string vnic, StackCounters counters)
    {
        JsonResults.Write(path, label, j =>
        {
            j.WriteString("mode", "stream");
            j.WriteString("protocol", "tcp");
            j.WriteString("vnic", vnic);
            j.WriteString("server", server.ToString());
            j.WriteNumber("bytes", Bytes);
            j.WriteNumber("seconds", Math.Round(Seconds, 3));
            j.WriteNumber("writing_seconds", Math.Round(WritingSeconds, 3));
            j.WriteNumber("gbit_per_s", Math.Round(GbitPerSecond, 3));
            j.WriteBoolean("confirmed", Confirmed);
            j.WriteNumber("segments_out", counters.TcpOutSegs);
            j.WriteNumber("retransmitted", counters.TcpRetransSegs);
            j.WriteNumber("errors", Errors);
        });
    }
}
