using System.Text.RegularExpressions;
using Onload.Tests.Driverlink;
using Onload.Tests.Interop;
using Onload.Tests.Netns;

namespace Onload.Tests.Preload;

/// <summary>
/// SO_REUSEPORT under <c>onload-run</c>, as latency-sensitive servers use it: <c>dist/tests/reuseport</c>
/// (preload/tests/reuseport.c) opens one listener (or UDP socket) per thread on one port, all on the stack, and the
/// same program's kernel clients in the peer namespace connect from many source ports with checked bytes. Every
/// connection and datagram must be served intact and once, and the stack must spread them over the group.
/// </summary>
[Category("netns")]
[NonParallelizable]
public class PreloadReuseportTests
{
    private static readonly TimeSpan Deadline = DriverlinkPair.Deadline;
    private const int Threads = 4;
    /// <summary>With 4 members picked by a hash of each four-tuple, all 64 on one member has odds of 4 in 4^64.</summary>
    private const int Flows = 64;

    [Test]
    public void Connections_to_a_reuseport_group_of_listeners_are_spread_over_them_and_each_echoed_intact()
    {
        using var dl = new DriverlinkPair();
        const int port = 7470;
        var hostBefore = PreloadTcpTests.KernelOpens(dl.Host);
        var server = StartServer(dl, "serve-tcp", port);

        var stack = OnloadStackdump.WaitUntil(dl.Host, server.Pid,
            s => s.Tcp.Count(t => t.State == "LISTEN" && t.LocalPort == port) == Threads, Deadline, $"{Threads} listeners on port {port}");
        Assert.That(stack.Tcp.Where(t => t.LocalPort == port).Select(t => t.LocalAddress), Is.All.EqualTo("0.0.0.0"));

        var clients = dl.Peer.Start(Dist.TestProgram("reuseport"), "tcp-clients", dl.HostAddress, $"{port}", $"{Flows}");
        Assert.That(clients.WaitForExit(Deadline), Is.True, $"the kernel clients finished; stdout: {clients.Stdout}");
        Assert.That(clients.ExitCode, Is.Zero, clients.Stdout + clients.Stderr);
        Assert.That(clients.Stdout, Does.Contain($"ok {Flows} connections intact"));
        AssertServedAcrossTheGroup(server);
        Assert.That(PreloadTcpTests.KernelOpens(dl.Host).Passive, Is.EqualTo(hostBefore.Passive),
            "the host's kernel accepted none of them: the stack did");
    }

    [Test]
    public void Datagrams_to_a_reuseport_group_of_udp_sockets_are_spread_over_them_and_each_received_once()
    {
        using var dl = new DriverlinkPair();
        const int port = 7471;
        var server = StartServer(dl, "serve-udp", port);

        OnloadStackdump.WaitUntil(dl.Host, server.Pid, s => s.Udp.Count(u => u.LocalPort == port) == Threads, Deadline,
            $"{Threads} UDP sockets on port {port}");

        var clients = dl.Peer.Start(Dist.TestProgram("reuseport"), "udp-clients", dl.HostAddress, $"{port}", $"{Flows}");
        Assert.That(clients.WaitForExit(Deadline), Is.True, $"the kernel clients finished; stdout: {clients.Stdout}");
        Assert.That(clients.ExitCode, Is.Zero, clients.Stdout + clients.Stderr);
        Assert.That(clients.Stdout, Does.Contain($"ok {Flows} datagrams echoed intact"));
        AssertServedAcrossTheGroup(server);
    }

    private static NsProcess StartServer(DriverlinkPair dl, string mode, int port)
    {
        var server = dl.Host.Start("env", [.. PreloadTcpTests.Settings(dl), Dist.Bin("onload-run"),
            Dist.TestProgram("reuseport"), mode, $"{port}", $"{Threads}", $"{Flows}"]);
        server.WaitForOutput("listening", Deadline);
        return server;
    }

    /// <summary>The server served every flow (it checks each byte and fails on a datagram seen twice), on more than
    /// one member of the group.</summary>
    private static void AssertServedAcrossTheGroup(NsProcess server)
    {
        Assert.That(server.WaitForExit(Deadline), Is.True, $"the server finished; stdout: {server.Stdout}");
        Assert.That(server.ExitCode, Is.Zero, server.Stdout + server.Stderr);
        Assert.That(server.Stdout, Does.Contain($"ok served {Flows}"));
        var served = Regex.Matches(server.Stdout, @"socket \d+ served (\d+)")
            .Select(m => int.Parse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture)).ToList();
        Assert.That(served, Has.Count.EqualTo(Threads), server.Stdout);
        Assert.That(served.Sum(), Is.EqualTo(Flows), server.Stdout);
        Assert.That(served.Count(n => n > 0), Is.GreaterThanOrEqualTo(2), "more than one member served: " + server.Stdout);
    }
}
