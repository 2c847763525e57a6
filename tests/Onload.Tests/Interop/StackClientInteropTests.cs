using Onload.Stack;
using Onload.Stack.Wire;
using Onload.Tests.Netns;
using Onload.Vnic;

namespace Onload.Tests.Interop;

/// <summary>The stack's own UDP client, in this process, against kernel UDP servers.</summary>
[TestFixture("af_packet")]
[TestFixture("af_xdp")]
[TestFixture("tap")]
[Category("netns")]
[NonParallelizable]
public class StackClientInteropTests(string kind)
{
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(20);
    private KernelPeer _peer = null!;
    private NetStack _stack = null!;

    [SetUp]
    public void OpenStack()
    {
        _peer = new KernelPeer(kind);
        _stack = _peer.OpenStack();
    }

    [TearDown]
    public void Close()
    {
        _stack?.Dispose();
        _peer?.Dispose(); // closes the VNIC too
    }

    private void PollUntil(Func<bool> condition, string what) =>
        Poll.Until(() =>
        {
            _stack.Poll();
            return condition();
        }, Deadline, what);

    [Test]
    public void Stack_udp_client_reaches_a_kernel_udp_server_and_hears_back()
    {
        // socat's UDP-LISTEN takes the first peer and echoes everything it sends.
        var server = _peer.KernelNs.Start("socat", "-b", "65536", "UDP-LISTEN:9000", "PIPE");
        Poll.Until(() => _peer.KernelNs.Exec("ss -uln").Contains(":9000", StringComparison.Ordinal), Deadline, "socat listening");
        int s = _stack.UdpOpen();
        var server_ = new Ipv4Endpoint(Ipv4Address.Parse(_peer.KernelAddress), 9000);
        Assert.That(_stack.UdpConnect(s, server_), Is.Zero);
        var buf = new byte[65536];
        var sizes = Enumerable.Range(0, 50).Select(i => 1 + i * 29).Concat([1473, 3000, 8000, 20000]).ToArray();
        for (int i = 0; i < sizes.Length; i++)
        {
            var payload = TestData.Random(i, sizes[i]);
            Assert.That(_stack.UdpSend(s, payload), Is.EqualTo(payload.Length));
            int n = 0;
            PollUntil(() => (n = _stack.UdpReceiveFrom(s, buf, out _)) != -(int)Errno.EAGAIN, $"echo {i}");
            Assert.That(buf[..n], Is.EqualTo(payload), $"datagram {i}");
        }
        Assert.That(_stack.Counters.UdpInCsumErrors, Is.Zero);
        server.Kill();
    }

    [Test]
    public void Joined_socket_hears_a_kernel_multicast_sender_until_it_leaves_and_the_kernel_sees_igmp_reports()
    {
        var group = Ipv4Address.Parse("239.7.7.7");
        // The kernel side watches for IGMP on its interface; tcpdump says "listening on" once it captures.
        var tcpdump = _peer.KernelNs.Start("tcpdump", "-i", _peer.KernelInterface, "-n", "-l", "-v", "igmp");
        tcpdump.WaitForOutput("listening on", Deadline);
        _peer.KernelNs.Ip($"route add 224.0.0.0/4 dev {_peer.KernelInterface}");
        int s = _stack.UdpOpen();
        Assert.That(_stack.UdpBind(s, new Ipv4Endpoint(Ipv4Address.Any, 5000)), Is.Zero);
        Assert.That(_stack.UdpJoinGroup(s, group), Is.Zero);
        var buf = new byte[2048];
        int n = 0;
        // The kernel may send before the stack polls: keep sending until one arrives.
        PollUntil(() =>
        {
            SendFromKernel(group, "to the group");
            for (int k = 0; k < 200 && n <= 0; k++)
            {
                _stack.Poll();
                n = _stack.UdpReceiveFrom(s, buf, out _);
            }
            return n > 0;
        }, "the kernel's datagram to the group");
        Assert.That(buf[..n], Is.EqualTo("to the group"u8.ToArray()));
        Poll.Until(() => tcpdump.Stdout.Contains("igmp v3 report", StringComparison.Ordinal) &&
            tcpdump.Stdout.Contains(group.ToString(), StringComparison.Ordinal), Deadline, "the kernel to see the IGMPv3 report");

        Assert.That(_stack.UdpLeaveGroup(s, group), Is.Zero);
        SendFromKernel(group, "after leaving");
        // A unicast marker sent after it: the veth keeps order, so once the marker is in, the group's datagram
        // would have been too.
        SendFromKernel(Ipv4Address.Parse(_peer.StackAddress), "marker");
        n = 0;
        PollUntil(() => (n = _stack.UdpReceiveFrom(s, buf, out _)) > 0, "the unicast marker");
        Assert.That(buf[..n], Is.EqualTo("marker"u8.ToArray()), "nothing from the group after leaving");
        Poll.Until(() => tcpdump.Stdout.Contains("to_in", StringComparison.OrdinalIgnoreCase), Deadline,
            $"the kernel to see the leave (a change to include mode); tcpdump: {tcpdump.Stdout}");
    }

    private void SendFromKernel(Ipv4Address destination, string text) =>
        Netns.Netns.Exec("ip", ["netns", "exec", _peer.KernelNs.Name, "sh", "-c",
            $"printf '{text}' | socat -u - UDP-DATAGRAM:{destination}:5000" +
            (destination.IsMulticast ? $",ip-multicast-if={_peer.KernelAddress}" : "")], Deadline);

    [Test]
    public void Connected_socket_to_a_closed_kernel_port_gets_ECONNREFUSED()
    {
        int s = _stack.UdpOpen();
        Assert.That(_stack.UdpConnect(s, new Ipv4Endpoint(Ipv4Address.Parse(_peer.KernelAddress), 9)), Is.Zero);
        Assert.That(_stack.UdpSend(s, "anyone?"u8), Is.EqualTo(7));
        PollUntil(() => _stack.UdpReadable(s), "the kernel's port unreachable");
        Assert.That(_stack.UdpReceiveFrom(s, new byte[64], out _), Is.EqualTo(-(int)Errno.ECONNREFUSED));
        Assert.That(_stack.Counters.IcmpInDestUnreachs, Is.EqualTo(1));
    }

    [Test]
    public void Kernel_client_to_a_closed_stack_port_is_refused()
    {
        // The kernel turns the stack's port unreachable into ECONNREFUSED on its connected socket: socat says so.
        using var pump = new StackPump(_stack);
        var r = Netns.Netns.Exec("ip", ["netns", "exec", _peer.KernelNs.Name, "sh", "-c",
            $"echo x | socat -t 1 -T 2 - UDP:{_peer.StackAddress}:4444"], Deadline);
        Assert.That(r.Stderr + r.Stdout, Does.Contain("Connection refused"));
        Assert.That(_stack.Counters.UdpNoPorts, Is.GreaterThanOrEqualTo(1));
    }
}

/// <summary>Polls a stack on a background thread while a test waits on a kernel program.</summary>
internal sealed class StackPump : IDisposable
{
    private readonly Thread _thread;
    private volatile bool _stop;

    public StackPump(NetStack stack)
    {
        _thread = new Thread(() =>
        {
            while (!_stop)
                if (stack.Poll() == 0)
                    VnicWait.Wait(stack.Vnic, 5);
        }) { IsBackground = true, Name = "stack pump" };
        _thread.Start();
    }

    public void Dispose()
    {
        _stop = true;
        _thread.Join();
    }
}
