using System.Security.Cryptography;
using System.Text.Json;
using Onload.StackDump;
using Onload.Tests.Driverlink;
using Onload.Tests.Interop;
using Onload.Tests.Netns;

namespace Onload.Tests.Preload;

/// <summary>
/// Programs nobody here wrote (curl, Python's http.server, iperf3, sockperf), unmodified, under <c>onload-run</c> on
/// the stack side, against the same programs on the peer's kernel TCP. Each test proves the connections were the
/// stack's: onload-stackdump shows them on the program's stack while it runs, the shim's debug lines name them, and
/// the stack side's kernel opened none.
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
    public void Curl_under_onload_run_fetches_fifty_megabytes_from_a_kernel_http_server()
    {
        // curl connects non-blocking, waits in poll and reads the result with getsockopt(SO_ERROR).
        var blob = Serve("blob", 50_000_000);
        using var dl = new DriverlinkPair();
        dl.Peer.Start("/usr/bin/python3", "-m", "http.server", "7430", "--bind", dl.PeerAddress, "--directory", _www);
        WaitForListener(dl.Peer, 7430);
        PreloadTcpTests.LimitPeerSendRate(dl, "200mbit"); // 2 s for the 50 MB
        var before = PreloadTcpTests.KernelOpens(dl.Host);
        string fetched = Path.Combine(_www, "fetched");

        var curl = dl.Host.Start("env", [.. PreloadTcpTests.Settings(dl), Dist.Bin("onload-run"),
            "curl", "-sS", "--max-time", "15", "-o", fetched, $"http://{dl.PeerAddress}:7430/blob"]);

        var stack = OnloadStackdump.WaitUntil(dl.Host, curl.Pid, s => s.ConnectedTo(dl.PeerAddress, 7430).Count == 1,
            Deadline, "curl's connection to the kernel server");
        Assert.That(stack.ConnectedTo(dl.PeerAddress, 7430)[0].LocalAddress, Is.EqualTo(dl.HostAddress));
        Assert.That(curl.WaitForExit(Deadline), Is.True, "curl finished");
        Assert.That(curl.ExitCode, Is.Zero, curl.Stderr);
        Assert.That(SHA256.HashData(File.ReadAllBytes(fetched)), Is.EqualTo(SHA256.HashData(blob)), "the file arrived whole");
        Assert.That(curl.Stderr, Does.Contain("connecting (connection").And.Not.Contain("handed to the kernel"), "curl's connection was the stack's");
        Assert.That(PreloadTcpTests.KernelOpens(dl.Host).Active, Is.EqualTo(before.Active), "the stack side's kernel opened no connection");
    }

    /// <summary>
    /// A kernel curl fetches <paramref name="name"/> from the accelerated <paramref name="server"/> at 2.5 MB/s (so the
    /// request lasts), while onload-stackdump shows the server's listener and the request's connection on its stack.
    /// </summary>
    private void FetchSlowlyWhileStackdumpShowsTheConnection(DriverlinkPair dl, NsProcess server, int port, string name, byte[] blob)
    {
        string fetched = Path.Combine(_www, "fetched-" + name);
        var curl = dl.Peer.Start("curl", "-sS", "--max-time", "15", "--limit-rate", "2500k", "-o", fetched,
            $"http://{dl.HostAddress}:{port}/{name}");

        var stack = OnloadStackdump.WaitUntil(dl.Host, server.Pid,
            s => s.Listening(port) is not null && s.Established(port, dl.PeerAddress).Count == 1, Deadline,
            "the listener and the kernel curl's connection");
        Assert.That(stack.Established(port, dl.PeerAddress)[0].LocalAddress, Is.EqualTo(dl.HostAddress));

        Assert.That(curl.WaitForExit(Deadline), Is.True, "the kernel's curl finished");
        Assert.That(curl.ExitCode, Is.Zero, curl.Stderr + server.Stderr);
        Assert.That(SHA256.HashData(File.ReadAllBytes(fetched)), Is.EqualTo(SHA256.HashData(blob)), $"{name} arrived whole");
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

        FetchSlowlyWhileStackdumpShowsTheConnection(dl, server, 7431, "big", files[0].Item2);
        foreach (var (name, blob) in files.Skip(1).Append(files[0]))
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

        FetchSlowlyWhileStackdumpShowsTheConnection(dl, server, port, "blob", blob);

        Assert.That(Count(server.Stderr, "accepted on fd"), Is.EqualTo(1), "the request was accepted on the stack");
        Assert.That(server.Stderr, Does.Not.Contain("handed to the kernel"));
        Assert.That(PreloadTcpTests.KernelOpens(dl.Host).Passive, Is.EqualTo(before.Passive), "the stack side's kernel accepted no connection");
        if (bind == "::")
        {
            Assert.That(server.Stderr, Does.Contain(", AF_INET6)"), "the listener was an accelerated AF_INET6 socket");
            Assert.That(server.Stderr, Does.Contain($"::ffff:{dl.PeerAddress} - -"), "accept gave the client's v4-mapped address");
        }
    }

    /// <summary>
    /// Runs <c>iperf3 -c</c> for 2 s: in the peer's kernel against <paramref name="acceleratedServer"/>, or, when that
    /// is null, under onload-run against the peer's kernel server. Checks that onload-stackdump shows the accelerated
    /// side's control and data connections meanwhile (<paramref name="connections"/>), and returns the client's
    /// report: bytes sent and received, no error.
    /// </summary>
    private static (long Sent, long Received) RunIperf3WhileStackdumpShowsTheConnections(DriverlinkPair dl, int port, bool reverse,
        NsProcess? acceleratedServer, Func<StackSnapshot, bool> connections)
    {
        string target = acceleratedServer is null ? dl.PeerAddress : dl.HostAddress;
        string[] iperf3 = ["iperf3", "-c", target, "-p", $"{port}", "-t", "2", "-J", .. reverse ? new[] { "-R" } : []];
        var client = acceleratedServer is null
            ? dl.Host.Start("env", [.. PreloadTcpTests.Settings(dl), Dist.Bin("onload-run"), .. iperf3])
            : dl.Peer.Start(iperf3[0], iperf3[1..]);

        var stack = OnloadStackdump.WaitUntil(dl.Host, (acceleratedServer ?? client).Pid, connections, Deadline,
            "iperf3's control and data connections");
        Assert.That(stack.Command, Does.StartWith("iperf3"));

        Assert.That(client.WaitForExit(Deadline), Is.True, "the iperf3 client finished");
        Assert.That(client.ExitCode, Is.Zero, client.Stdout + client.Stderr);
        using var report = JsonDocument.Parse(client.Stdout);
        Assert.That(report.RootElement.TryGetProperty("error", out var error), Is.False, $"iperf3 reported: {error}");
        var end = report.RootElement.GetProperty("end");
        return (end.GetProperty("sum_sent").GetProperty("bytes").GetInt64(), end.GetProperty("sum_received").GetProperty("bytes").GetInt64());
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

        var (sent, received) = RunIperf3WhileStackdumpShowsTheConnections(dl, port, reverse, server,
            s => s.Listening(port) is not null && s.Established(port, dl.PeerAddress).Count == 2);
        Assert.That(sent, Is.GreaterThan(1_000_000), "bytes sent");
        Assert.That(received, Is.GreaterThan(1_000_000), "bytes received");

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

        var (sent, received) = RunIperf3WhileStackdumpShowsTheConnections(dl, port, reverse, server,
            s => s.Listening(port) is not null && s.Established(port, dl.PeerAddress).Count == 2);
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

    // socat's UDP6-LISTEN binds [::]:PORT (IPV6_V6ONLY off, as Debian's default), takes the first datagram's sender
    // from recvfrom and connects to it: both v4-mapped sockaddr_in6 addresses the shim made.
    [Test]
    public void Socat_udp6_listen_under_onload_run_echoes_a_kernel_ipv4_client_through_v4_mapped_addresses()
    {
        using var dl = new DriverlinkPair();
        var server = dl.Host.Start("env", [.. PreloadTcpTests.Settings(dl), Dist.Bin("onload-run"),
            "socat", "-b", "65536", "UDP6-LISTEN:7483", "PIPE"]);
        server.WaitForOutput("bound (UDP socket", Deadline);
        OnloadStackdump.WaitUntil(dl.Host, server.Pid, s => s.Udp.Any(u => u.LocalPort == 7483 && u.LocalAddress == "0.0.0.0"),
            Deadline, "socat's dual-stack UDP socket");
        var before = PreloadUdpTests.KernelUdp(dl.Host);

        const int Rounds = 50;
        var client = dl.Peer.Start("/usr/bin/python3", "-c", PreloadUdpTests.EchoClient, dl.HostAddress, "7483", $"{Rounds}");

        Assert.That(client.WaitForExit(Deadline), Is.True, "the client finished");
        Assert.That(client.ExitCode, Is.Zero, client.Stderr);
        Assert.That(client.Stdout, Does.Contain($"echoed {4 * Rounds}"));
        var stack = OnloadStackdump.WaitUntil(dl.Host, server.Pid, s => s.Udp.Any(u => u.LocalPort == 7483 && u.RemoteAddress == dl.PeerAddress),
            Deadline, "socat's UDP socket connected to the client's v4-mapped address");
        Assert.That(stack.Udp.Single(u => u.LocalPort == 7483).InDatagrams, Is.EqualTo(4 * Rounds), "every datagram reached it on the stack");
        Assert.That(server.Stderr, Does.Contain("accelerated (UDP socket").And.Contain(", AF_INET6)").And.Not.Contain("handed to the kernel"));
        var after = PreloadUdpTests.KernelUdp(dl.Host);
        Assert.That(after.Out, Is.EqualTo(before.Out), "the stack side's kernel sent none of the echoes");
        // The 8000-byte datagrams arrive as IPv4 fragments, which the kernel reassembles for the port's backing socket.
        Assert.That(after.In - before.In, Is.LessThanOrEqualTo(Rounds), "the kernel received only the fragmented datagrams");
    }

    [TestCase(false, 7438, TestName = "Iperf3_client_under_onload_run_sends_to_a_kernel_iperf3_server_for_two_seconds")]
    [TestCase(true, 7439, TestName = "Iperf3_client_under_onload_run_receives_from_a_kernel_iperf3_server_in_reverse_mode_for_two_seconds")]
    public void Iperf3_client_under_onload_run_against_a_kernel_server(bool reverse, int port)
    {
        using var dl = new DriverlinkPair();
        var server = dl.Peer.Start("iperf3", "-s", "-1", "-p", $"{port}", "-B", dl.PeerAddress);
        WaitForListener(dl.Peer, port);
        var before = PreloadTcpTests.KernelOpens(dl.Host);
        var peerBefore = PreloadTcpTests.KernelOpens(dl.Peer);

        var (sent, received) = RunIperf3WhileStackdumpShowsTheConnections(dl, port, reverse, acceleratedServer: null,
            s => s.ConnectedTo(dl.PeerAddress, port).Count == 2);

        Assert.That(sent, Is.GreaterThan(1_000_000), "bytes sent");
        Assert.That(received, Is.GreaterThan(1_000_000), "bytes received");
        Assert.That(server.WaitForExit(Deadline), Is.True, "the kernel's iperf3 -s -1 ends after its one test");
        Assert.That(server.ExitCode, Is.Zero, server.Stdout + server.Stderr);
        Assert.That(PreloadTcpTests.KernelOpens(dl.Host).Active, Is.EqualTo(before.Active), "the stack side's kernel opened no connection");
        Assert.That(PreloadTcpTests.KernelOpens(dl.Peer).Passive, Is.EqualTo(peerBefore.Passive + 2), "the peer's kernel accepted the stack's two");
    }

    [Test]
    public void Sockperf_tcp_server_under_onload_run_answers_a_kernel_ping_pong_client()
    {
        const int port = 7456;
        using var dl = new DriverlinkPair();
        var before = PreloadTcpTests.KernelOpens(dl.Host);
        var server = dl.Host.Start("env", [.. PreloadTcpTests.Settings(dl), Dist.Bin("onload-run"),
            "sockperf", "server", "--tcp", "-i", dl.HostAddress, "-p", $"{port}"]);
        OnloadStackdump.WaitUntil(dl.Host, server.Pid, s => s.Listening(port) is not null, Deadline, "sockperf's listener");

        var client = dl.Peer.Start("sockperf", "ping-pong", "--tcp", "-i", dl.HostAddress, "-p", $"{port}", "-t", "2");

        OnloadStackdump.WaitUntil(dl.Host, server.Pid, s => s.Established(port, dl.PeerAddress).Count == 1, Deadline,
            "the kernel client's connection");
        Assert.That(client.WaitForExit(Deadline), Is.True, "the client finished");
        Assert.That(client.ExitCode, Is.Zero, client.Stdout + client.Stderr);
        PreloadUdpTests.AssertCleanPingPong(client.Stdout + client.Stderr);
        Assert.That(server.Stderr, Does.Contain("accepted on fd").And.Not.Contain("handed to the kernel"));
        Assert.That(PreloadTcpTests.KernelOpens(dl.Host).Passive, Is.EqualTo(before.Passive), "the stack side's kernel accepted no connection");
    }

    [Test]
    public void Sockperf_tcp_ping_pong_under_onload_run_gets_answers_from_a_kernel_server()
    {
        const int port = 7457;
        using var dl = new DriverlinkPair();
        dl.Peer.Start("sockperf", "server", "--tcp", "-i", dl.PeerAddress, "-p", $"{port}");
        WaitForListener(dl.Peer, port);
        var before = PreloadTcpTests.KernelOpens(dl.Host);

        var client = dl.Host.Start("env", [.. PreloadTcpTests.Settings(dl), Dist.Bin("onload-run"),
            "sockperf", "ping-pong", "--tcp", "-i", dl.PeerAddress, "-p", $"{port}", "-t", "2"]);

        var stack = OnloadStackdump.WaitUntil(dl.Host, client.Pid, s => s.ConnectedTo(dl.PeerAddress, port).Count == 1, Deadline,
            "sockperf's connection to the kernel server");
        Assert.That(stack.ConnectedTo(dl.PeerAddress, port)[0].LocalAddress, Is.EqualTo(dl.HostAddress));
        Assert.That(client.WaitForExit(Deadline), Is.True, "the client finished");
        Assert.That(client.ExitCode, Is.Zero, client.Stdout + client.Stderr);
        PreloadUdpTests.AssertCleanPingPong(client.Stdout + client.Stderr);
        Assert.That(client.Stderr, Does.Not.Contain("handed to the kernel"));
        Assert.That(PreloadTcpTests.KernelOpens(dl.Host).Active, Is.EqualTo(before.Active), "the stack side's kernel opened no connection");
    }
}
