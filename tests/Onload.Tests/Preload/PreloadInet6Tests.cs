using System.Globalization;
using Onload.Tests.Driverlink;
using Onload.Tests.Interop;
using Onload.Tests.Netns;

namespace Onload.Tests.Preload;

/// <summary>
/// AF_INET6 stream and datagram sockets under <c>onload-run</c>: a dual-stack socket that talks to an IPv4 peer through
/// its v4-mapped address (::ffff:a.b.c.d) runs on the stack and sees sockaddr_in6 names; IPv6 proper, an IPv6-only
/// socket and loopback stay the kernel's and behave as on Linux. <c>dist/tests/inet6_calls</c> and
/// <c>dist/tests/udp6_calls</c> (preload/tests) check each call's result; here the tests check that every step passed
/// and what the kernel carried.
/// </summary>
[Category("netns")]
[NonParallelizable]
public class PreloadInet6Tests
{
    private static readonly TimeSpan Deadline = DriverlinkPair.Deadline;

    /// <summary>
    /// Turns IPv6 on for both veth ends (the fixture turns it off) with a ULA address each, for the traffic that must
    /// go to the kernel even on the accelerated interface. Returns (stack side, peer) addresses.
    /// </summary>
    internal static (string Host, string Peer) AddIpv6(DriverlinkPair dl)
    {
        string prefix = $"fd00:77:{dl.Pair.Instance:x}::";
        foreach (var (ns, ifname, address) in new[] { (dl.Host, dl.Interface, prefix + "2"), (dl.Peer, dl.Pair.KernelIf, prefix + "1") })
        {
            ns.Exec($"sysctl -qw net.ipv6.conf.{ifname}.disable_ipv6=0");
            ns.Ip($"-6 addr add {address}/64 dev {ifname} nodad");
        }
        return (prefix + "2", prefix + "1");
    }

    [Test]
    public void A_dual_stack_socket_reaches_an_ipv4_peer_on_the_stack_and_ipv6_loopback_and_ipv6_only_on_the_kernel()
    {
        string helper = Dist.TestProgram("inet6_calls");
        using var dl = new DriverlinkPair();
        var (_, peer6) = AddIpv6(dl);
        // One echo server for both families: an IPv6 socket with IPV6_V6ONLY off.
        dl.Peer.Start("socat", "-b", "4096", "TCP6-LISTEN:7440,ipv6only=0,reuseaddr,fork", "PIPE");
        Poll.Until(() => dl.Peer.Exec("ss -lnt").Contains(":7440", StringComparison.Ordinal), Deadline, "the kernel's echo server listening");
        var before = PreloadTcpTests.KernelOpens(dl.Host);
        var peerBefore = PreloadTcpTests.KernelOpens(dl.Peer);

        var p = dl.Host.Start("env", [.. PreloadTcpTests.Settings(dl), Dist.Bin("onload-run"), helper, dl.PeerAddress, peer6, "7440", dl.HostAddress]);
        Assert.That(p.WaitForExit(Deadline), Is.True, $"inet6_calls finished; stdout: {p.Stdout}");
        Assert.That(p.ExitCode, Is.Zero, p.Stdout + p.Stderr);
        foreach (string step in new[] { "ok V6ONLY default=0 readback", "ok unbound name [::]:0",
                     $"ok mapped names local [::ffff:{dl.HostAddress}]:", $"peer [::ffff:{dl.PeerAddress}]:7440", "ok truncated name",
                     "ok mapped echo", "ok v6only mapped ENETUNREACH", "ok v6only bind", "ok ipv6 echo", "ok loopback ECONNREFUSED", "ok done" })
            Assert.That(p.Stdout, Does.Contain(step));

        Assert.That(p.Stderr, Does.Contain(", AF_INET6)"), "the shim took the AF_INET6 sockets");
        Assert.That(p.Stderr.Split('\n').Count(l => l.Contains("connecting (connection", StringComparison.Ordinal)), Is.EqualTo(1),
            "one connection, the v4-mapped one, went on the stack");
        Assert.That(p.Stderr, Does.Contain("handed to the kernel: not an IPv4 destination"), "the IPv6 one went to the kernel");
        Assert.That(p.Stderr, Does.Contain("handed to the kernel: bound to an IPv6 address or IPv6-only"), "so did the IPv6-only bind");
        Assert.That(p.Stderr, Does.Contain("handed to the kernel: a local destination"), "::ffff:127.0.0.1 went to the kernel");
        // The peer's kernel accepted the v4-mapped and the IPv6 connection; the stack side's kernel opened only the IPv6
        // one and the refused loopback one (the IPv6-only socket failed before any SYN).
        Assert.That(PreloadTcpTests.KernelOpens(dl.Peer).Passive, Is.EqualTo(peerBefore.Passive + 2), "the peer accepted two connections");
        Assert.That(PreloadTcpTests.KernelOpens(dl.Host).Active, Is.EqualTo(before.Active + 2),
            "the stack side's kernel opened the IPv6 and the loopback connection, not the v4-mapped one");
    }

    /// <summary>A kernel UDP echo server for both families: an IPv6 socket with IPV6_V6ONLY off.</summary>
    private const string DualStackEchoServer = """
        import socket, sys
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        s.bind(("::", int(sys.argv[1])))
        print("serving", flush=True)
        while True:
            data, source = s.recvfrom(65536)
            s.sendto(data, source)
        """;

