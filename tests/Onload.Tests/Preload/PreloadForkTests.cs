using Onload.Tests.Driverlink;
using Onload.Tests.Interop;
using Onload.Tests.Netns;

namespace Onload.Tests.Preload;

/// <summary>
/// fork and exec under <c>onload-run</c>: at fork the parent's accelerated connections and listeners are handed to
/// the kernel with their state and queued bytes, so parent and child share them as on Linux; vfork, posix_spawn and
/// exec hand over the sockets an exec keeps. The programs are preload/tests/fork_probe.c, vfork_probe.c,
/// fork_server.c, fork_per_connection.c and exec_inherit.c (dist/tests/); the kernel clients are pattern_client.c.
/// Every byte is checked by the programs themselves, which print "ok ..." per step and exit 0.
/// </summary>
[Category("netns")]
[NonParallelizable]
public class PreloadForkTests
{
    private static readonly TimeSpan Deadline = DriverlinkPair.Deadline;

    /// <summary>Longer than <see cref="Deadline"/>: fork_probe streams 20 MB through the echo.</summary>
    private static readonly TimeSpan StreamDeadline = TimeSpan.FromSeconds(90);

    private const string HandedOver = "handed to the kernel";

    [TestCase("exit")]
    [TestCase("_exit")]
    public void A_child_exiting_at_once_after_a_fork_mid_stream_leaves_every_byte_of_the_parents_stream_intact(string how)
    {
        using var dl = new DriverlinkPair();
        StartEchoServer(dl, 7460);
        var hostBefore = PreloadTcpTests.KernelOpens(dl.Host);

        var p = RunUnderOnload(dl, "fork_probe", dl.PeerAddress, "7460", how);
        Assert.That(p.WaitForExit(StreamDeadline), Is.True, $"fork_probe finished; stdout: {p.Stdout}");
        Assert.That(p.ExitCode, Is.Zero, p.Stdout + p.Stderr);
        Assert.That(p.Stdout, Does.Match(@"forked with [1-9]\d* bytes sent and not echoed back to the program, [1-9]\d* of them unread"),
            "the fork came with bytes in flight and echoed bytes unread");
        Assert.That(p.Stdout, Does.Contain("ok child exited 0").And.Contain("ok parent's stream after fork: 20971520 bytes intact")
            .And.Contain("ok parent's new connection after fork").And.Contain("ok done"));
        Assert.That(p.Stderr, Does.Contain("onload: fork:").And.Contain(HandedOver));
        Assert.That(PreloadTcpTests.KernelOpens(dl.Host).Active, Is.EqualTo(hostBefore.Active),
            "both of the parent's connections were opened by the stack (the new one after the fork too)");
    }

    [Test]
    public void A_forked_child_uses_the_inherited_connection_then_the_parent_carries_on_with_it()
    {
        using var dl = new DriverlinkPair();
        StartEchoServer(dl, 7461);
        var hostBefore = PreloadTcpTests.KernelOpens(dl.Host);

        var p = RunUnderOnload(dl, "fork_probe", dl.PeerAddress, "7461", "child-uses");
        Assert.That(p.WaitForExit(StreamDeadline), Is.True, $"fork_probe finished; stdout: {p.Stdout}");
        Assert.That(p.ExitCode, Is.Zero, p.Stdout + p.Stderr);
        Assert.That(p.Stdout, Does.Contain("ok child on the inherited connection").And.Contain("ok child on a connection of its own")
            .And.Contain("ok child exited 0").And.Contain("ok parent's stream after fork: 20971520 bytes intact")
            .And.Contain("ok parent's new connection after fork").And.Contain("ok done"));
        Assert.That(p.Stderr, Does.Contain("onload: fork:").And.Contain(HandedOver).And.Contain("opens its sockets on the kernel"));
        Assert.That(PreloadTcpTests.KernelOpens(dl.Host).Active, Is.EqualTo(hostBefore.Active + 1),
            "the child's own connection was the kernel's; the parent's two were the stack's");
    }

