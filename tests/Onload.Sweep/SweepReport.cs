using System.Globalization;
using System.Text;
using Onload.Tests.Tcp;

namespace Onload.Sweep;

/// <summary>One configuration's results, one per seed.</summary>
internal sealed record SweepRun(SweepConfig Config, TransferResult[] Results);

/// <summary>
/// The sweep as Markdown: outcomes, the distribution of completion time, RTOs and retransmissions per
/// configuration and per band of data-way loss, SACK against NewReno seed by seed, and every seed that failed.
/// </summary>
internal sealed class SweepReport(IReadOnlyList<SweepRun> runs, ulong first, int seeds, int bytes, int jobs, TimeSpan wall)
{
    /// <summary>Bands of the data way's loss rate (the ACK way draws its own, also up to 30%).</summary>
    private static readonly (double Low, double High, string Name)[] LossBands =
    [
        (0.00, 0.05, "0–5%"),
        (0.05, 0.15, "5–15%"),
        (0.15, 0.30 + 1e-9, "15–30%"),
    ];

    private static readonly CultureInfo Inv = CultureInfo.InvariantCulture;

    public string ToMarkdown()
    {
        var md = new StringBuilder();
        md.AppendLine("# Deterministic simulation sweep");
        md.AppendLine();
        md.AppendLine(Inv, $"`make sweep` (tests/Onload.Sweep): seeds {first}–{first + (ulong)seeds - 1}, {bytes:N0} bytes from A to B per " +
            $"transfer, {runs.Count} configurations; {wall.TotalSeconds:F0} s wall time on {Environment.ProcessorCount} cores, {jobs} at once; " +
            $"{DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC.");
        md.AppendLine();
        md.AppendLine("Each seed draws, for each direction of the link, loss up to 30%, duplication up to 5%, reordering up to 10%, " +
            "corruption up to 5% and a delay of 20 µs to 2 ms (`SeedMix.For`). A transfer is connect, send, shutdown, read to EOF, " +
            "in virtual time; completion time is from connect() to EOF. Counters are the sender's: retransmitted segments " +
            "(TcpRetransSegs), RTOs (TcpExtTCPTimeouts), recovery episodes (TcpExtTCPSackRecovery + TcpExtTCPRenoRecovery) " +
            "and tail loss probes (TcpExtTCPLossProbes). Replay one seed with `make sweep SWEEP_ARGS=\"--replay SEED\"`.");
        md.AppendLine();

        md.AppendLine("## Outcomes");
        md.AppendLine();
        md.AppendLine("| Configuration | Seeds | Intact | ETIMEDOUT | Damaged | Stalled | Failed |");
        md.AppendLine("|---|--:|--:|--:|--:|--:|--:|");
        foreach (var run in runs)
        {
            int Count(TransferOutcome o) => run.Results.Count(r => r.Outcome == o);
            md.AppendLine(Inv, $"| {run.Config.Title} | {run.Results.Length} | {Count(TransferOutcome.Intact)} | {Count(TransferOutcome.TimedOut)} | " +
                $"{Count(TransferOutcome.Damaged)} | {Count(TransferOutcome.Stalled)} | {Count(TransferOutcome.Failed)} |");
        }
        md.AppendLine();
        md.AppendLine("ETIMEDOUT is what Linux gives when retries run out (tcp_syn_retries = 6, tcp_retries2 = 15); the bytes " +
            "that arrived before it were checked too. Damaged, stalled or failed transfers are bugs: they are listed at the end.");
        md.AppendLine();

        md.AppendLine("## Distributions (intact transfers)");
        md.AppendLine();
        DistributionTable(md, runs.Select(r => (r.Config.Title, r.Results.Where(x => x.Outcome == TransferOutcome.Intact).ToArray())));

        md.AppendLine("## By loss on the data way (intact transfers)");
        md.AppendLine();
        foreach (var (low, high, name) in LossBands)
        {
            md.AppendLine(Inv, $"### Loss {name}");
            md.AppendLine();
            var rows = runs.Select(r => (r.Config.Title,
                r.Results.Where(x => x.Mix.AToB.Loss >= low && x.Mix.AToB.Loss < high).ToArray())).ToList();
            md.AppendLine(string.Create(Inv, $"{rows[0].Item2.Length} seeds; intact: ") +
                string.Join(", ", rows.Select(r => string.Create(Inv, $"{r.Title} {r.Item2.Count(x => x.Outcome == TransferOutcome.Intact)}"))) + ".");
            md.AppendLine();
            DistributionTable(md, rows.Select(r => (r.Title, r.Item2.Where(x => x.Outcome == TransferOutcome.Intact).ToArray())));
        }

        if (runs.Count >= 2)
            HeadToHead(md, runs[0], runs[1]);

        md.AppendLine("## Slowest intact transfers");
        md.AppendLine();
        foreach (var run in runs)
        {
            md.AppendLine(Inv, $"{run.Config.Title}:");
            md.AppendLine();
            foreach (var r in run.Results.Where(x => x.Outcome == TransferOutcome.Intact).OrderByDescending(x => x.CompletionNs).Take(5))
                md.AppendLine(Inv, $"- {r}");
            md.AppendLine();
        }

        md.AppendLine("## Seeds that did not end intact");
        md.AppendLine();
        var bad = runs.SelectMany(r => r.Results.Where(x => x.Outcome != TransferOutcome.Intact).Select(x => (r.Config, x))).ToList();
        if (bad.Count == 0)
            md.AppendLine("None.");
        foreach (var (config, r) in bad.OrderBy(b => b.x.Acceptable).ThenBy(b => b.x.Seed))
            md.AppendLine(Inv, $"- **{config.Name}**, {(r.Acceptable ? "as Linux would" : "BUG")}: {r}");
        md.AppendLine();
        return md.ToString();
    }

