using Onload.Driverlink;
using Onload.StackDump;
using Onload.Tests.Driverlink;
using Onload.Tests.Interop;
using Onload.Tests.Netns;

namespace Onload.Tests.Preload;

/// <summary>
/// <c>onload-stackdump</c>, run as a separate process in the program's namespace while the program runs, shows the
/// program's stack: its interface and VNIC, its listener and connections with the kernel peer, its counters, and what
/// the stack's runtime allocated.
/// </summary>
[Category("netns")]
[NonParallelizable]
public class StackdumpTests
{
    private static readonly TimeSpan Deadline = DriverlinkPair.Deadline;

    [Test]
    public void Stackdump_shows_an_accelerated_iperf3_server_listening_and_connected_to_its_kernel_client()
    {
        using var dl = new DriverlinkPair();
        const int port = 7440;
        var server = dl.Host.Start("env", [.. PreloadTcpTests.Settings(dl), Dist.Bin("onload-run"),
            "iperf3", "-s", "-1", "-p", $"{port}", "-B", dl.HostAddress]);
        server.WaitForOutput("listening", Deadline);
        var client = dl.Peer.Start("iperf3", "-c", dl.HostAddress, "-p", $"{port}", "-t", "4");

        // iperf3 holds its listener, its control connection and (once the test starts) its data connection.
        var stack = OnloadStackdump.WaitUntil(dl.Host, server.Pid, s => s.Established(port, dl.PeerAddress).Count == 2,
            Deadline, "the control and data connections established");

        Assert.That(OnloadStackdump.All(dl.Host).Select(s => s.Pid), Is.EqualTo(new[] { server.Pid }), "one stack in the namespace: iperf3's");
        Assert.That(stack.Command, Does.StartWith("iperf3 -s"));
        Assert.That(stack.Interface, Is.EqualTo(dl.Interface));
        Assert.That(stack.Address, Does.StartWith(dl.HostAddress + "/"));
        Assert.That(stack.LinkUp, Is.True);
        Assert.That(stack.Vnic.Mode, Is.EqualTo("shared"));
        Assert.That(stack.Vnic.RxFrames, Is.GreaterThan(0), "the VNIC received the client's frames");
        var listener = stack.Listening(port);
        Assert.That(listener, Is.Not.Null, "iperf3's listener is on the stack");
        Assert.That(listener!.LocalAddress, Is.EqualTo(dl.HostAddress));
        foreach (var c in stack.Established(port, dl.PeerAddress))
        {
            Assert.That(c.LocalAddress, Is.EqualTo(dl.HostAddress));
            Assert.That(c.RemotePort, Is.Positive);
            Assert.That(c.Mss, Is.Positive);
            Assert.That(c.Cwnd, Is.Positive);
        }
        Assert.That(stack.Counters["TcpPassiveOpens"], Is.EqualTo(2), "the stack accepted both connections");
        Assert.That(stack.Counters["TcpInSegs"], Is.Positive);

        var human = OnloadStackdump.Run(dl.Host);
        TestContext.Out.WriteLine(human.Stdout);
        Assert.That(human.ExitCode, Is.Zero, human.Stderr);
        Assert.That(human.Stdout, Does.Contain($"stack of pid {server.Pid}: iperf3 -s"));
        Assert.That(human.Stdout, Does.Match($@"LISTEN +\d+ +\d+ +{dl.HostAddress}:{port} +\*:\*"), human.Stdout);
        Assert.That(human.Stdout, Does.Match($@"ESTABLISHED +\d+ +\d+ +{dl.HostAddress}:{port} +{dl.PeerAddress}:\d+"), human.Stdout);
        Assert.That(human.Stdout, Does.Contain($"interface {dl.Interface}"));

        Assert.That(client.WaitForExit(Deadline), Is.True, "the kernel's iperf3 client finished");
        Assert.That(client.ExitCode, Is.Zero, client.Stdout + client.Stderr);
        Assert.That(server.WaitForExit(Deadline), Is.True, "iperf3 -s -1 ends after its one test");
    }

