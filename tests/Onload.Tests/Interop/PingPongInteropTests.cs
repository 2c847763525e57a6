using System.Globalization;
using System.Text.Json;
using System.Text.RegularExpressions;
using Onload.Tests.Netns;

namespace Onload.Tests.Interop;

/// <summary>
/// <c>onload-pingpong</c>, the latency benchmark's client and server (perf/latency.sh), speaking sockperf's message
/// format with unmodified sockperf on the kernel side, over AF_PACKET across a veth pair. These check that every
/// message is answered, never how fast: performance is reported by <c>make bench-latency</c>, not asserted.
/// </summary>
[Category("netns")]
[NonParallelizable]
public partial class PingPongInteropTests
{
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(30);
    private const int Port = 11111;
    private NamespacePair _pair = null!;
    private string _workdir = "";

    [SetUp]
    public void CreatePair()
    {
        Netns.Netns.RequireRoot();
        if (Netns.Netns.TryRun("sockperf --version").ExitCode != 0)
            Assert.Ignore("needs sockperf (apt-get install sockperf; make deps installs it)");
        _pair = new NamespacePair();
        _workdir = Directory.CreateTempSubdirectory("olb-pingpong-test.").FullName;
    }

    [TearDown]
    public void DeletePair()
    {
        _pair?.Dispose();
        if (_workdir.Length > 0)
            Directory.Delete(_workdir, recursive: true);
    }

    [Test]
    public void Client_in_sockperf_format_gets_every_reply_from_an_unmodified_sockperf_server()
    {
        using var result = ClientAgainstSockperfServer(tcp: false);
        Assert.Multiple(() =>
        {
            Assert.That(result.RootElement.GetProperty("samples").GetInt64(), Is.EqualTo(500));
            Assert.That(result.RootElement.GetProperty("lost").GetInt64(), Is.Zero);
            Assert.That(result.RootElement.GetProperty("median").GetDouble(), Is.GreaterThan(0));
        });
    }

    [TestCase(64)]
    [TestCase(1024)]
    public void Unmodified_sockperf_ping_pong_gets_every_reply_from_the_server_mode(int size)
    {
        var (output, sent, received) = SockperfAgainstServerMode(tcp: false, size);

        Assert.Multiple(() =>
        {
            Assert.That(sent, Is.GreaterThan(0), output);
            Assert.That(received, Is.EqualTo(sent), output);
            Assert.That(output, Does.Contain("# dropped messages = 0;"), output);
        });
    }

    [Test]
    public void Plain_format_client_and_server_mode_talk_stack_to_stack_over_the_veth()
    {
        // The server stack on the kernel side's veth, with an address that namespace's kernel does not hold.
        string serverAddress = _pair.Subnet[..^1] + "3";
        using var server = _pair.Kernel.Start(Dist.Bin("onload-pingpong"), "--server-mode",
            "--vnic", "af_packet:" + _pair.KernelIf, "--addr", serverAddress + "/24", "--port", Port.ToString(CultureInfo.InvariantCulture));
        server.WaitForOutput("server ready", Deadline);

        using var client = _pair.Stack.Start(Dist.Bin("onload-pingpong"), "--vnic", "af_packet:" + _pair.StackIf,
            "--addr", _pair.StackAddress + "/24", "--server", $"{serverAddress}:{Port}",
            "--size", "200", "--warmup", "10", "--count", "300", "--timeout-ms", "2000");

        Assert.That(client.WaitForExit(Deadline), Is.True, $"onload-pingpong still running: {client.Stdout}");
        Assert.That(client.ExitCode, Is.EqualTo(0), $"stdout: {client.Stdout} stderr: {client.Stderr}");
        Assert.That(client.Stdout, Does.Match(@"samples 300\s+lost 0\b"), client.Stdout);
    }