    [Test]
    public void A_vforked_child_closing_its_copy_before_exec_leaves_the_parents_connection_working()
    {
        // vfork's child runs in the parent's memory: through the shim its close() would close the parent's stack
        // socket. The shim makes vfork a fork whose parent waits for the exec, as vfork's does, and hands the
        // sockets an exec keeps to the kernel first.
        using var dl = new DriverlinkPair();
        StartEchoServer(dl, 7462);

        var p = RunUnderOnload(dl, "vfork_probe", dl.PeerAddress, "7462");
        Assert.That(p.WaitForExit(Deadline), Is.True, $"vfork_probe finished; stdout: {p.Stdout}");
        Assert.That(p.ExitCode, Is.Zero, p.Stdout + p.Stderr);
        Assert.That(p.Stdout, Does.Contain("ok before vfork").And.Contain("ok after the child closed its copy and exec'd").And.Contain("ok done"));
        Assert.That(p.Stderr, Does.Contain("connecting (connection").And.Contain(HandedOver), "the stack's connection, handed over at vfork");
    }

    [Test]
    public void A_pre_forking_server_serves_kernel_clients_from_workers_accepting_on_the_inherited_listener()
    {
        using var dl = new DriverlinkPair();
        const int Workers = 3, Connections = 9;
        var server = RunUnderOnload(dl, "fork_server", "7464", $"{Workers}", $"{Connections}");
        server.WaitForOutput($"forked {Workers} workers", Deadline);
        Poll.Until(() => dl.Host.Exec("ss -Hltn").Contains("0.0.0.0:7464", StringComparison.Ordinal), Deadline,
            "the listener on the kernel after the fork");

        var clients = Enumerable.Range(0, Connections).Select(_ => StartServedClient(dl, 7464)).ToList();
        foreach (var c in clients)
            AssertClientOk(c, server, "ok 100000 bytes intact, served by worker ");
        AssertServerServed(server, Connections);
        Assert.That(server.Stderr, Does.Contain("onload: fork:").And.Contain(HandedOver));
    }

    [Test]
    public void A_connection_waiting_in_the_accept_queue_at_the_fork_is_accepted_by_a_worker()
    {
        // As on Linux, a connection the stack completed before the fork is the shared listener's: a worker that
        // accepts gets it (the parent here never accepts).
        using var dl = new DriverlinkPair();
        var server = RunUnderOnload(dl, "fork_server", "7465", "2", "3", "queued");
        server.WaitForOutput("listening", Deadline);
        var early = StartServedClient(dl, 7465);
        server.WaitForOutput("forked 2 workers", Deadline);
        Assert.That(server.Stdout, Does.Contain("a connection is queued"));
        var later = Enumerable.Range(0, 2).Select(_ => StartServedClient(dl, 7465)).ToList();

        foreach (var c in (NsProcess[])[early, .. later])
            AssertClientOk(c, server, "ok 100000 bytes intact, served by worker ");
        AssertServerServed(server, 3);
        Assert.That(server.Stderr, Does.Contain("onload: fork:").And.Contain(HandedOver));
    }

    [Test]
    public void A_reuseport_listener_per_worker_made_before_the_fork_serves_kernel_clients_from_every_worker()
    {
        // nginx's "listen ... reuseport": the master opens a listener per worker on one port, then forks them; each
        // worker accepts on its own. The whole group goes to the kernel at the first fork, and the kernel spreads the
        // connections over it.
        using var dl = new DriverlinkPair();
        var server = RunUnderOnload(dl, "fork_server", "7470", "3", "24", "reuseport");
        server.WaitForOutput("forked 3 workers", Deadline);
        Assert.That(dl.Host.Exec("ss -ltn").Split('\n').Count(l => l.Contains(":7470", StringComparison.Ordinal)), Is.EqualTo(3),
            "three kernel listeners on the port");
        var clients = Enumerable.Range(0, 24).Select(_ => StartServedClient(dl, 7470)).ToList();
        foreach (var c in clients)
            AssertClientOk(c, server, "ok 100000 bytes intact, served by worker ");
        AssertServerServed(server, 24);
        var workers = clients.Select(c => System.Text.RegularExpressions.Regex.Match(c.Stdout, @"served by worker (\d+)").Groups[1].Value)
            .Distinct().Count();
        Assert.That(workers, Is.GreaterThan(1), "the kernel's reuseport group spread the connections over the workers");
        Assert.That(server.Stderr, Does.Contain("onload: fork:").And.Contain(HandedOver).And.Not.Contain("could not"));
    }