    [Test]
    public void Stackdump_shows_an_accelerated_socat_client_connected_to_a_kernel_server()
    {
        using var dl = new DriverlinkPair();
        const int port = 7442;
        // The kernel's server holds the connection open, sending nothing, until the test ends.
        dl.Peer.Start("socat", $"TCP-LISTEN:{port},reuseaddr", "SYSTEM:sleep 30");
        Poll.Until(() => dl.Peer.Exec("ss -lnt").Contains($":{port} ", StringComparison.Ordinal), Deadline, "the kernel's server listening");
        var client = dl.Host.Start("env", [.. PreloadTcpTests.Settings(dl), Dist.Bin("onload-run"),
            "socat", "-u", $"TCP:{dl.PeerAddress}:{port}", "STDOUT"]);

        var stack = OnloadStackdump.WaitUntil(dl.Host, client.Pid, s => s.ConnectedTo(dl.PeerAddress, port).Count == 1,
            Deadline, "socat's connection to the kernel server");

        var c = stack.ConnectedTo(dl.PeerAddress, port)[0];
        Assert.That(c.LocalAddress, Is.EqualTo(dl.HostAddress));
        Assert.That(c.LocalPort, Is.Positive, "an ephemeral port of the stack's");
        Assert.That(stack.Tcp, Has.Count.EqualTo(1), "socat's one socket, no listener");
        Assert.That(stack.Counters["TcpActiveOpens"], Is.EqualTo(1));
    }

    /// <summary>
    /// The issue 8 target, "zero bytes allocated per message in steady state", checked on an unmodified program: an
    /// accelerated sockperf server answers a kernel sockperf client, and dumps are taken with only the listening
    /// socket, after a warm-up, and after thousands more round trips on the same socket or connection.
    /// </summary>
    [TestCase("udp", 7444)]
    [TestCase("tcp", 7445)]
    public void A_ping_pong_server_in_steady_state_allocates_nothing_and_runs_no_gc_between_two_dumps(string protocol, int port)
    {
        using var dl = new DriverlinkPair();
        string[] tcp = protocol == "tcp" ? ["--tcp"] : [];
        Assert.That(dl.Host.Exec($"ping -c 1 -W 2 {dl.PeerAddress}"), Does.Contain("1 received"), "the kernel resolved the peer");
        var server = dl.Host.Start("env", [.. PreloadTcpTests.Settings(dl), Dist.Bin("onload-run"),
            "sockperf", "server", .. tcp, "-i", dl.HostAddress, "-p", $"{port}"]);
        var idle = OnloadStackdump.WaitUntil(dl.Host, server.Pid,
            s => protocol == "tcp" ? s.Listening(port) is not null : s.Udp.Any(u => u.LocalPort == port), Deadline, "sockperf's socket");

        // As long as the test needs: it ends with the namespace.
        dl.Peer.Start("sockperf", ["ping-pong", .. tcp, "-i", dl.HostAddress, "-p", $"{port}", "-t", "60"]);
        var (warm, steady) = AssertSteadyStateAllocatesNothing(dl, server.Pid, protocol);

        TestContext.Out.WriteLine($"listening: {idle.Runtime}");
        foreach (var r in new[] { idle.Runtime, warm.Runtime, steady.Runtime })
        {
            Assert.That(r.AllocatedBytes, Is.Positive, "starting the stack allocated");
            Assert.That(r.Gen2Collections, Is.Not.Negative);
            Assert.That(r.Gen1Collections, Is.GreaterThanOrEqualTo(r.Gen2Collections), "a full collection collects generation 1 too");
            Assert.That(r.Gen0Collections, Is.GreaterThanOrEqualTo(r.Gen1Collections), "every collection collects generation 0");
            Assert.That(r.HeapBytes, Is.Positive);
        }
        Assert.That(warm.Runtime.AllocatedBytes, Is.GreaterThanOrEqualTo(idle.Runtime.AllocatedBytes), "a running total");
        Assert.That(warm.Runtime.Gen0Collections, Is.GreaterThanOrEqualTo(idle.Runtime.Gen0Collections), "a running count");

        var human = OnloadStackdump.Run(dl.Host);
        Assert.That(human.Stdout, Does.Match(@"runtime: allocated \d+ B .*GCs gen0 \d+ gen1 \d+ gen2 \d+"), human.Stdout);
    }

