using System.Security.Cryptography;
using System.Text.Json;
using Onload.Tests.Driverlink;
using Onload.Tests.Interop;
using Onload.Tests.Netns;

namespace Onload.Tests.Preload;

/// <summary>
/// Programs nobody here wrote (curl, Python's http.server, iperf3), unmodified, under <c>onload-run</c> on the stack
/// side, against the same programs on the peer's kernel TCP. Each test proves the connections were the stack's: the
/// shim's debug lines name them, and the stack side's kernel opened none.
/// </summary>
[Category("netns")]
[NonParallelizable]
public class RealProgramTests
{
    private static readonly TimeSpan Deadline = DriverlinkPair.Deadline;

    private string _www = "";

    [SetUp]
    public void MakeServedDirectory() => _www = Directory.CreateTempSubdirectory("onload-www-").FullName;

    [TearDown]
    public void RemoveServedDirectory() => Directory.Delete(_www, recursive: true);

    private byte[] Serve(string name, int bytes)
    {
        var blob = RandomNumberGenerator.GetBytes(bytes);
        File.WriteAllBytes(Path.Combine(_www, name), blob);
        return blob;
    }

    private static void WaitForListener(TestNamespace ns, int port) =>
        Poll.Until(() => ns.Exec("ss -lnt").Contains($":{port} ", StringComparison.Ordinal), Deadline, $"a listener on port {port}");

    private static int Count(string text, string what)
    {
        int n = 0;
        for (int at = text.IndexOf(what, StringComparison.Ordinal); at >= 0; at = text.IndexOf(what, at + what.Length, StringComparison.Ordinal))
            n++;
        return n;
    }

    [Test]
    public void Curl_under_onload_run_fetches_five_megabytes_from_a_kernel_http_server()
    {
        // curl connects non-blocking, waits in poll and reads the result with getsockopt(SO_ERROR).
        var blob = Serve("blob", 5_000_000);
        using var dl = new DriverlinkPair();
        dl.Peer.Start("/usr/bin/python3", "-m", "http.server", "7430", "--bind", dl.PeerAddress, "--directory", _www);
        WaitForListener(dl.Peer, 7430);
        var before = PreloadTcpTests.KernelOpens(dl.Host);
        string fetched = Path.Combine(_www, "fetched");

        var curl = dl.Host.Start("env", [.. PreloadTcpTests.Settings(dl), Dist.Bin("onload-run"),
            "curl", "-sS", "--max-time", "15", "-o", fetched, $"http://{dl.PeerAddress}:7430/blob"]);

        Assert.That(curl.WaitForExit(Deadline), Is.True, "curl finished");
        Assert.That(curl.ExitCode, Is.Zero, curl.Stderr);
        Assert.That(SHA256.HashData(File.ReadAllBytes(fetched)), Is.EqualTo(SHA256.HashData(blob)), "the file arrived whole");
        Assert.That(curl.Stderr, Does.Contain("connecting (connection").And.Not.Contain("handed to the kernel"), "curl's connection was the stack's");
        Assert.That(PreloadTcpTests.KernelOpens(dl.Host).Active, Is.EqualTo(before.Active), "the stack side's kernel opened no connection");
    }

