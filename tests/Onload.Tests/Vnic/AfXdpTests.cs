using System.Buffers.Binary;
using System.Globalization;
using System.Net;
using NUnit.Framework;
using Onload.Tests.Interop;
using Onload.Tests.Netns;
using Onload.Vnic;
using Onload.Vnic.AfPacket;
using Onload.Vnic.AfXdp;

namespace Onload.Tests.Vnic;

// The class Netns lives in the namespace Onload.Tests.Netns, which from here the bare name would mean.
using Netns = Onload.Tests.Netns.Netns;

/// <summary>
/// The af_xdp backend against the kernel of a peer namespace, over a veth pair: its XDP program steers to the socket
/// only what is for the stack's address (and joined multicast groups) and leaves the rest to the namespace's kernel.
/// </summary>
[TestFixture]
[Category("netns")]
[NonParallelizable]
public sealed class AfXdpTests
{
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(5);

    private static VnicOptions Options(NamespacePair pair, int buffers = 256, int ring = 64) => new()
    {
        BufferCount = buffers,
        RingSize = ring,
        LocalIpv4 = HostOrder(pair.StackAddress),
    };

    [Test]
    public void Arp_request_gets_the_kernels_reply_through_the_socket_and_leaves_a_neighbour_entry()
    {
        Netns.RequireRoot();
        using var pair = new NamespacePair();
        using var vnic = (AfXdpVnic)pair.Stack.Run(() => VnicFactory.Open("af_xdp:" + pair.StackIf, Options(pair)));
        TestContext.Out.WriteLine($"mode: {vnic.Mode}, chunk {vnic.ChunkSize} B");

        Assert.Multiple(() =>
        {
            Assert.That(vnic.Spec, Is.EqualTo("af_xdp:" + pair.StackIf));
            Assert.That(vnic.Queue, Is.Zero);
            Assert.That(vnic.MacAddress.ToString(), Is.EqualTo(pair.StackIfMac), "MAC is the interface's");
            Assert.That(vnic.Mtu, Is.EqualTo(1500));
            Assert.That(vnic.WaitHandle, Is.GreaterThanOrEqualTo(0));
            Assert.That(vnic.ZeroCopy, Is.False, "veth has no zero-copy AF_XDP (MACHINE-NOTES.md)");
            Assert.That(vnic.Mode, Does.StartWith("copy, "));
            Assert.That(vnic.ChunkSize, Is.EqualTo(2048));
            Assert.That(vnic.Buffers.BufferSize, Is.EqualTo(2048 - 256));
            Assert.That(pair.Stack.Ip($"link show dev {pair.StackIf}"), Does.Contain("prog/xdp"), "the program is attached");
        });

        var reply = ArpExchange(pair, vnic);
        var ours = IPAddress.Parse(pair.StackAddress);
        var theirs = IPAddress.Parse(pair.KernelAddress);
        var kernelMac = MacAddress.Parse(pair.KernelMac);
        Assert.Multiple(() =>
        {
            Assert.That(TestFrames.EthDst(reply), Is.EqualTo(vnic.MacAddress), "eth dst");
            Assert.That(TestFrames.EthSrc(reply), Is.EqualTo(kernelMac), "eth src");
            Assert.That(TestFrames.SenderMac(reply), Is.EqualTo(kernelMac), "sender MAC");
            Assert.That(TestFrames.SenderIp(reply), Is.EqualTo(theirs), "sender IP");
            Assert.That(TestFrames.TargetMac(reply), Is.EqualTo(vnic.MacAddress), "target MAC");
            Assert.That(TestFrames.TargetIp(reply), Is.EqualTo(ours), "target IP");
        });

        // Linux makes a neighbour entry from a request addressed to it (arp_process, neigh_event_ns).
        string neigh = "";
        Poll.Until(() =>
        {
            neigh = pair.Kernel.Ip($"neigh show {pair.StackAddress} dev {pair.KernelIf}");
            return neigh.Contains(vnic.MacAddress.ToString(), StringComparison.Ordinal);
        }, Deadline, $"a neighbour entry for {pair.StackAddress} with our MAC (last: '{neigh.Trim()}')");

        // Every sent buffer comes back from the completion ring; the rest of the pool is free or on the fill ring.
        Poll.Until(() =>
        {
            vnic.Receive(new PacketDescriptor[8]);
            return vnic.BuffersInFlight == 0;
        }, Deadline, "the completions of the sent requests");
        var c = vnic.Counters;
        Assert.Multiple(() =>
        {
            Assert.That(vnic.Buffers.Available + vnic.BuffersOnFillRing, Is.EqualTo(vnic.Buffers.Count), "no buffer lost");
            Assert.That(c.TxBytes, Is.EqualTo(c.TxFrames * TestFrames.Length));
            Assert.That(c.RxDropNoBuffer + c.RxDropTooLong + c.RxDropRingFull + c.TxDropRingFull + c.TxErrors, Is.Zero);
            Assert.That(vnic.BadDescriptors, Is.Zero);
        });
    }

