using System.Globalization;
using System.Security.Cryptography;
using System.Text.RegularExpressions;
using Onload.Tests.Netns;

namespace Onload.Tests.Interop;

/// <summary>TCP between onload-echo and a kernel client through a router that drops packets at random each way
/// (<see cref="LossyPath"/>): the bytes arrive intact, and both ends really lost some and recovered.</summary>
[TestFixture("af_packet")]
[TestFixture("af_xdp")]
[Category("netns")]
[NonParallelizable]
public class LossyPathEchoTests(string kind)
{
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(60);
    private KernelPeer _peer = null!;

    [SetUp]
    public void CreatePeer() => _peer = KernelPeer.ThroughLossyPath(kind, lossPercent: 5);

    [TearDown]
    public void RemovePeer() => _peer?.Dispose();

    [Test]
    public void A_megabyte_echoed_through_five_percent_loss_each_way()
    {
        var echo = _peer.StackNs.Start(Dist.Bin("onload-echo"), "--vnic", _peer.VnicSpec, "--addr", _peer.StackCidr,
            "--gateway", _peer.Gateway!, "--tcp", "7");
        echo.WaitForOutput("ready", Deadline);
        var data = TestData.Random(3, 1_000_000);

        var back = _peer.KernelNs.Pipe($"socat -b 65536 -t 60 - TCP:{_peer.StackAddress}:7", data, Deadline);

        Assert.That(back.Length, Is.EqualTo(data.Length));
        Assert.That(SHA256.HashData(back), Is.EqualTo(SHA256.HashData(data)));
        var (toKernel, toStack) = _peer.LossyPath.Dropped();
        // SIGTERM: onload-echo prints its counters and exits.
        Netns.Netns.Run(string.Create(CultureInfo.InvariantCulture, $"kill -TERM {echo.Pid}"));
        Assert.That(echo.WaitForExit(Deadline), Is.True, "onload-echo exits on SIGTERM");
        string stats = echo.Stdout;
        Assert.Multiple(() =>
        {
            Assert.That(toKernel, Is.GreaterThan(0), "the router dropped packets from the stack");
            Assert.That(toStack, Is.GreaterThan(0), "the router dropped packets from the kernel");
            Assert.That(Counter(stats, "TcpExtTCPOFOQueue"), Is.GreaterThan(0), "the stack queued out-of-order data: " + stats);
            Assert.That(Counter(stats, "TcpRetransSegs"), Is.GreaterThan(0), "the stack retransmitted: " + stats);
        });
    }

    /// <summary>A counter from onload-echo's exit report ("  Name   value"; a counter at zero is left out).</summary>
    private static long Counter(string stats, string name)
    {
        var m = Regex.Match(stats, $@"^\s*{name}\s+(\d+)\s*$", RegexOptions.Multiline);
        return m.Success ? long.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture) : 0;
    }
}