    [Test]
    public void Python_http_server_under_onload_run_serves_kernel_curl_several_requests_in_a_row()
    {
        // --bind to the IPv4 address: an AF_INET listener on the stack's own address.
        var files = new[] { ("big", Serve("big", 5_000_000)), ("small", Serve("small", 1_000)), ("mid", Serve("mid", 300_000)) };
        using var dl = new DriverlinkPair();
        var before = PreloadTcpTests.KernelOpens(dl.Host);
        var server = dl.Host.Start("env", [.. PreloadTcpTests.Settings(dl), Dist.Bin("onload-run"),
            "/usr/bin/python3", "-m", "http.server", "7431", "--bind", dl.HostAddress, "--directory", _www]);
        server.WaitForOutput("listening", Deadline);

        foreach (var (name, blob) in files.Append(files[0]))
        {
            byte[] body;
            try
            {
                body = dl.Peer.Pipe($"curl -sS --max-time 15 http://{dl.HostAddress}:7431/{name}", [], Deadline);
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                string where = "";
                try
                {
                    foreach (var t in Directory.GetDirectories($"/proc/{server.Pid}/task"))
                        where += $"{Path.GetFileName(t)}: {File.ReadAllText(t + "/syscall").Trim()} wchan {File.ReadAllText(t + "/wchan")}\n";
                }
                catch (IOException)
                {
                }
                throw new AssertionException($"{e.Message}\nserver threads:\n{where}server stderr:\n{server.Stderr}\ndaemon:\n{dl.Daemon.Stderr}", e);
            }
            Assert.That(SHA256.HashData(body), Is.EqualTo(SHA256.HashData(blob)), $"{name} arrived whole");
        }

        Assert.That(Count(server.Stderr, "accepted on fd"), Is.EqualTo(4), "each request was accepted on the stack");
        Assert.That(server.Stderr, Does.Not.Contain("handed to the kernel"));
        Assert.That(PreloadTcpTests.KernelOpens(dl.Host).Passive, Is.EqualTo(before.Passive), "the stack side's kernel accepted no connection");
        Assert.That(server.HasExited, Is.False, "the server is still serving");
    }

    // http.server's own choice of socket: with no --bind it takes getaddrinfo's first passive address, which Debian 12's
    // glibc lists as 0.0.0.0 (AF_INET); --bind :: makes a dual-stack AF_INET6 socket (IPV6_V6ONLY off, DualStackServer),
    // which the kernel's curl reaches through its v4-mapped address.
    [TestCase(null, 7434, TestName = "Python_http_server_under_onload_run_with_its_default_bind_serves_a_kernel_curl")]
    [TestCase("::", 7435, TestName = "Python_http_server_under_onload_run_bound_dual_stack_to_any_ipv6_serves_a_kernel_ipv4_curl")]
    public void Python_http_server_under_onload_run_without_an_ipv4_bind(string? bind, int port)
    {
        var blob = Serve("blob", 5_000_000);
        using var dl = new DriverlinkPair();
        var before = PreloadTcpTests.KernelOpens(dl.Host);
        string[] bindArgs = bind is null ? [] : ["--bind", bind];
        var server = dl.Host.Start("env", [.. PreloadTcpTests.Settings(dl), Dist.Bin("onload-run"),
            "/usr/bin/python3", "-m", "http.server", $"{port}", .. bindArgs, "--directory", _www]);
        server.WaitForOutput("listening", Deadline);

        var body = dl.Peer.Pipe($"curl -sS --max-time 15 http://{dl.HostAddress}:{port}/blob", [], Deadline);

        Assert.That(SHA256.HashData(body), Is.EqualTo(SHA256.HashData(blob)), "the file arrived whole");
        Assert.That(Count(server.Stderr, "accepted on fd"), Is.EqualTo(1), "the request was accepted on the stack");
        Assert.That(server.Stderr, Does.Not.Contain("handed to the kernel"));
        Assert.That(PreloadTcpTests.KernelOpens(dl.Host).Passive, Is.EqualTo(before.Passive), "the stack side's kernel accepted no connection");
        if (bind == "::")
        {
            Assert.That(server.Stderr, Does.Contain(", AF_INET6)"), "the listener was an accelerated AF_INET6 socket");
            Assert.That(server.Stderr, Does.Contain($"::ffff:{dl.PeerAddress} - -"), "accept gave the client's v4-mapped address");
        }
    }