    /// <summary>A kernel IPv4 client: datagrams of several sizes to the server, each echo checked byte for byte and
    /// for its source, then "end".</summary>
    private const string EchoClient = """
        import os, socket, sys
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(5)
        server = (sys.argv[1], int(sys.argv[2]))
        n = 0
        for _ in range(int(sys.argv[3])):
            for size in (1, 100, 1000, 1472):
                data = os.urandom(size)
                s.sendto(data, server)
                back, source = s.recvfrom(65536)
                if back != data or source != server:
                    sys.exit(f"datagram {n}: sent {size} bytes, got {len(back)} from {source}")
                n += 1
        s.sendto(b"end", server)
        print(f"echoed {n}")
        """;

    [Test]
    public void A_dual_stack_udp_socket_reaches_ipv4_on_the_stack_with_v4_mapped_addresses_and_ipv6_on_the_kernel()
    {
        string helper = Dist.TestProgram("udp6_calls");
        using var dl = new DriverlinkPair();
        var (_, peer6) = AddIpv6(dl);
        var echo = dl.Peer.Start("/usr/bin/python3", "-c", DualStackEchoServer, "7480");
        echo.WaitForOutput("serving", Deadline);
        var before = PreloadUdpTests.KernelUdp(dl.Host);

        var p = dl.Host.Start("env", [.. PreloadTcpTests.Settings(dl), Dist.Bin("onload-run"),
            helper, dl.PeerAddress, peer6, "7480", "7481", dl.HostAddress, "7482"]);
        p.WaitForOutput("serving", Deadline);
        // Its server socket, bound to [::]:7482, is the stack's 0.0.0.0:7482.
        OnloadStackdump.WaitUntil(dl.Host, p.Pid, s => s.Udp.Any(u => u.LocalPort == 7482 && u.LocalAddress == "0.0.0.0"),
            Deadline, "the dual-stack server socket on the stack");
        const int Rounds = 10;
        var client = dl.Peer.Start("/usr/bin/python3", "-c", EchoClient, dl.HostAddress, "7482", Rounds.ToString(CultureInfo.InvariantCulture));
        Assert.That(client.WaitForExit(Deadline), Is.True, "the client finished");
        Assert.That(client.ExitCode, Is.Zero, client.Stderr);
        Assert.That(client.Stdout, Does.Contain($"echoed {4 * Rounds}"));

        Assert.That(p.WaitForExit(Deadline), Is.True, $"udp6_calls finished; stdout: {p.Stdout}");
        Assert.That(p.ExitCode, Is.Zero, p.Stdout + p.Stderr);
        foreach (string step in new[] { "ok unbound name [::]:0", $"ok sendto recvfrom from [::ffff:{dl.PeerAddress}]:7480 local [::]:",
                     "ok truncated address", "ok sendmsg recvmsg", "ok sockaddr_in destination", "ok sendmmsg recvmmsg",
                     "ok V6ONLY after bind EINVAL", $"ok connected names local [::ffff:{dl.HostAddress}]:",
                     $"peer [::ffff:{dl.PeerAddress}]:7480 echo", "ok ECONNREFUSED", "ok IP_ADD_MEMBERSHIP",
                     "ok v6only ENETUNREACH bind", "ok ipv6 echo", "ok IPV6_JOIN_GROUP before bind", $"ok served {4 * Rounds} from [::ffff:{dl.PeerAddress}]:", "ok done" })
            Assert.That(p.Stdout, Does.Contain(step));
        // The kernel would send an IPv6 datagram from the socket the stack already bound; the stack cannot, and says so.
        Assert.That(p.Stdout, Does.Contain("ok ipv6 destination on a bound socket: ENETUNREACH"));
        Assert.That(p.Stderr, Does.Contain("a datagram to an IPv6 address on a UDP socket already bound on the stack"));
        // So with an IPv6 group: a socket not bound yet went to the kernel to join it; a bound one cannot join.
        Assert.That(p.Stdout, Does.Contain("ok IPV6_JOIN_GROUP on a bound socket: ENODEV"));
        Assert.That(p.Stderr, Does.Contain("handed to the kernel: joining an IPv6 group"));

        Assert.That(p.Stderr, Does.Contain("accelerated (UDP socket").And.Contain(", AF_INET6)"), "the shim took the AF_INET6 UDP sockets");
        Assert.That(p.Stderr.Split('\n').Count(l => l.Contains("handed to the kernel: not an IPv4 destination", StringComparison.Ordinal)),
            Is.EqualTo(2), "the IPv6-only socket's sendto and the IPv6 echo went to the kernel, nothing else: " + p.Stderr);
        Assert.That(p.Stderr, Does.Contain("handed to the kernel: bound to an IPv6 address or IPv6-only"), "so did the IPv6-only bind");
        // Every IPv4 datagram was the stack's: the stack side's kernel counted none (its IPv6 ones count as Udp6).
        var after = PreloadUdpTests.KernelUdp(dl.Host);
        Assert.That(after.Out, Is.EqualTo(before.Out), "the stack side's kernel sent no IPv4 datagram");
        Assert.That(after.In, Is.EqualTo(before.In), "nor received one");
    }
}
