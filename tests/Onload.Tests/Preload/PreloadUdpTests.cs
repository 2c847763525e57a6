using System.Globalization;
using System.Text.RegularExpressions;
using Onload.Tests.Driverlink;
using Onload.Tests.Interop;
using Onload.Tests.Netns;

namespace Onload.Tests.Preload;

/// <summary>
/// UDP of unmodified programs under <c>onload-run</c>: socat and sockperf (nobody here wrote them) and a C program that
/// makes every UDP call, against the kernel's UDP on the peer. Each proves the datagrams were the stack's: the stack
/// side's kernel counted none of them sent (Udp OutDatagrams), and received only what filters cannot steer.
/// </summary>
[Category("netns")]
[NonParallelizable]
public partial class PreloadUdpTests
{
    private static readonly TimeSpan Deadline = DriverlinkPair.Deadline;

    /// <summary>The kernel's UDP datagram counters in a namespace (/proc/net/snmp, as <c>nstat</c> reads them).</summary>
    internal static (long In, long Out) KernelUdp(TestNamespace ns)
    {
        var lines = ns.Exec("cat /proc/net/snmp").Split('\n').Where(l => l.StartsWith("Udp:", StringComparison.Ordinal)).ToArray();
        var names = lines[0].Split(' ', StringSplitOptions.RemoveEmptyEntries);
        var values = lines[1].Split(' ', StringSplitOptions.RemoveEmptyEntries);
        long Get(string name) => long.Parse(values[Array.IndexOf(names, name)], CultureInfo.InvariantCulture);
        return (Get("InDatagrams"), Get("OutDatagrams"));
    }

    /// <summary>A kernel client: sends datagrams of each size in turn, waits for each echo and checks it byte for byte
    /// and that it came from the server.</summary>
    internal const string EchoClient = """
        import os, socket, sys
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(5)
        server = (sys.argv[1], int(sys.argv[2]))
        n = 0
        for _ in range(int(sys.argv[3])):
            for size in (1, 100, 1472, 8000):
                data = os.urandom(size)
                s.sendto(data, server)
                back, source = s.recvfrom(65536)
                if back != data or source != server:
                    sys.exit(f"datagram {n}: sent {size} bytes, got {len(back)} from {source}")
                n += 1
        print(f"echoed {n}")
        """;

    [Test]
    public void Socat_under_onload_run_echoes_datagrams_of_1_100_1472_and_8000_bytes_to_a_kernel_client()
    {
        using var dl = new DriverlinkPair();
        var server = dl.Host.Start("env", [.. PreloadTcpTests.Settings(dl), Dist.Bin("onload-run"),
            "socat", "-b", "65536", "UDP4-LISTEN:7450", "PIPE"]);
        server.WaitForOutput("bound (UDP socket", Deadline);
        OnloadStackdump.WaitUntil(dl.Host, server.Pid, s => s.Udp.Any(u => u.LocalPort == 7450), Deadline, "socat's UDP socket");
        var before = KernelUdp(dl.Host);

        const int Rounds = 50;
        var client = dl.Peer.Start("/usr/bin/python3", "-c", EchoClient, dl.HostAddress, "7450", Rounds.ToString(CultureInfo.InvariantCulture));

        Assert.That(client.WaitForExit(Deadline), Is.True, "the client finished");
        Assert.That(client.ExitCode, Is.Zero, client.Stderr);
        Assert.That(client.Stdout, Does.Contain($"echoed {4 * Rounds}"));
        Assert.That(server.Stderr, Does.Contain("accelerated (UDP socket").And.Not.Contain("handed to the kernel"));
        var after = KernelUdp(dl.Host);
        Assert.That(after.Out, Is.EqualTo(before.Out), "the stack side's kernel sent none of the echoes");
        // The 8000-byte datagrams arrive as IPv4 fragments, which the XDP program leaves to the kernel to reassemble;
        // the port's backing socket then hands them to the stack. Every other datagram the kernel never saw.
        Assert.That(after.In - before.In, Is.LessThanOrEqualTo(Rounds), "the kernel received only the fragmented datagrams");
        // UDP4-LISTEN connects its socket to the first datagram's sender; socat goes on waiting on it.
        var stack = OnloadStackdump.WaitUntil(dl.Host, server.Pid, s => s.Udp.Any(u => u.LocalPort == 7450 && u.RemoteAddress == dl.PeerAddress),
            Deadline, "socat's UDP socket connected to the client");
        Assert.That(stack.Udp.Single(u => u.LocalPort == 7450).InDatagrams, Is.EqualTo(4 * Rounds), "every datagram reached it on the stack");
    }

