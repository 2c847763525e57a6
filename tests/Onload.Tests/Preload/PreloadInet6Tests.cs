using Onload.Tests.Driverlink;
using Onload.Tests.Interop;
using Onload.Tests.Netns;

namespace Onload.Tests.Preload;

/// <summary>
/// AF_INET6 stream sockets under <c>onload-run</c>: a dual-stack socket that talks to an IPv4 peer through its
/// v4-mapped address (::ffff:a.b.c.d) runs on the stack and sees sockaddr_in6 names; IPv6 proper, an IPv6-only socket
/// and loopback stay the kernel's and behave as on Linux. <c>dist/tests/inet6_calls</c> (preload/tests/inet6_calls.c)
/// checks each call's result; here the test checks that every step passed and which connections the kernel made.
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
}