    [Test]
    public void The_namespace_kernel_keeps_the_rest_of_the_interfaces_traffic()
    {
        Netns.RequireRoot();
        using var pair = new NamespacePair();
        using var vnic = pair.Stack.Run(() => AfXdpVnic.Open(pair.StackIf, Options(pair)));

        // A second address on the same interface, held by the stack side's kernel: the program must pass its ARP and
        // its ICMP to the kernel, which answers.
        string kernelOnStackSide = pair.Subnet[..pair.Subnet.LastIndexOf('.')] + ".3";
        pair.Stack.Ip($"addr add {kernelOnStackSide}/{pair.PrefixLength} dev {pair.StackIf}");
        string ping = pair.Kernel.Exec($"ping -c 3 -i 0.2 -W 2 {kernelOnStackSide}");
        Assert.That(ping, Does.Contain("3 received"), ping);

        var received = new List<byte[]>();
        TestFrames.Drain(vnic, received);
        var to3 = IPAddress.Parse(kernelOnStackSide);
        Assert.Multiple(() =>
        {
            Assert.That(received.Where(f => TestFrames.IsArp(f) && TestFrames.TargetIp(f).Equals(to3)), Is.Empty,
                "ARP for the kernel's address is the kernel's");
            Assert.That(received.Where(f => IsIpv4To(f, to3)), Is.Empty, "IPv4 for the kernel's address is the kernel's");
            Assert.That(vnic.Counters.RxFrames, Is.EqualTo(received.Count));
        });

        // While the stack's address still comes to the socket.
        Assert.That(TestFrames.IsArp(ArpExchange(pair, vnic)), Is.True);
    }

    [Test]
    public void Kernel_ping_to_the_stack_address_arrives_on_the_socket()
    {
        Netns.RequireRoot();
        using var pair = new NamespacePair();
        using var vnic = pair.Stack.Run(() => AfXdpVnic.Open(pair.StackIf, Options(pair)));

        // A static neighbour entry lets the kernel send echo requests to us without ARP; nobody answers them.
        pair.Kernel.Ip($"neigh replace {pair.StackAddress} lladdr {vnic.MacAddress} dev {pair.KernelIf} nud permanent");
        pair.Start(pair.KernelNs, "ping", "-c", "3", "-i", "0.05", "-W", "1", pair.StackAddress);
        Poll.Until(() => LinuxNative.PollReadable(vnic.WaitHandle, 10), Deadline, "the AF_XDP socket to poll readable");

        var received = new List<byte[]>();
        var ours = IPAddress.Parse(pair.StackAddress);
        Poll.Until(() =>
        {
            TestFrames.Drain(vnic, received);
            return received.Count(f => TestFrames.IsIcmpEchoRequestTo(f, ours)) == 3;
        }, Deadline, "three echo requests");
        Assert.That(received.Where(f => TestFrames.EthSrc(f) == vnic.MacAddress), Is.Empty, "nothing of our own comes back");
    }

    [Test]
    public void A_batch_larger_than_the_kernels_per_call_budget_is_sent_whole()
    {
        Netns.RequireRoot();
        using var pair = new NamespacePair();
        using var vnic = pair.Stack.Run(() => AfXdpVnic.Open(pair.StackIf, Options(pair, buffers: 512, ring: 128)));
        long before = KernelRxPackets(pair);

        // 100 gratuitous ARP announcements in one Transmit: copy mode sends at most 32 per sendto before 6.17.
        var frame = TestFrames.Build(MacAddress.Broadcast, vnic.MacAddress, TestFrames.Request,
            vnic.MacAddress, IPAddress.Parse(pair.StackAddress), MacAddress.Zero, IPAddress.Parse(pair.StackAddress));
        var batch = new PacketDescriptor[100];
        for (int i = 0; i < batch.Length; i++)
            batch[i] = TestFrames.InPool(vnic.Buffers, frame);
        Assert.That(vnic.Transmit(batch), Is.EqualTo(100));

        Poll.Until(() =>
        {
            vnic.Transmit([]);
            vnic.Receive(new PacketDescriptor[8]);
            return vnic.BuffersInFlight == 0;
        }, Deadline, "every frame completed");
        Poll.Until(() => KernelRxPackets(pair) - before >= 100, Deadline, "the kernel side to count 100 frames");
        Assert.Multiple(() =>
        {
            Assert.That(vnic.Counters.TxFrames, Is.EqualTo(100));
            Assert.That(vnic.Counters.TxErrors + vnic.Counters.TxDropRingFull, Is.Zero);
            Assert.That(vnic.Buffers.Available + vnic.BuffersOnFillRing, Is.EqualTo(vnic.Buffers.Count));
        });
    }