    [TestCase("poll")]
    [TestCase("epoll")]
    public void A_connection_waiting_in_the_accept_queue_at_the_fork_wakes_a_worker_polling_the_listener(string wait)
    {
        // Event-driven workers wait in poll (or in an epoll set of their own, made after the fork, as nginx's) for the
        // listener to be readable before they accept: the connection that waited at the fork must make it readable,
        // with no other connection coming to wake them.
        using var dl = new DriverlinkPair();
        var server = RunUnderOnload(dl, "fork_server", "7467", "2", "1", "queued", wait);
        server.WaitForOutput("listening", Deadline);
        var early = StartServedClient(dl, 7467);
        server.WaitForOutput("forked 2 workers", Deadline);

        AssertClientOk(early, server, "ok 100000 bytes intact, served by worker ");
        AssertServerServed(server, 1);
        Assert.That(server.Stdout, Does.Contain("a connection is queued"));
        Assert.That(server.Stderr, Does.Contain("onload: fork:").And.Contain(HandedOver));
    }

    [Test]
    public void A_server_forking_per_connection_echoes_concurrent_and_sequential_clients_without_a_reset()
    {
        using var dl = new DriverlinkPair();
        const int Concurrent = 3, Sequential = 3;
        var server = RunUnderOnload(dl, "fork_per_connection", "7466", $"{Concurrent + Sequential}");
        server.WaitForOutput("listening", Deadline);
        long resetsBefore = PreloadErrnoTests.EstabResets(dl.Peer);

        // Concurrent first: the clients behind the first one may wait in the stack's accept queue at the first fork.
        var concurrent = Enumerable.Range(0, Concurrent).Select(_ => StartEchoClient(dl, 7466)).ToList();
        foreach (var c in concurrent)
            AssertClientOk(c, server, "ok 1000000 bytes intact");
        for (int i = 0; i < Sequential; i++)
            AssertClientOk(StartEchoClient(dl, 7466), server, "ok 1000000 bytes intact");

        AssertServerServed(server, Concurrent + Sequential);
        Assert.That(server.Stderr, Does.Contain("onload: fork:").And.Contain(HandedOver));
        Assert.That(PreloadErrnoTests.EstabResets(dl.Peer), Is.EqualTo(resetsBefore),
            "no connection ended by a reset: the parent's close of its copy closed nothing");
    }

    [Test]
    public void A_connection_inherited_across_fork_exec_vfork_exec_posix_spawn_and_exec_keeps_echoing_and_SOCK_CLOEXEC_ones_close()
    {
        using var dl = new DriverlinkPair();
        StartEchoServer(dl, 7468);
        var hostBefore = PreloadTcpTests.KernelOpens(dl.Host);

        var p = RunUnderOnload(dl, "exec_inherit", dl.PeerAddress, "7468");
        Assert.That(p.WaitForExit(Deadline), Is.True, $"exec_inherit finished; stdout: {p.Stdout}");
        Assert.That(p.ExitCode, Is.Zero, p.Stdout + p.Stderr);
        foreach (string how in (string[])["fork + execv", "vfork + execvp", "posix_spawn"])
            Assert.That(p.Stdout, Does.Contain($"ok before {how}\nok the exec'd child on the inherited connection\nok the parent after {how}\n"));
        Assert.That(p.Stdout, Does.Contain("ok before execl").And.Contain("ok the SOCK_CLOEXEC connection before execl")
            .And.Contain("ok the SOCK_CLOEXEC socket is gone after exec").And.Contain("ok the exec'd program on the inherited connection")
            .And.EndWith("ok done\n"));
        Assert.That(p.Stderr, Does.Contain(HandedOver));
        Assert.That(PreloadTcpTests.KernelOpens(dl.Host).Active, Is.EqualTo(hostBefore.Active),
            "each of the program's five connections was opened by the stack");
    }

