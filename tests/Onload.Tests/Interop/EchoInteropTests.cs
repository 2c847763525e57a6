using System.Text.RegularExpressions;
using Onload.Tests.Netns;

namespace Onload.Tests.Interop;

/// <summary>
/// The sample <c>onload-echo</c> on each backend, with the Linux kernel as the peer: ping, UDP echo through socat,
/// and the kernel's neighbour table.
/// </summary>
[TestFixture("af_packet")]
[TestFixture("af_xdp")]
[TestFixture("tap")]
[Category("netns")]
[NonParallelizable]
public partial class EchoInteropTests(string kind)
{
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(20);
    private KernelPeer _peer = null!;
    private NsProcess _echo = null!;
    private string _stackMac = "";

    [SetUp]
    public void StartEcho()
    {
        _peer = new KernelPeer(kind);
        _echo = _peer.StackNs.Start(Dist.Bin("onload-echo"), "--vnic", _peer.VnicSpec, "--addr", _peer.StackCidr, "--udp", "7");
        _echo.WaitForOutput("ready", Deadline);
        _stackMac = MacInReady().Match(_echo.Stdout).Groups[1].Value;
        _peer.StackIsUp();
    }

    [TearDown]
    public void StopEcho()
    {
        if (TestContext.CurrentContext.Result.Outcome.Status == NUnit.Framework.Interfaces.TestStatus.Failed)
            TestContext.Out.WriteLine($"onload-echo stdout:\n{_echo?.Stdout}\nstderr:\n{_echo?.Stderr}");
        _echo?.Dispose();
        _peer?.Dispose();
    }

    [GeneratedRegex("mac ([0-9a-f:]{17})")]
    private static partial Regex MacInReady();

    [Test]
    public void Kernel_ping_of_1000_at_interval_0_gets_every_reply()
    {
        string output = _peer.KernelNs.Exec($"ping -c 1000 -i 0 -W 2 -q {_peer.StackAddress}");
        Assert.That(output, Does.Contain("1000 packets transmitted, 1000 received"), output);
    }

    [Test]
    public void Kernel_ping_of_8000_bytes_is_reassembled_and_answered_in_fragments()
    {
        string output = _peer.KernelNs.Exec($"ping -c 5 -i 0.05 -s 8000 -W 2 -q {_peer.StackAddress}");
        Assert.That(output, Does.Contain("5 packets transmitted, 5 received"), output);
    }

    [Test]
    public void Stack_entry_appears_in_the_kernel_neighbour_table()
    {
        _peer.KernelNs.Exec($"ping -c 1 -W 2 {_peer.StackAddress}");
        Poll.Until(() => _peer.KernelNeighbourMac() == _stackMac, Deadline, $"neighbour {_peer.StackAddress} lladdr {_stackMac}");
    }

    [TestCase(1)]
    [TestCase(100)]
    [TestCase(1472)]
    [TestCase(8000)]
    public void Kernel_udp_client_gets_datagrams_echoed_byte_for_byte(int size)
    {
        var payload = TestData.Random(size, size);
        var echoed = Socat(payload);
        Assert.That(echoed, Is.EqualTo(payload));
    }

    [Test]
    public void Sigint_prints_the_counters_and_exits_cleanly()
    {
        _peer.KernelNs.Exec($"ping -c 3 -i 0.01 -W 2 -q {_peer.StackAddress}");
        Netns.Netns.Run($"kill -INT {_echo.Pid}");
        Assert.That(_echo.WaitForExit(Deadline), Is.True);
        Assert.That(_echo.ExitCode, Is.Zero);
        Assert.That(_echo.Stdout, Does.Match(@"IcmpOutEchoReps\s+3"));
    }

    /// <summary>Sends one datagram with a kernel socat client and returns what came back.</summary>
    private byte[] Socat(byte[] payload) =>
        _peer.KernelNs.Pipe($"socat -t 1 -T 3 -b 65536 - UDP:{_peer.StackAddress}:7", payload, Deadline);
}