    [Test]
    public void Frames_that_find_the_fill_ring_empty_are_counted_as_dropped()
    {
        Netns.RequireRoot();
        using var pair = new NamespacePair();
        // 16 buffers: 8 go on the fill ring, the test holds the other 8 and every frame it receives.
        using var vnic = pair.Stack.Run(() => AfXdpVnic.Open(pair.StackIf, Options(pair, buffers: 16, ring: 8)));
        var held = new List<int>();
        while (vnic.Buffers.TryAllocate(out int b))
            held.Add(b);
        Assert.That(vnic.BuffersOnFillRing, Is.EqualTo(8));

        pair.Kernel.Ip($"neigh replace {pair.StackAddress} lladdr {vnic.MacAddress} dev {pair.KernelIf} nud permanent");
        pair.Start(pair.KernelNs, "ping", "-c", "20", "-i", "0.01", "-W", "1", pair.StackAddress);
        var batch = new PacketDescriptor[4];
        Poll.Until(() =>
        {
            int n = vnic.Receive(batch);
            for (int i = 0; i < n; i++)
                held.Add(batch[i].Buffer);
            return vnic.Counters.RxDropNoBuffer > 0;
        }, Deadline, "a frame dropped for want of a fill ring entry");
        Assert.Multiple(() =>
        {
            Assert.That(vnic.Counters.RxFrames, Is.EqualTo(8), "the eight frames the fill ring had room for");
            Assert.That(vnic.KernelStatistics.RxFillRingEmptyDescs, Is.EqualTo((ulong)vnic.Counters.RxDropNoBuffer));
            Assert.That(vnic.KernelStatistics.RxDropped, Is.EqualTo(vnic.KernelStatistics.RxFillRingEmptyDescs),
                "copy mode counts a frame without a buffer in rx_dropped too");
            Assert.That(vnic.Counters.RxDropTooLong, Is.Zero, "and that is not counted twice");
        });

        // Buffers back: the fill ring is refilled and frames flow again.
        foreach (int b in held)
            vnic.Buffers.Release(b);
        held.Clear();
        var received = new List<byte[]>();
        pair.Start(pair.KernelNs, "ping", "-c", "50", "-i", "0.05", "-W", "1", pair.StackAddress);
        Poll.Until(() =>
        {
            TestFrames.Drain(vnic, received); // refills the fill ring first
            return received.Count > 0;
        }, Deadline, "a frame once buffers are back");
    }

    [Test]
    public void A_killed_owner_leaves_nothing_behind_and_a_new_stack_attaches_at_once()
    {
        Netns.RequireRoot();
        using var pair = new NamespacePair();
        var echo = pair.Start(pair.StackNs, Dist.Bin("onload-echo"),
            "--vnic", "af_xdp:" + pair.StackIf, "--addr", $"{pair.StackAddress}/{pair.PrefixLength}");
        echo.WaitForOutput("ready", TimeSpan.FromSeconds(20));

        // The stack answers through its socket.
        string ping = pair.Kernel.Exec($"ping -c 2 -i 0.2 -W 2 {pair.StackAddress}");
        Assert.That(ping, Does.Contain("2 received"), ping + echo.Stderr);
        Assert.That(pair.Stack.Ip($"link show dev {pair.StackIf}"), Does.Contain("prog/xdp"));

        Netns.Run($"kill -9 {echo.Pid}");
        // At once: no wait for the process to be reaped. Open retries EBUSY while the kernel releases the old socket.
        using var vnic = pair.Stack.Run(() => AfXdpVnic.Open(pair.StackIf, Options(pair)));
        TestContext.Out.WriteLine($"opened after {vnic.OpenBusyRetries} busy retries, mode {vnic.Mode}");
        Assert.That(echo.WaitForExit(Deadline), Is.True);
        Assert.That(echo.ExitCode, Is.EqualTo(137), "killed by SIGKILL");

        Assert.That(TestFrames.IsArp(ArpExchange(pair, vnic)), Is.True, "the new socket gets the ARP reply");
        vnic.Dispose();

        // Closing the link detaches the program: nothing is left on the interface.
        Assert.That(pair.Stack.Ip($"link show dev {pair.StackIf}"), Does.Not.Contain("prog/xdp"));
    }

