using System.Diagnostics;
using Onload.Tests.Netns;

namespace Onload.Tests.Interop;

/// <summary>
/// <c>onload-tcpdump</c> around <c>onload-pingpong</c>'s echo server on AF_PACKET, with the kernel as the peer: what the
/// stack's own capture holds, read by tshark, is what a kernel tcpdump on the far end of the veth saw, frame for frame.
/// </summary>
[TestFixture]
[Category("netns")]
[NonParallelizable]
public sealed class CaptureInteropTests
{
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(20);
    private const string Fields = "-T fields -e ip.src -e ip.dst -e udp.dstport -e icmp.type -e udp.payload";
    private KernelPeer _peer = null!;
    private string _dir = null!;
    private NsProcess? _kernelDump;
    private NsProcess? _capture;

    [SetUp]
    public void SetUp()
    {
        _peer = new KernelPeer("af_packet");
        _dir = Directory.CreateTempSubdirectory("onload-capture-").FullName;
    }

    [TearDown]
    public void TearDown()
    {
        if (TestContext.CurrentContext.Result.Outcome.Status == NUnit.Framework.Interfaces.TestStatus.Failed)
            TestContext.Out.WriteLine($"onload-tcpdump stdout:\n{_capture?.Stdout}\nstderr:\n{_capture?.Stderr}\n" +
                $"kernel tcpdump stderr:\n{_kernelDump?.Stderr}");
        _capture?.Dispose();
        _kernelDump?.Dispose();
        _peer.Dispose();
        Directory.Delete(_dir, recursive: true);
    }

    [Test]
    public void The_stack_capture_holds_the_ping_and_the_udp_echoes_a_kernel_tcpdump_sees_on_the_veth()
    {
        string stackPcap = Path.Combine(_dir, "stack.pcap");
        string kernelPcap = Path.Combine(_dir, "kernel.pcap");
        StartKernelDump(kernelPcap);
        StartEchoUnderCapture(stackPcap);

        _peer.KernelNs.Exec($"ping -c 2 -i 0.2 -W 2 -q {_peer.StackAddress}");
        var payloads = new[] { TestData.Random(1, 32), TestData.Random(2, 200), TestData.Random(3, 1000) };
        foreach (var payload in payloads)
            Assert.That(Socat(payload), Is.EqualTo(payload));

        string summary = Stop();
        var stack = Tshark(stackPcap, "udp or icmp");
        var kernel = Tshark(kernelPcap, "udp or icmp");
        Assert.Multiple(() =>
        {
            Assert.That(stack, Has.Length.EqualTo(2 * 2 + 2 * payloads.Length), string.Join('\n', stack));
            Assert.That(stack, Is.EqualTo(kernel), "the same frames in the same order, payload bytes and all");
            Assert.That(stack.Count(l => l.Contains($"\t{Convert.ToHexString(payloads[2]).ToLowerInvariant()}", StringComparison.Ordinal)),
                Is.EqualTo(2), "the 1000-byte datagram out and back");
            Assert.That(summary, Does.Match(@"onload-tcpdump: \d+ frames \(\d+ bytes\) captured to .*stack\.pcap.*status 0"));
        });
    }

    [Test]
    public void A_vetoed_datagram_is_in_the_capture_as_received_and_never_answered()
    {
        string stackPcap = Path.Combine(_dir, "veto.pcap");
        StartEchoUnderCapture(stackPcap, "--veto", "drop rx udp dport 7");

        string ping = _peer.KernelNs.Exec($"ping -c 1 -W 2 {_peer.StackAddress}");
        Assert.That(ping, Does.Contain("1 received"), "the rule leaves ICMP alone");
        Assert.That(Socat(TestData.Random(4, 64)), Is.Empty, "no echo: the datagram was dropped on receive");

        Stop();
        var lines = Tshark(stackPcap, "udp");
        Assert.That(lines, Has.Length.EqualTo(1));
        Assert.That(lines[0], Does.StartWith($"{_peer.KernelAddress}\t{_peer.StackAddress}\t7\t"));
    }

    private void StartKernelDump(string path)
    {
        // -Z root: tcpdump would otherwise drop to its own user, who may not write in the test's directory.
        _kernelDump = _peer.KernelNs.Start("tcpdump", "-i", _peer.KernelInterface, "-U", "-n", "-Z", "root", "-w", path);
        _kernelDump.WaitForOutput("listening on", Deadline);
    }

    private void StartEchoUnderCapture(string path, params string[] extra)
    {
        _capture = _peer.StackNs.Start(Dist.Bin("onload-tcpdump"), ["-w", path, .. extra, "--",
            Dist.Bin("onload-pingpong"), "--vnic", _peer.VnicSpec, "--addr", _peer.StackCidr, "--server-mode", "--port", "7"]);
        _capture.WaitForOutput("server ready", Deadline);
        _peer.StackIsUp();
    }

    /// <summary>SIGINT to onload-tcpdump, which passes it on; returns its summary line. Stops the kernel tcpdump too.</summary>
    private string Stop()
    {
        Netns.Netns.Run($"kill -INT {_capture!.Pid}");
        Assert.That(_capture.WaitForExit(Deadline), Is.True, "onload-tcpdump ends when its program does");
        Assert.That(_capture.ExitCode, Is.Zero, _capture.Stderr);
        if (_kernelDump is not null)
        {
            Netns.Netns.Run($"kill -INT {_kernelDump.Pid}");
            Assert.That(_kernelDump.WaitForExit(Deadline), Is.True);
        }
        return _capture.Stderr;
    }

    private byte[] Socat(byte[] payload) =>
        _peer.KernelNs.Pipe($"socat -t 1 -T 2 -b 65536 - UDP:{_peer.StackAddress}:7", payload, Deadline);

    private static string[] Tshark(string path, string filter)
    {
        var psi = new ProcessStartInfo("tshark") { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (string a in (string[])["-r", path, "-Y", filter, .. Fields.Split(' ')])
            psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        string output = p.StandardOutput.ReadToEnd();
        string errors = p.StandardError.ReadToEnd();
        p.WaitForExit();
        Assert.That(p.ExitCode, Is.Zero, $"tshark -r {path}: {errors}");
        return output.Split('\n', StringSplitOptions.RemoveEmptyEntries);
    }
}