    [Test]
    public void Tcp_client_in_sockperf_format_gets_every_reply_from_an_unmodified_sockperf_tcp_server()
    {
        using var result = ClientAgainstSockperfServer(tcp: true);
        Assert.Multiple(() =>
        {
            Assert.That(result.RootElement.GetProperty("protocol").GetString(), Is.EqualTo("tcp"));
            Assert.That(result.RootElement.GetProperty("samples").GetInt64(), Is.EqualTo(500));
            Assert.That(result.RootElement.GetProperty("errors").GetInt64(), Is.Zero);
            Assert.That(result.RootElement.GetProperty("lost").GetInt64(), Is.Zero);
            Assert.That(result.RootElement.GetProperty("median").GetDouble(), Is.GreaterThan(0));
        });
    }

    [Test]
    public void Unmodified_sockperf_tcp_ping_pong_gets_every_reply_from_the_tcp_server_mode()
    {
        var (output, sent, received) = SockperfAgainstServerMode(tcp: true, size: 64);

        Assert.Multiple(() =>
        {
            Assert.That(sent, Is.GreaterThan(0), output);
            Assert.That(received, Is.EqualTo(sent), output);
        });
    }

    /// <summary>An unmodified <c>sockperf server</c> (with --tcp: <c>sockperf server --tcp</c>) in the kernel namespace;
    /// onload-pingpong sends it 500 measured 64 B messages in sockperf's format and must exit 0. Returns its JSON.</summary>
    private JsonDocument ClientAgainstSockperfServer(bool tcp)
    {
        string[] tcpArgs = tcp ? ["--tcp"] : [];
        using var server = _pair.Kernel.Start("sockperf", ["server", .. tcpArgs, "-i", _pair.KernelAddress, "-p", Port.ToString(CultureInfo.InvariantCulture)]);
        Poll.Until(() => _pair.Kernel.Exec($"ss {(tcp ? "-Hltn" : "-Hlun")} sport = :{Port}").Trim().Length > 0, Deadline,
            tcp ? "sockperf server --tcp to listen" : "sockperf server to bind");

        var json = Path.Combine(_workdir, "client.json");
        using var client = _pair.Stack.Start(Dist.Bin("onload-pingpong"), [.. tcpArgs, "--vnic", "af_packet:" + _pair.StackIf,
            "--addr", _pair.StackAddress + "/24", "--server", $"{_pair.KernelAddress}:{Port}", "--sockperf",
            "--size", "64", "--warmup", "10", "--count", "500", "--timeout-ms", "2000", "--json", json]);

        Assert.That(client.WaitForExit(Deadline), Is.True, $"onload-pingpong still running: {client.Stdout}");
        Assert.That(client.ExitCode, Is.EqualTo(0), $"stdout: {client.Stdout} stderr: {client.Stderr}");
        return JsonDocument.Parse(File.ReadAllText(json));
    }

    /// <summary>onload-pingpong --server-mode --sockperf (with --tcp: over TCP) on the stack; an unmodified
    /// <c>sockperf ping-pong</c> runs against it for 1 s. Returns sockperf's output and its sent and received
    /// counts for the valid duration.</summary>
    private (string Output, long Sent, long Received) SockperfAgainstServerMode(bool tcp, int size)
    {
        string[] tcpArgs = tcp ? ["--tcp"] : [];
        using var server = _pair.Stack.Start(Dist.Bin("onload-pingpong"), ["--server-mode", .. tcpArgs, "--sockperf",
            "--vnic", "af_packet:" + _pair.StackIf, "--addr", _pair.StackAddress + "/24", "--port", Port.ToString(CultureInfo.InvariantCulture)]);
        server.WaitForOutput("server ready", Deadline);

        string output = _pair.Kernel.Exec($"sockperf ping-pong {(tcp ? "--tcp " : "")}-i {_pair.StackAddress} -p {Port} -m {size} -t 1");

        var valid = ValidDuration().Match(output);
        Assert.That(valid.Success, Is.True, output);
        return (output, long.Parse(valid.Groups[1].Value, CultureInfo.InvariantCulture),
            long.Parse(valid.Groups[2].Value, CultureInfo.InvariantCulture));
    }

    [GeneratedRegex(@"\[Valid Duration\].*SentMessages=(\d+); ReceivedMessages=(\d+)")]
    private static partial Regex ValidDuration();
}