    [Test]
    public void Multicast_frames_come_to_the_socket_only_while_the_group_is_joined()
    {
        Netns.RequireRoot();
        using var pair = new NamespacePair();
        using var vnic = pair.Stack.Run(() => AfXdpVnic.Open(pair.StackIf, Options(pair)));
        // A packet socket on the same interface sees what the XDP program passes to the kernel, not what it redirects.
        using var tap = pair.Stack.Run(() => AfPacketVnic.Open(pair.StackIf, new VnicOptions { BufferCount = 64, RingSize = 64 }));
        pair.Kernel.Ip($"route add 224.0.0.0/4 dev {pair.KernelIf}");
        var group = IPAddress.Parse("239.1.2.3");
        uint groupHost = HostOrder("239.1.2.3");

        Assert.That(vnic.JoinMulticast(groupHost), Is.Zero);
        var onSocket = new List<byte[]>();
        var onKernel = new List<byte[]>();
        Poll.Until(() =>
        {
            SendUdp(pair, "239.1.2.3");
            TestFrames.Drain(vnic, onSocket);
            return onSocket.Exists(f => IsIpv4To(f, group));
        }, Deadline, "a datagram to the joined group on the socket");
        TestFrames.Drain(tap, onKernel);
        Assert.That(onKernel.Where(f => IsIpv4To(f, group)), Is.Empty, "redirected frames skip the kernel");

        Assert.That(vnic.LeaveMulticast(groupHost), Is.Zero);
        Assert.That(vnic.LeaveMulticast(groupHost), Is.Negative, "not joined any more");
        onSocket.Clear();
        Poll.Until(() =>
        {
            SendUdp(pair, "239.1.2.3");
            TestFrames.Drain(tap, onKernel);
            return onKernel.Exists(f => IsIpv4To(f, group));
        }, Deadline, "a datagram to the group, now on the kernel's side");
        TestFrames.Drain(vnic, onSocket);
        Assert.That(onSocket.Where(f => IsIpv4To(f, group)), Is.Empty, "after LeaveMulticast the socket gets none");

        Assert.That(vnic.JoinMulticast(HostOrder("10.1.2.3")), Is.EqualTo(-22), "not a multicast address: EINVAL");
    }

    [Test]
    public void Where_the_driver_has_no_native_xdp_the_program_runs_on_the_skb_path()
    {
        Netns.RequireRoot();
        using var pair = new NamespacePair();
        // macvlan has no XDP of its own (no ndo_bpf): attaching in driver mode fails and generic mode takes over.
        string mv = pair.StackIf[..Math.Min(pair.StackIf.Length, 12)] + "mv";
        pair.Stack.Ip($"link add {mv} link {pair.StackIf} type macvlan mode bridge");
        pair.Stack.DisableIpv6(mv);
        pair.Stack.Ip($"link set {mv} up");
        using var vnic = pair.Stack.Run(() => AfXdpVnic.Open(mv, Options(pair)));
        Assert.Multiple(() =>
        {
            Assert.That(vnic.Mode, Is.EqualTo("copy, skb"));
            Assert.That(vnic.MacAddress.ToString(), Is.EqualTo(NamespacePair.ReadMac(pair.Stack, mv)));
            Assert.That(pair.Stack.Ip($"link show dev {mv}"), Does.Contain(" xdpgeneric "), "attached in generic mode");
        });
        Assert.That(TestFrames.IsArp(ArpExchange(pair, vnic)), Is.True);
    }