    /// <summary>A kernel UDP echo server.</summary>
    private const string EchoServer = """
        import socket, sys
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("0.0.0.0", int(sys.argv[1])))
        print("serving", flush=True)
        while True:
            data, source = s.recvfrom(65536)
            s.sendto(data, source)
        """;

    [Test]
    public void The_udp_calls_work_on_an_accelerated_socket_as_on_linux()
    {
        string helper = Dist.TestProgram("udp_calls");
        using var dl = new DriverlinkPair();
        var echo = dl.Peer.Start("/usr/bin/python3", "-c", EchoServer, "7451");
        echo.WaitForOutput("serving", Deadline);
        var before = KernelUdp(dl.Host);

        var p = dl.Host.Start("env", [.. PreloadTcpTests.Settings(dl), Dist.Bin("onload-run"),
            helper, dl.PeerAddress, "7451", "7452", "239.1.2.3", "7453"]);
        p.WaitForOutput("joined", Deadline);
        // The group's datagrams, from the peer's kernel, until the program has one (the first may come before the
        // host's kernel has joined the group).
        string send = "import socket, sys; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); " +
            "s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(sys.argv[1])); " +
            "s.sendto(b'multicast hello', ('239.1.2.3', 7453))";
        Poll.Until(() =>
        {
            using var sender = dl.Peer.Start("/usr/bin/python3", "-c", send, dl.PeerAddress);
            Assert.That(sender.WaitForExit(Deadline) && sender.ExitCode == 0, Is.True, sender.Stderr);
            return p.HasExited || p.Stdout.Contains("ok multicast", StringComparison.Ordinal);
        }, Deadline, "the program received a datagram sent to the group");

        Assert.That(p.WaitForExit(Deadline), Is.True, $"udp_calls finished; stdout: {p.Stdout}");
        Assert.That(p.ExitCode, Is.Zero, p.Stdout + p.Stderr);
        foreach (string step in new[] { "ok implicit bind port=", "ok poll FIONREAD=100", "ok MSG_PEEK MSG_TRUNC recvmsg",
                     "ok sendmmsg recvmmsg", "ok EDESTADDRREQ recvmmsg timeout", "ok EMSGSIZE", "ok epoll",
                     "ok SO_RCVBUF SO_BROADCAST", "ok connect AF_UNSPEC", "ok loopback", "ok ECONNREFUSED", "ok multicast", "ok done" })
            Assert.That(p.Stdout, Does.Contain(step));
        // Two sockets went to the kernel on purpose (the loopback step); every other one was the stack's.
        Assert.That(Regex.Matches(p.Stderr, "handed to the kernel").Count, Is.EqualTo(2), p.Stderr);
        Assert.That(p.Stderr, Does.Contain("accelerated (UDP socket").And.Contain("connected (UDP socket"));
        Assert.That(KernelUdp(dl.Host).Out - before.Out, Is.EqualTo(3),
            "the stack side's kernel sent only the loopback step's three datagrams");
    }

    [GeneratedRegex(@"\[Valid Duration\] RunTime=[\d.]+ sec; SentMessages=(\d+); ReceivedMessages=(\d+)")]
    private static partial Regex SockperfTotals();