    /// <summary>
    /// The calls a program makes around its messages besides sending and receiving allocate nothing either:
    /// per_message_calls (preload/tests/per_message_calls.c), accelerated, ping-pongs with a kernel echo server and
    /// calls, per message, ioctl FIONREAD, getsockopt SO_ERROR and a setsockopt the stack takes (TCP_NODELAY, or
    /// IP_MULTICAST_TTL on UDP), and on TCP ioctl SIOCOUTQ and getsockopt SO_RCVBUF too.
    /// </summary>
    [TestCase("udp", 7446)]
    [TestCase("tcp", 7447)]
    public void A_client_calling_ioctl_getsockopt_and_setsockopt_per_message_allocates_nothing_between_two_dumps(string protocol, int port)
    {
        using var dl = new DriverlinkPair();
        Assert.That(dl.Host.Exec($"ping -c 1 -W 2 {dl.PeerAddress}"), Does.Contain("1 received"), "the kernel resolved the peer");
        dl.Peer.Start("socat", protocol == "tcp" ? $"TCP4-LISTEN:{port},reuseaddr" : $"UDP4-LISTEN:{port}", "PIPE");
        Poll.Until(() => dl.Peer.Exec(protocol == "tcp" ? "ss -lnt" : "ss -lnu").Contains($":{port} ", StringComparison.Ordinal),
            Deadline, "the kernel's echo server");
        var client = dl.Host.Start("env", [.. PreloadTcpTests.Settings(dl), Dist.Bin("onload-run"),
            Dist.TestProgram("per_message_calls"), protocol, dl.PeerAddress, $"{port}"]);
        client.WaitForOutput("connected", Deadline);

        AssertSteadyStateAllocatesNothing(dl, client.Pid, protocol);

        Assert.That(client.HasExited, Is.False, $"per_message_calls still exchanging messages; stdout: {client.Stdout}");
    }

    /// <summary>Messages the stack received: its one UDP socket's datagrams, or its one connection's segments.</summary>
    private static long Received(StackSnapshot s, string protocol) =>
        protocol == "tcp" ? s.Counters["TcpInSegs"] : s.Counters["UdpInDatagrams"];

    /// <summary>
    /// Dumps the stack of <paramref name="pid"/>, whose messages are flowing, after a warm-up and again after thousands
    /// more messages, and checks that its runtime allocated nothing and ran no collection between the two dumps. The
    /// kernel must know the peer's MAC before the program starts, so the stack learns it as it attaches: a neighbour
    /// the daemon resolves during the measurement costs the driverlink client its event message (control plane, not
    /// the data path under test), while the kernel entry's state changes under traffic, its MAC the same, cost
    /// nothing (the daemon sends no event for them). Returns the two dumps.
    /// </summary>
    private static (StackSnapshot Warm, StackSnapshot Steady) AssertSteadyStateAllocatesNothing(DriverlinkPair dl, int pid, string protocol)
    {
        const long WarmUp = 2_000, Measured = 5_000;
        var warm = OnloadStackdump.WaitUntil(dl.Host, pid, s => Received(s, protocol) >= WarmUp, Deadline, $"{WarmUp} messages received");
        var steady = OnloadStackdump.WaitUntil(dl.Host, pid, s => Received(s, protocol) >= Received(warm, protocol) + Measured,
            Deadline, $"{Measured} more messages received");

        TestContext.Out.WriteLine($"after {Received(warm, protocol)} messages: {warm.Runtime}");
        TestContext.Out.WriteLine($"after {Received(steady, protocol)} messages: {steady.Runtime}");
        Assert.That(steady.Runtime.AllocatedBytes - warm.Runtime.AllocatedBytes, Is.Zero,
            $"bytes allocated over {Received(steady, protocol) - Received(warm, protocol)} messages in steady state " +
            $"(neighbour events from the daemon meanwhile: {steady.Counters["ArpInControlUpdates"] - warm.Counters["ArpInControlUpdates"]})");
        Assert.That(steady.Runtime.Gen0Collections, Is.EqualTo(warm.Runtime.Gen0Collections), "no collection in steady state");
        return (warm, steady);
    }

