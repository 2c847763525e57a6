using System.Globalization;
using HdrHistogram;

namespace Onload.Apps.PingPong;

/// <summary>Percentiles of half round trips, in microseconds.</summary>
/// <remarks>HdrHistogram reports the highest value equivalent to the percentile's bucket (3 significant digits,
/// so at most 0.1% above the exact sample); sockperf sorts its samples exactly. The difference is below the
/// run-to-run noise.</remarks>
internal sealed record LatencySummary(long Samples, double Min, double Mean, double Median, double P90, double P99,
    double P999, double P9999, double Max)
{
    public static LatencySummary From(LongHistogram h)
    {
        if (h.TotalCount == 0)
            return new LatencySummary(0, 0, 0, 0, 0, 0, 0, 0, 0);
        static double Us(long ns) => ns / 1000.0;
        return new LatencySummary(
            h.TotalCount,
            Us(h.LowestEquivalentValue(h.GetValueAtPercentile(0))),
            h.GetMean() / 1000.0,
            Us(h.GetValueAtPercentile(50)),
            Us(h.GetValueAtPercentile(90)),
            Us(h.GetValueAtPercentile(99)),
            Us(h.GetValueAtPercentile(99.9)),
            Us(h.GetValueAtPercentile(99.99)),
            Us(h.GetMaxValue()));
    }
}

/// <summary>What a latency client counted beside its histogram: the UDP and the TCP client report alike.</summary>
internal interface ILatencyRun
{
    LongHistogram Histogram { get; }
    long Lost { get; }
    long Stale { get; }
    long Errors { get; }
    double MeasuredSeconds { get; }
}

internal static class LatencyReport
{
    private static string F(double v) => v.ToString("0.000", CultureInfo.InvariantCulture);

    public static void Print(TextWriter w, LatencySummary s, ILatencyRun c)
    {
        w.WriteLine($"half round trip (us): min {F(s.Min)}  median {F(s.Median)}  p90 {F(s.P90)}  p99 {F(s.P99)}  " +
                    $"p99.9 {F(s.P999)}  p99.99 {F(s.P9999)}  max {F(s.Max)}  mean {F(s.Mean)}");
        w.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"samples {s.Samples}  lost {c.Lost}  stale {c.Stale}  errors {c.Errors}  over {c.MeasuredSeconds:0.000} s" +
            $"  ({(c.MeasuredSeconds > 0 ? s.Samples / c.MeasuredSeconds : 0):0} round trips/s)"));
        w.Flush();
    }

    public static void WriteJson(string path, string? label, string vnic, ClientSettings settings, LatencySummary s,
        ILatencyRun c)
    {
        JsonResults.Write(path, label, j =>
        {
            j.WriteString("vnic", vnic);
            j.WriteString("server", settings.Server.ToString());
            j.WriteString("protocol", settings.Tcp ? "tcp" : "udp");
            j.WriteNumber("size", settings.Size);
            j.WriteString("format", settings.Sockperf ? "sockperf" : "plain");
            j.WriteString("metric", "half round trip");
            j.WriteString("unit", "us");
            j.WriteNumber("warmup", settings.Warmup);
            j.WriteNumber("seconds", Math.Round(c.MeasuredSeconds, 3));
            j.WriteNumber("samples", s.Samples);
            j.WriteNumber("lost", c.Lost);
            j.WriteNumber("stale", c.Stale);
            j.WriteNumber("errors", c.Errors);
            j.WriteNumber("timeout_ms", settings.TimeoutNs / 1_000_000.0);
            j.WriteNumber("min", Math.Round(s.Min, 3));
            j.WriteNumber("mean", Math.Round(s.Mean, 3));
            j.WriteNumber("median", Math.Round(s.Median, 3));
            j.WriteNumber("p90", Math.Round(s.P90, 3));
            j.WriteNumber("p99", Math.Round(s.P99, 3));
            j.WriteNumber("p99_9", Math.Round(s.P999, 3));
            j.WriteNumber("p99_99", Math.Round(s.P9999, 3));
            j.WriteNumber("max", Math.Round(s.Max, 3));
        });
    }
}