    [Test]
    public void A_second_stack_on_the_same_interface_is_refused_with_a_clear_message()
    {
        Netns.RequireRoot();
        using var pair = new NamespacePair();
        // A veth with two queues inside the stack's namespace, so the second stack can bind a queue of its own and
        // meets the first one's program instead.
        string a = pair.StackIf[..Math.Min(pair.StackIf.Length, 12)] + "qa";
        string b = pair.StackIf[..Math.Min(pair.StackIf.Length, 12)] + "qb";
        pair.Stack.Ip($"link add {a} numtxqueues 2 numrxqueues 2 type veth peer name {b} numtxqueues 2 numrxqueues 2");
        pair.Stack.Ip($"link set {a} up");
        pair.Stack.Ip($"link set {b} up");
        using var first = pair.Stack.Run(() => AfXdpVnic.Open(a + ":0", Options(pair)));

        var sameQueue = Assert.Throws<IOException>(() => pair.Stack.Run(() => AfXdpVnic.Open(a + ":0", Options(pair))));
        Assert.That(sameQueue!.Message, Does.Contain("queue 0 of " + a + " already has an AF_XDP socket"));

        var otherQueue = Assert.Throws<IOException>(() => pair.Stack.Run(() => AfXdpVnic.Open(a + ":1", Options(pair))));
        Assert.That(otherQueue!.Message, Does.Contain(a + " already has an XDP program attached by someone else"));

        // The first is unharmed, and once it is gone the interface is free.
        Assert.That(pair.Stack.Ip($"link show dev {a}"), Does.Contain("prog/xdp"));
        first.Dispose();
        using var again = pair.Stack.Run(() => AfXdpVnic.Open(a + ":1", Options(pair)));
        Assert.That(again.Queue, Is.EqualTo(1));
    }

    [Test]
    public void Open_requires_the_stacks_address()
    {
        var e = Assert.Throws<ArgumentException>(() => VnicFactory.Open("af_xdp:eth0", new VnicOptions()));
        Assert.That(e!.Message, Does.Contain("LocalIpv4"));
    }

    [Test]
    public void Open_rejects_a_bad_queue()
    {
        var options = new VnicOptions { LocalIpv4 = 0x0a000002 };
        var e = Assert.Throws<ArgumentException>(() => AfXdpVnic.Open("eth0:x", options));
        Assert.That(e!.Message, Does.Contain("af_xdp:IF[:QUEUE]"));
    }

    [Test]
    public void Open_names_a_missing_interface()
    {
        Netns.RequireRoot();
        using var pair = new NamespacePair();
        var e = Assert.Throws<IOException>(() => pair.Stack.Run(() => AfXdpVnic.Open("oltnosuch0", Options(pair))));
        Assert.That(e!.Message, Does.StartWith("af_xdp:oltnosuch0: no such interface"));
    }

    [Test]
    public void Dispose_detaches_is_idempotent_and_later_use_throws()
    {
        Netns.RequireRoot();
        using var pair = new NamespacePair();
        var vnic = pair.Stack.Run(() => AfXdpVnic.Open(pair.StackIf, Options(pair)));
        vnic.Dispose();
        vnic.Dispose();
        Assert.Multiple(() =>
        {
            Assert.Throws<ObjectDisposedException>(() => vnic.Receive(new PacketDescriptor[1]));
            Assert.Throws<ObjectDisposedException>(() => vnic.Transmit(new PacketDescriptor[1]));
            Assert.That(vnic.JoinMulticast(HostOrder("239.1.2.3")), Is.EqualTo(-9), "EBADF");
            Assert.That(pair.Stack.Ip($"link show dev {pair.StackIf}"), Does.Not.Contain("prog/xdp"));
        });
        // And the queue is free again straight away (within Open's EBUSY retry).
        using var again = pair.Stack.Run(() => AfXdpVnic.Open(pair.StackIf, Options(pair)));
        Assert.That(TestFrames.IsArp(ArpExchange(pair, again)), Is.True);
    }

    /// <summary>Sends ARP requests for the kernel's address from the VNIC until the reply comes; returns it.</summary>
    private static byte[] ArpExchange(NamespacePair pair, IVnic vnic) =>
        TestFrames.ArpExchange(vnic, IPAddress.Parse(pair.StackAddress), IPAddress.Parse(pair.KernelAddress), Deadline);

    private static void SendUdp(NamespacePair pair, string to) =>
        Netns.Sh($"echo hello | ip netns exec {pair.KernelNs} socat -u - UDP4-DATAGRAM:{to}:5000");

    private static bool IsIpv4To(ReadOnlySpan<byte> frame, IPAddress to) =>
        frame.Length >= 34 && TestFrames.EtherType(frame) == TestFrames.EtherTypeIpv4 && new IPAddress(frame[30..34]).Equals(to);

    private static long KernelRxPackets(NamespacePair pair) =>
        long.Parse(pair.Kernel.Exec($"cat /sys/class/net/{pair.KernelIf}/statistics/rx_packets").Trim(), CultureInfo.InvariantCulture);

    private static uint HostOrder(string address) =>
        BinaryPrimitives.ReadUInt32BigEndian(IPAddress.Parse(address).GetAddressBytes());
}