    /// <summary>A few lines for the console.</summary>
    public string Summary()
    {
        var s = new StringBuilder();
        s.AppendLine(Inv, $"{seeds} seeds x {runs.Count} configurations in {wall.TotalSeconds:F0} s");
        foreach (var run in runs)
        {
            var intact = run.Results.Where(x => x.Outcome == TransferOutcome.Intact).ToArray();
            s.AppendLine(string.Create(Inv, $"{run.Config.Title}: intact {intact.Length}/{run.Results.Length}, " +
                $"ETIMEDOUT {run.Results.Count(x => x.Outcome == TransferOutcome.TimedOut)}, " +
                $"bad {run.Results.Count(x => !x.Acceptable)}; completion ms ") +
                Quantiles(intact.Select(x => x.CompletionNs / 1e6), "F1") +
                "; RTOs " + Quantiles(intact.Select(x => (double)x.Timeouts), "F0") +
                "; retransmissions " + Quantiles(intact.Select(x => (double)x.RetransSegs), "F0"));
        }
        return s.ToString();
    }

    private static void DistributionTable(StringBuilder md, IEnumerable<(string Title, TransferResult[] Results)> rows)
    {
        md.AppendLine("| Configuration | Metric | Median | p90 | p99 | Max | Mean |");
        md.AppendLine("|---|---|--:|--:|--:|--:|--:|");
        foreach (var (title, results) in rows)
        {
            if (results.Length == 0)
            {
                md.AppendLine(Inv, $"| {title} | (none) | | | | | |");
                continue;
            }
            Row(md, title, "completion (ms)", results.Select(r => r.CompletionNs / 1e6), "F1");
            Row(md, "", "RTOs", results.Select(r => (double)r.Timeouts), "F0");
            Row(md, "", "retransmitted segments", results.Select(r => (double)r.RetransSegs), "F0");
            Row(md, "", "recovery episodes", results.Select(r => (double)r.RecoveryEpisodes), "F0");
            var episodes = results.SelectMany(r => r.RecoveryTimes).Select(ns => ns / 1e6).ToArray();
            if (episodes.Length > 0)
                Row(md, "", $"time in one recovery (ms; {episodes.Length} episodes)", episodes, "F1");
            Row(md, "", "loss probes", results.Select(r => (double)r.LossProbes), "F0");
        }
        md.AppendLine();
    }

