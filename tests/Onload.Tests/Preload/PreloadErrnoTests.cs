using Onload.Tests.Driverlink;
using Onload.Tests.Interop;
using Onload.Tests.Netns;

namespace Onload.Tests.Preload;

/// <summary>
/// Errors as Linux gives them: <c>dist/tests/errno_probe</c> (preload/tests/errno_probe.c) makes failing socket calls
/// (refused and non-blocking connects, resets, EPIPE with and without SIGPIPE, addresses in use, timeouts, signals)
/// against a kernel server, once on the kernel's TCP and once under <c>onload-run</c> from the same namespace, and
/// every line of the two runs must agree.
/// </summary>
[Category("netns")]
[NonParallelizable]
public class PreloadErrnoTests
{
    private static readonly TimeSpan Deadline = DriverlinkPair.Deadline;

    [Test]
    public void Every_failing_call_gives_the_result_and_errno_the_kernel_gives()
    {
        string probe = Dist.TestProgram("errno_probe");

        using var dl = new DriverlinkPair();
        var server = dl.Peer.Start(probe, "serve", "7440");
        server.WaitForOutput("listening", Deadline);

        long resetsBefore = EstabResets(dl.Peer);
        var kernel = dl.Host.Start(probe, "probe", dl.PeerAddress, "7440");
        Assert.That(kernel.WaitForExit(Deadline), Is.True, $"the kernel run finished; stdout: {kernel.Stdout}");
        long kernelResets = ResetsWhenDone(dl.Peer) - resetsBefore;
        var onload = dl.Host.Start("env", [.. PreloadTcpTests.Settings(dl), Dist.Bin("onload-run"), probe, "probe", dl.PeerAddress, "7440"]);
        Assert.That(onload.WaitForExit(Deadline), Is.True, $"the onload-run run finished; stdout: {onload.Stdout}");
        long onloadResets = ResetsWhenDone(dl.Peer) - resetsBefore - kernelResets;
        Assert.That(onloadResets, Is.EqualTo(kernelResets),
            "the peer's connections ended by a reset (SO_LINGER zero, resets on both sides) as many times in both runs\n" + onload.Stderr);

        var expected = Lines(kernel.Stdout);
        var actual = Lines(onload.Stdout);
        Assert.That(expected, Does.Contain("done"), "the kernel run went through every case");
        var differences = expected.Zip(actual)
            .Where(p => p.First != p.Second && !(KnownDifferences.TryGetValue(p.First, out var known) && known == p.Second))
            .Select(p => $"kernel: {p.First}\n onload: {p.Second}").ToList();
        Assert.That(differences, Is.Empty, "lines that differ:\n" + string.Join('\n', differences) + "\n--- stderr:\n" + onload.Stderr);
        Assert.That(actual, Has.Count.EqualTo(expected.Count), onload.Stdout);
        Assert.That(onload.Stderr, Does.Contain("connecting (connection"), "the probe's connections were the stack's");
    }

    /// <summary>
    /// Where the stack knowingly differs, kernel line → the stack's line, each with its reason; a difference that
    /// changes (fixed, or different) fails the test, so this list stays true.
    /// </summary>
    private static readonly Dictionary<string, string> KnownDifferences = [];

    /// <summary>Tcp EstabResets of a namespace (/proc/net/snmp): connections that went from ESTABLISHED or CLOSE_WAIT
    /// straight to CLOSED, by a reset sent or received.</summary>
    internal static long EstabResets(TestNamespace ns)
    {
        var lines = ns.Exec("cat /proc/net/snmp").Split('\n').Where(l => l.StartsWith("Tcp:", StringComparison.Ordinal)).ToArray();
        var names = lines[0].Split(' ', StringSplitOptions.RemoveEmptyEntries);
        var values = lines[1].Split(' ', StringSplitOptions.RemoveEmptyEntries);
        return long.Parse(values[Array.IndexOf(names, "EstabResets")], System.Globalization.CultureInfo.InvariantCulture);
    }

    /// <summary>EstabResets once every connection the probe made to the server has ended on the server's side (the
    /// last resets land just after the probe exits).</summary>
    private static long ResetsWhenDone(TestNamespace peer)
    {
        Poll.Until(() => !peer.Exec("ss -Htn state established sport = :7440").Contains(":7440", StringComparison.Ordinal),
            Deadline, "the probe's connections to the server ended");
        return EstabResets(peer);
    }

    private static List<string> Lines(string text) => text.Split('\n', StringSplitOptions.RemoveEmptyEntries).ToList();
}