    [TestCase(false, 7432, TestName = "Iperf3_server_under_onload_run_receives_from_a_kernel_iperf3_client_for_two_seconds")]
    [TestCase(true, 7433, TestName = "Iperf3_server_under_onload_run_sends_to_a_kernel_iperf3_client_in_reverse_mode_for_two_seconds")]
    public void Iperf3_server_under_onload_run_against_a_kernel_client(bool reverse, int port)
    {
        using var dl = new DriverlinkPair();
        var before = PreloadTcpTests.KernelOpens(dl.Host);
        var server = dl.Host.Start("env", [.. PreloadTcpTests.Settings(dl), Dist.Bin("onload-run"),
            "iperf3", "-s", "-1", "-p", $"{port}", "-B", dl.HostAddress]);
        server.WaitForOutput("listening", Deadline);

        string r = reverse ? "-R" : "";
        var json = dl.Peer.Pipe($"iperf3 -c {dl.HostAddress} -p {port} -t 2 -J {r}", [], Deadline);

        using var report = JsonDocument.Parse(json);
        Assert.That(report.RootElement.TryGetProperty("error", out var error), Is.False, $"iperf3 reported: {error}");
        var end = report.RootElement.GetProperty("end");
        Assert.That(end.GetProperty("sum_sent").GetProperty("bytes").GetInt64(), Is.GreaterThan(0), "bytes sent");
        Assert.That(end.GetProperty("sum_received").GetProperty("bytes").GetInt64(), Is.GreaterThan(0), "bytes received");

        Assert.That(server.WaitForExit(Deadline), Is.True, "iperf3 -s -1 ends after its one test");
        Assert.That(server.ExitCode, Is.Zero, server.Stdout + server.Stderr);
        Assert.That(Count(server.Stderr, "accepted on fd"), Is.EqualTo(2), "the control and the data connection were accepted on the stack");
        Assert.That(server.Stdout, Does.Contain($"local {dl.HostAddress} port {port} connected to {dl.PeerAddress}"),
            "getsockname on the accepted data connection names the stack's address and port");
        Assert.That(PreloadTcpTests.KernelOpens(dl.Host).Passive, Is.EqualTo(before.Passive), "the stack side's kernel accepted no connection");
    }

    // Without -B (or -4) iperf3 listens on a dual-stack AF_INET6 socket bound to :: with IPV6_V6ONLY off.
    [TestCase(false, 7436, TestName = "Iperf3_dual_stack_server_under_onload_run_receives_from_a_kernel_ipv4_client_for_two_seconds")]
    [TestCase(true, 7437, TestName = "Iperf3_dual_stack_server_under_onload_run_sends_to_a_kernel_ipv4_client_in_reverse_mode_for_two_seconds")]
    public void Iperf3_dual_stack_server_under_onload_run_against_a_kernel_client(bool reverse, int port)
    {
        using var dl = new DriverlinkPair();
        var before = PreloadTcpTests.KernelOpens(dl.Host);
        var server = dl.Host.Start("env", [.. PreloadTcpTests.Settings(dl), Dist.Bin("onload-run"), "iperf3", "-s", "-1", "-p", $"{port}"]);
        server.WaitForOutput("listening", Deadline);

        string r = reverse ? "-R" : "";
        var json = dl.Peer.Pipe($"iperf3 -c {dl.HostAddress} -p {port} -t 2 -J {r}", [], Deadline);

        using var report = JsonDocument.Parse(json);
        Assert.That(report.RootElement.TryGetProperty("error", out var error), Is.False, $"iperf3 reported: {error}");
        var end = report.RootElement.GetProperty("end");
        long sent = end.GetProperty("sum_sent").GetProperty("bytes").GetInt64();
        long received = end.GetProperty("sum_received").GetProperty("bytes").GetInt64();
        Assert.That(sent, Is.GreaterThan(1_000_000), "bytes sent");
        Assert.That(received, Is.GreaterThan(1_000_000), "bytes received");

        Assert.That(server.WaitForExit(Deadline), Is.True, "iperf3 -s -1 ends after its one test");
        Assert.That(server.ExitCode, Is.Zero, server.Stdout + server.Stderr);
        Assert.That(server.Stderr, Does.Contain(", AF_INET6)"), "the listener was an accelerated AF_INET6 socket");
        Assert.That(Count(server.Stderr, "accepted on fd"), Is.EqualTo(2), "the control and the data connection were accepted on the stack");
        Assert.That(server.Stderr, Does.Not.Contain("handed to the kernel"));
        Assert.That(server.Stdout, Does.Contain($"local {dl.HostAddress} port {port} connected to {dl.PeerAddress}"),
            "getsockname and accept name the v4-mapped addresses, which iperf3 prints as IPv4");
        Assert.That(PreloadTcpTests.KernelOpens(dl.Host).Passive, Is.EqualTo(before.Passive), "the stack side's kernel accepted no connection");
    }
}