    [Test]
    public void A_connection_waiting_on_a_listener_at_exec_is_accepted_by_the_new_program()
    {
        // A server that re-execs itself (a binary upgrade) keeps its listener, and what waits in its accept queue.
        using var dl = new DriverlinkPair();
        var server = RunUnderOnload(dl, "exec_inherit", "listen", "7469");
        server.WaitForOutput("listening", Deadline);
        var client = StartEchoClient(dl, 7469);

        AssertClientOk(client, server, "ok 1000000 bytes intact");
        Assert.That(server.WaitForExit(Deadline), Is.True, $"exec_inherit finished; stdout: {server.Stdout}");
        Assert.That(server.ExitCode, Is.Zero, server.Stdout + server.Stderr);
        Assert.That(server.Stdout, Does.Contain("ok a connection is queued at exec")
            .And.Contain("ok the exec'd program accepted the connection queued at exec").And.Contain("ok done"));
        Assert.That(server.Stderr, Does.Contain(HandedOver));
    }

    [Test]
    public void A_forked_child_answers_on_the_inherited_udp_socket_and_the_parent_after_it()
    {
        using var dl = new DriverlinkPair();
        var server = RunUnderOnload(dl, "udp_fork", "7469");
        server.WaitForOutput("bound", Deadline);
        string Ask(string message) => System.Text.Encoding.ASCII.GetString(
            dl.Peer.Pipe($"socat -t 5 - UDP:{dl.HostAddress}:7469", System.Text.Encoding.ASCII.GetBytes(message), Deadline));

        var exchanges = new[] { ("one", "parent: one"), ("two", "child: two"), ("three", "child: three"), ("four", "parent after: four") };
        foreach (var (question, answer) in exchanges)
            Assert.That(Ask(question), Is.EqualTo(answer), () => $"udp_fork: {server.Stdout}{server.Stderr}");
        Assert.That(server.WaitForExit(Deadline), Is.True, $"udp_fork finished; stdout: {server.Stdout}");
        Assert.That(server.ExitCode, Is.Zero, server.Stdout + server.Stderr);
        Assert.That(server.Stderr, Does.Contain("onload: fork:").And.Contain(HandedOver));
    }

    /// <summary>A kernel echo server on the peer (socat PIPE), one process per connection.</summary>
    private static void StartEchoServer(DriverlinkPair dl, int port)
    {
        dl.Peer.Start("socat", "-b", "4096", $"TCP-LISTEN:{port},reuseaddr,fork", "PIPE");
        Poll.Until(() => dl.Peer.Exec("ss -lnt").Contains($":{port}", StringComparison.Ordinal), Deadline, "the kernel's echo server listening");
    }

    private static NsProcess RunUnderOnload(DriverlinkPair dl, string program, params string[] args) =>
        dl.Host.Start("env", [.. PreloadTcpTests.Settings(dl), Dist.Bin("onload-run"), Dist.TestProgram(program), .. args]);

    /// <summary>A kernel client on the peer echoing 1 MB of a checked pattern through the server at <paramref name="port"/>.</summary>
    private static NsProcess StartEchoClient(DriverlinkPair dl, int port) =>
        dl.Peer.Start(Dist.TestProgram("pattern_client"), dl.HostAddress, $"{port}", "1000000", "echo");

    /// <summary>A kernel client on the peer asking fork_server at <paramref name="port"/> to echo 100 KB.</summary>
    private static NsProcess StartServedClient(DriverlinkPair dl, int port) =>
        dl.Peer.Start(Dist.TestProgram("pattern_client"), dl.HostAddress, $"{port}", "100000", "served");

    /// <summary>The server (fork_server, fork_per_connection) exited 0 once it had served <paramref name="connections"/>.</summary>
    private static void AssertServerServed(NsProcess server, int connections)
    {
        Assert.That(server.WaitForExit(Deadline), Is.True, $"the server finished; stdout: {server.Stdout}");
        Assert.That(server.ExitCode, Is.Zero, server.Stdout + server.Stderr);
        Assert.That(server.Stdout, Does.Contain($"ok {connections} connections served"));
    }

    private static void AssertClientOk(NsProcess client, NsProcess server, string expected)
    {
        Assert.That(client.WaitForExit(Deadline), Is.True, $"a client finished; stdout: {client.Stdout}; server: {server.Stdout}{server.Stderr}");
        Assert.That(client.ExitCode, Is.Zero, $"{client.Stdout}{client.Stderr}; server: {server.Stdout}{server.Stderr}");
        Assert.That(client.Stdout, Does.Contain(expected));
    }
}