    /// <summary>Checks a sockperf ping-pong client's summary: round trips made, none dropped, duplicated or reordered.</summary>
    internal static void AssertCleanPingPong(string output)
    {
        var totals = SockperfTotals().Match(output);
        Assert.That(totals.Success, Is.True, output);
        long sent = long.Parse(totals.Groups[1].Value, CultureInfo.InvariantCulture);
        long received = long.Parse(totals.Groups[2].Value, CultureInfo.InvariantCulture);
        Assert.That(received, Is.GreaterThan(100), "round trips were made");
        Assert.That(received, Is.EqualTo(sent), output);
        Assert.That(output, Does.Contain("# dropped messages = 0; # duplicated messages = 0; # out-of-order messages = 0"));
    }

    [Test]
    public void Sockperf_server_under_onload_run_answers_a_kernel_ping_pong_client()
    {
        using var dl = new DriverlinkPair();
        var server = dl.Host.Start("env", [.. PreloadTcpTests.Settings(dl), Dist.Bin("onload-run"),
            "sockperf", "server", "-i", dl.HostAddress, "-p", "7454"]);
        server.WaitForOutput("bound (UDP socket", Deadline);
        OnloadStackdump.WaitUntil(dl.Host, server.Pid, s => s.Udp.Any(u => u.LocalPort == 7454 && u.LocalAddress == dl.HostAddress),
            Deadline, "sockperf's UDP socket");
        var before = KernelUdp(dl.Host);

        var client = dl.Peer.Start("sockperf", "ping-pong", "-i", dl.HostAddress, "-p", "7454", "-t", "3");

        Assert.That(client.WaitForExit(Deadline), Is.True, "the client finished");
        Assert.That(client.ExitCode, Is.Zero, client.Stdout + client.Stderr);
        AssertCleanPingPong(client.Stdout + client.Stderr);
        Assert.That(server.Stderr, Does.Not.Contain("handed to the kernel"));
        var after = KernelUdp(dl.Host);
        Assert.That(after.In, Is.EqualTo(before.In), "the stack side's kernel received none of the pings");
        Assert.That(after.Out, Is.EqualTo(before.Out), "nor sent any of the pongs");
        var stack = OnloadStackdump.Query(dl.Host, server.Pid);
        Assert.That(stack?.Udp.Single(u => u.LocalPort == 7454).InDatagrams, Is.GreaterThan(100), "the pings reached its socket on the stack");
    }

    [Test]
    public void Sockperf_ping_pong_under_onload_run_gets_answers_from_a_kernel_server()
    {
        using var dl = new DriverlinkPair();
        var server = dl.Peer.Start("sockperf", "server", "-i", dl.PeerAddress, "-p", "7455");
        Poll.Until(() => dl.Peer.Exec("ss -lnu").Contains(":7455 ", StringComparison.Ordinal), Deadline, "the kernel's sockperf server");
        var before = KernelUdp(dl.Host);

        var client = dl.Host.Start("env", [.. PreloadTcpTests.Settings(dl), Dist.Bin("onload-run"),
            "sockperf", "ping-pong", "-i", dl.PeerAddress, "-p", "7455", "-t", "3"]);

        OnloadStackdump.WaitUntil(dl.Host, client.Pid, s => s.Udp.Any(u => u.InDatagrams > 0), Deadline,
            "sockperf's UDP socket receiving the pongs");
        Assert.That(client.WaitForExit(Deadline), Is.True, "the client finished");
        Assert.That(client.ExitCode, Is.Zero, client.Stdout + client.Stderr);
        AssertCleanPingPong(client.Stdout + client.Stderr);
        Assert.That(client.Stderr, Does.Contain("accelerated (UDP socket").And.Not.Contain("handed to the kernel"));
        var after = KernelUdp(dl.Host);
        Assert.That(after.In, Is.EqualTo(before.In), "the stack side's kernel received none of the pongs");
        Assert.That(after.Out, Is.EqualTo(before.Out), "nor sent any of the pings");
    }
}
