using Onload.Stack.Tcp;

namespace Onload.Tests.Tcp;

/// <summary>
/// The deterministic simulation sweep, sized for the test suite: a few hundred seeds of small transfers per
/// configuration, each seed its own mix of loss, reordering, duplication, corruption and delay. `make sweep`
/// runs thousands of larger ones with the same <see cref="SimTransfer"/>.
/// </summary>
[TestFixture]
public class SimSweepTests
{
    private const int Seeds = 500;
    private const int Bytes = 32 * 1024;

    private static TransferResult[] Sweep(SimTransfer.Options options)
    {
        var results = new TransferResult[Seeds];
        // Seeds are independent and each pair of stacks is single-threaded: run them on every core.
        Parallel.For(0, Seeds, i => results[i] = SimTransfer.Run((ulong)i + 1, options));
        return results;
    }

    [TestCase(true, CongestionControl.Cubic, TestName = "Sweep of 500 seeds with SACK and CUBIC: every transfer is intact or times out as on Linux")]
    [TestCase(false, CongestionControl.NewReno, TestName = "Sweep of 500 seeds with NewReno and no SACK: every transfer is intact or times out as on Linux")]
    public void Every_transfer_is_intact_or_times_out_as_linux_would(bool sack, CongestionControl congestionControl)
    {
        var options = new SimTransfer.Options { Sack = sack, CongestionControl = congestionControl, Bytes = Bytes };
        var results = Sweep(options);

        var bad = results.Where(r => !r.Acceptable).ToList();
        Assert.That(bad, Is.Empty, () =>
            $"{bad.Count} transfers damaged, stalled or failed; replay one with " +
            $"`make sweep SWEEP_ARGS=\"--replay SEED --bytes {Bytes} --config {(sack ? "sack" : "nosack")}-{congestionControl.ToString().ToLowerInvariant()}\"`:\n" +
            string.Join("\n", bad.Take(5)));
        // Giving up takes 6 lost SYNs or 16 lost retransmissions of one segment in a row: rare below 30% loss.
        Assert.That(results.Count(r => r.Outcome == TransferOutcome.TimedOut), Is.LessThan(Seeds / 100),
            () => string.Join("\n", results.Where(r => r.Outcome == TransferOutcome.TimedOut).Take(5)));
        // The sweep exercises recovery, not only the happy path.
        Assert.That(results.Sum(r => r.Timeouts), Is.GreaterThan(0), "RTOs");
        Assert.That(results.Sum(r => r.RecoveryEpisodes), Is.GreaterThan(0), "recovery episodes");
    }

    [Test]
    public void A_transfer_repeats_exactly_from_its_seed()
    {
        var options = new SimTransfer.Options { Bytes = Bytes };
        var first = SimTransfer.Run(59, options);
        var again = SimTransfer.Run(59, options);
        Assert.That(again, Is.EqualTo(first));
        Assert.That(first.RetransSegs, Is.GreaterThan(0), "seed 59 loses frames");
        Assert.That(SimTransfer.Run(60, options).CompletionNs, Is.Not.EqualTo(first.CompletionNs));
    }
}