    [Test]
    public void Stackdump_says_no_onload_stacks_in_a_namespace_without_any()
    {
        using var pair = new NamespacePair();

        var human = OnloadStackdump.Run(pair.Stack);
        var json = OnloadStackdump.Run(pair.Stack, "--json");
        var one = OnloadStackdump.Run(pair.Stack, "--pid", "1");

        Assert.That(human.ExitCode, Is.Zero, human.Stderr);
        Assert.That(human.Stdout.Trim(), Is.EqualTo("no Onload stacks"));
        Assert.That(json.ExitCode, Is.Zero, json.Stderr);
        Assert.That(json.Stdout.Trim(), Is.EqualTo("[]"), "--json stays a JSON document");
        Assert.That(one.ExitCode, Is.EqualTo(1), "asking for a stack that is not there is an error");
        Assert.That(one.Stderr, Does.Contain("pid 1 has no Onload stack"));
    }

    [Test]
    public void A_stack_refuses_a_stackdump_run_by_another_user()
    {
        using var dl = new DriverlinkPair();
        var server = dl.Host.Start("env", [.. PreloadTcpTests.Settings(dl), Dist.Bin("onload-run"),
            "socat", "TCP-LISTEN:7443,reuseaddr", "PIPE"]);
        server.WaitForOutput("listening", Deadline);
        OnloadStackdump.WaitUntil(dl.Host, server.Pid, s => s.Listening(7443) is not null, Deadline, "socat's listener");

        // An abstract socket has no file permissions: anyone in the namespace can connect, so the stack checks who.
        var r = Netns.Netns.Exec("ip", ["netns", "exec", dl.Host.Name, "setpriv", "--reuid", "65534", "--regid", "65534",
            "--clear-groups", Dist.Bin("onload-stackdump"), "--json", "--pid", $"{server.Pid}"], Deadline);

        Assert.That(r.ExitCode, Is.EqualTo(1), r.Stdout + r.Stderr);
        Assert.That(r.Stderr, Does.Contain($"pid {server.Pid}: permission denied"));
        Assert.That(r.Stdout.Trim(), Is.EqualTo("[]"), "nothing of the stack shown");
    }

    [Test]
    public void Stackdump_reports_a_stopped_program_after_its_deadline_instead_of_hanging_even_with_its_backlog_full()
    {
        using var dl = new DriverlinkPair();
        var server = dl.Host.Start("env", [.. PreloadTcpTests.Settings(dl), Dist.Bin("onload-run"),
            "socat", "TCP-LISTEN:7441,reuseaddr", "PIPE"]);
        server.WaitForOutput("listening", Deadline);
        OnloadStackdump.WaitUntil(dl.Host, server.Pid, s => s.Listening(7441) is not null, Deadline, "socat's listener");

        Netns.Netns.Run($"kill -STOP {server.Pid}");
        var held = new List<DriverlinkSocket>();
        try
        {
            var started = DateTime.UtcNow;
            var r = OnloadStackdump.Run(dl.Host);
            var took = DateTime.UtcNow - started;

            Assert.That(r.ExitCode, Is.EqualTo(1), "a stack that did not answer is an error");
            Assert.That(r.Stderr, Does.Contain($"pid {server.Pid}: no answer within 1000 ms"));
            Assert.That(took, Is.LessThan(TimeSpan.FromSeconds(10)), "the tool gave up on its own");

            // Requests left unanswered fill the stack's listen backlog (8); a blocking connect would then wait for good.
            bool full = dl.InHost(() =>
            {
                while (held.Count < 64)
                {
                    try
                    {
                        held.Add(DriverlinkSocket.Connect(StackDumpProtocol.Name(server.Pid), timeoutMs: 0));
                    }
                    catch (DriverlinkSocketException e) when (e.Errno == (int)Onload.Stack.Errno.EAGAIN)
                    {
                        return true;
                    }
                }
                return false;
            });
            Assert.That(full, Is.True, "the backlog filled up");
            started = DateTime.UtcNow;
            r = OnloadStackdump.Run(dl.Host);
            Assert.That(r.Stderr, Does.Contain($"pid {server.Pid}: no answer within 1000 ms (its queue of dump requests is full)"));
            Assert.That(DateTime.UtcNow - started, Is.LessThan(TimeSpan.FromSeconds(10)), "the tool gave up on its own");
        }
        finally
        {
            held.ForEach(h => h.Dispose());
            Netns.Netns.Run($"kill -CONT {server.Pid}");
        }
        Assert.That(OnloadStackdump.Query(dl.Host, server.Pid)?.Listening(7441), Is.Not.Null, "once resumed it answers again");
    }
}