    private static void Row(StringBuilder md, string title, string metric, IEnumerable<double> values, string format)
    {
        var v = values.Order().ToArray();
        md.AppendLine(Inv, $"| {title} | {metric} | {Percentile(v, 0.5).ToString(format, Inv)} | {Percentile(v, 0.9).ToString(format, Inv)} | " +
            $"{Percentile(v, 0.99).ToString(format, Inv)} | {v[^1].ToString(format, Inv)} | {v.Average().ToString("F1", Inv)} |");
    }

    private static string Quantiles(IEnumerable<double> values, string format)
    {
        var v = values.Order().ToArray();
        if (v.Length == 0)
            return "-";
        return $"median {Percentile(v, 0.5).ToString(format, Inv)} p90 {Percentile(v, 0.9).ToString(format, Inv)} " +
            $"p99 {Percentile(v, 0.99).ToString(format, Inv)} max {v[^1].ToString(format, Inv)}";
    }

    /// <summary>Nearest-rank percentile of sorted values.</summary>
    private static double Percentile(double[] sorted, double p) =>
        sorted[Math.Clamp((int)Math.Ceiling(p * sorted.Length) - 1, 0, sorted.Length - 1)];

    /// <summary>The same seeds (so the same fault mix, though not the same draws once the two diverge) under two
    /// configurations: how often and by how much one finishes first.</summary>
    private static void HeadToHead(StringBuilder md, SweepRun a, SweepRun b)
    {
        var bySeed = b.Results.ToDictionary(r => r.Seed);
        var pairs = a.Results.Where(r => r.Outcome == TransferOutcome.Intact && bySeed.TryGetValue(r.Seed, out var o) && o.Outcome == TransferOutcome.Intact)
            .Select(r => (A: r, B: bySeed[r.Seed])).ToArray();
        md.AppendLine(Inv, $"## {a.Config.Title} against {b.Config.Title}, seed by seed");
        md.AppendLine();
        if (pairs.Length == 0)
        {
            md.AppendLine("No seed ended intact in both.");
            md.AppendLine();
            return;
        }
        md.AppendLine("The two runs of a seed share its fault mix; the individual draws differ once their traffic does.");
        md.AppendLine();
        md.AppendLine("| Loss on the data way | Seeds intact in both | First faster | Second faster | Tied | Completion ratio first/second: median | p10 | p90 | Total time ratio |");
        md.AppendLine("|---|--:|--:|--:|--:|--:|--:|--:|--:|");
        foreach (var (low, high, name) in LossBands.Append((0, 1, "all")))
        {
            var band = pairs.Where(p => p.A.Mix.AToB.Loss >= low && p.A.Mix.AToB.Loss < high).ToArray();
            if (band.Length == 0)
                continue;
            var ratios = band.Select(p => (double)p.A.CompletionNs / p.B.CompletionNs).Order().ToArray();
            double total = (double)band.Sum(p => p.A.CompletionNs) / band.Sum(p => p.B.CompletionNs);
            md.AppendLine(Inv, $"| {name} | {band.Length} | {band.Count(p => p.A.CompletionNs < p.B.CompletionNs)} | " +
                $"{band.Count(p => p.A.CompletionNs > p.B.CompletionNs)} | {band.Count(p => p.A.CompletionNs == p.B.CompletionNs)} | " +
                $"{Percentile(ratios, 0.5):F2} | {Percentile(ratios, 0.1):F2} | {Percentile(ratios, 0.9):F2} | {total:F2} |");
        }
        md.AppendLine();
        md.AppendLine(Inv, $"First: {a.Config.Title}. Second: {b.Config.Title}. A ratio below 1 means the first finished sooner.");
        md.AppendLine();
    }
}
