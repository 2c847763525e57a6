using System.Security.Cryptography;
using System.Text.RegularExpressions;
using Onload.Tests.Driverlink;
using Onload.Tests.Interop;
using Onload.Tests.Netns;

namespace Onload.Tests.Preload;

/// <summary>
/// epoll under <c>onload-run</c> on a set that mixes accelerated sockets with kernel fds: <c>dist/tests/epoll_echo</c>
/// (preload/tests/epoll_echo.c) serves TCP echo from one epoll set holding its listener and connection (on the stack)
/// and a pipe, an eventfd and a timerfd (on the kernel), driven by a kernel socat in the peer namespace.
/// </summary>
[Category("netns")]
[NonParallelizable]
public class PreloadEpollTests
{
    private static readonly TimeSpan Deadline = DriverlinkPair.Deadline;

    private static string Helper(string name) => Dist.TestProgram(name);

    private static long Count(string line, string name) =>
        long.Parse(Regex.Match(line, $@"\b{name}=(\d+)").Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture);

    [TestCase("lt", 7410)]
    [TestCase("et", 7411)]
    [TestCase("oneshot", 7412)]
    public void An_epoll_server_on_accelerated_sockets_and_kernel_fds_echoes_a_megabyte_and_sees_every_kernel_event(string mode, int port)
    {
        using var dl = new DriverlinkPair();
        var server = dl.Host.Start("env", [$"ONLOAD_INTERFACE={dl.Interface}", $"ONLOAD_DRIVERD_SOCKET={dl.SocketName}",
            "ONLOAD_DRIVERD_AUTOSTART=0", "ONLOAD_DEBUG=1", Dist.Bin("onload-run"), Helper("epoll_echo"), port.ToString(System.Globalization.CultureInfo.InvariantCulture), mode]);
        server.WaitForOutput("ready", Deadline);

        var blob = RandomNumberGenerator.GetBytes(1_000_000);
        var back = dl.Peer.Pipe($"socat -b 65536 -t 30 - TCP:{dl.HostAddress}:{port}", blob, Deadline);

        Assert.That(back, Is.EqualTo(blob), "every byte echoed, in order");
        Assert.That(server.WaitForExit(Deadline), Is.True, "the server ends after its one connection");
        Assert.That(server.ExitCode, Is.Zero, server.Stderr);
        Assert.That(server.Stderr, Does.Contain("accepted on fd").And.Contain("added"), "the connection was accepted on the stack and epolled there");
        string counts = server.Stdout.Split('\n').Single(l => l.StartsWith("bytes=", StringComparison.Ordinal));
        Assert.That(Count(counts, "bytes"), Is.EqualTo(blob.Length), counts);
        Assert.That(Count(counts, "pipe"), Is.EqualTo(Count(counts, "chunks")), "every byte written to the pipe came back through epoll: " + counts);
        Assert.That(Count(counts, "eventfd"), Is.EqualTo(1), counts);
        Assert.That(Count(counts, "ticks"), Is.GreaterThan(0), "the timerfd woke the set: " + counts);
        // Edge-triggered, the FIN can arrive during the read loop that drains the data, and then no event carries it.
        if (mode != "et")
            Assert.That(Count(counts, "rdhup"), Is.GreaterThanOrEqualTo(1), "the peer's FIN was EPOLLRDHUP: " + counts);
    }

    [Test]
    public void A_thread_asleep_in_epoll_wait_on_an_empty_set_wakes_for_an_accelerated_socket_another_thread_adds()
    {
        // The .NET runtime's socket engine: its epoll thread waits before the first socket is added.
        using var dl = new DriverlinkPair();
        dl.Peer.Start("socat", "TCP-LISTEN:7413,reuseaddr", "PIPE");
        Poll.Until(() => dl.Peer.Exec("ss -lnt").Contains(":7413 ", StringComparison.Ordinal), Deadline, "the kernel's server listening");

        var p = dl.Host.Start("env", [.. PreloadTcpTests.Settings(dl), Dist.Bin("onload-run"), Helper("epoll_late_member"), dl.PeerAddress, "7413"]);

        Assert.That(p.WaitForExit(Deadline), Is.True, "epoll_late_member finished");
        Assert.That(p.ExitCode, Is.Zero, p.Stdout + p.Stderr);
        Assert.That(p.Stdout, Does.Contain("woke EPOLLOUT"));
        Assert.That(p.Stderr, Does.Contain("connecting (connection").And.Contain("added"), "the socket and its epoll membership were the stack's");
    }

    [Test]
    public void A_thread_asleep_in_epoll_wait_wakes_when_another_re_arms_a_ready_oneshot_member()
    {
        // dist/tests/epoll_rearm (preload/tests/epoll_rearm.c): the member's data is there while it is disarmed; a
        // second thread sleeps in epoll_wait (5 s timeout); the first re-arms the member with EPOLL_CTL_MOD.
        using var dl = new DriverlinkPair();
        using var echo = dl.Peer.Start("socat", "TCP-LISTEN:7413,reuseaddr", "PIPE");
        Poll.Until(() => dl.Peer.Exec("ss -lnt").Contains(":7413 ", StringComparison.Ordinal), Deadline, "the kernel echo server");

        var program = dl.Host.Start("env", [.. PreloadTcpTests.Settings(dl), Dist.Bin("onload-run"), Helper("epoll_rearm"), dl.PeerAddress, "7413"]);

        Assert.That(program.WaitForExit(Deadline), Is.True, "epoll_rearm finished");
        Assert.That(program.ExitCode, Is.Zero, program.Stdout + program.Stderr);
        Assert.That(program.Stderr, Does.Contain("connecting (connection"), "its connection was the stack's");
        var woke = Regex.Match(program.Stdout, @"woke after (\d+) ms");
        Assert.That(woke.Success, Is.True, program.Stdout);
        Assert.That(int.Parse(woke.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture), Is.LessThan(1000),
            "woken by the re-arm, not by its 5 s timeout");
    }
}
