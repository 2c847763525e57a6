using System.Net;
using NUnit.Framework;
using Onload.Tests.Netns;
using Onload.Vnic;
using Onload.Vnic.AfPacket;

namespace Onload.Tests.Vnic;

// The class Netns lives in the namespace Onload.Tests.Netns, which from here the bare name would mean.
using Netns = Onload.Tests.Netns.Netns;

/// <summary>The af_packet backend against the kernel of a peer namespace, over a veth pair.</summary>
[TestFixture]
[Category("netns")]
public sealed class AfPacketTests
{
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(5);
    private static readonly VnicOptions Small = new() { BufferCount = 64, RingSize = 64 };

    [Test]
    public void Arp_request_gets_the_kernels_reply_and_leaves_a_neighbour_entry()
    {
        Netns.RequireRoot();
        using var pair = new NamespacePair();
        using var vnic = pair.Stack.Run(() => VnicFactory.Open("af_packet:" + pair.StackIf, Small));
        var ours = IPAddress.Parse(pair.StackAddress);
        var theirs = IPAddress.Parse(pair.KernelAddress);
        var kernelMac = MacAddress.Parse(pair.KernelMac);

        Assert.Multiple(() =>
        {
            Assert.That(vnic, Is.TypeOf<AfPacketVnic>());
            Assert.That(vnic.Spec, Is.EqualTo("af_packet:" + pair.StackIf));
            Assert.That(vnic.MacAddress.ToString(), Is.EqualTo(pair.StackIfMac), "MAC is the interface's");
            Assert.That(vnic.Mtu, Is.EqualTo(1500));
            Assert.That(vnic.WaitHandle, Is.GreaterThanOrEqualTo(0));
        });

        var request = TestFrames.Build(MacAddress.Broadcast, vnic.MacAddress, TestFrames.Request,
            vnic.MacAddress, ours, MacAddress.Zero, theirs);
        var received = new List<byte[]>();
        byte[]? reply = null;
        int sent = 0;
        var lastSend = DateTime.MinValue;
        Poll.Until(() =>
        {
            // Resend now and then in case the first went out before the link was ready.
            if (DateTime.UtcNow - lastSend > TimeSpan.FromMilliseconds(500))
            {
                Assert.That(vnic.Transmit([TestFrames.InPool(vnic.Buffers, request)]), Is.EqualTo(1));
                sent++;
                lastSend = DateTime.UtcNow;
            }
            TestFrames.Drain(vnic, received);
            reply = received.Find(f => TestFrames.IsArp(f) && TestFrames.Operation(f) == TestFrames.Reply);
            return reply is not null;
        }, Deadline, "the kernel's ARP reply");

        Assert.Multiple(() =>
        {
            Assert.That(TestFrames.EthDst(reply), Is.EqualTo(vnic.MacAddress), "eth dst");
            Assert.That(TestFrames.EthSrc(reply), Is.EqualTo(kernelMac), "eth src");
            Assert.That(TestFrames.SenderMac(reply), Is.EqualTo(kernelMac), "sender MAC");
            Assert.That(TestFrames.SenderIp(reply), Is.EqualTo(theirs), "sender IP");
            Assert.That(TestFrames.TargetMac(reply), Is.EqualTo(vnic.MacAddress), "target MAC");
            Assert.That(TestFrames.TargetIp(reply), Is.EqualTo(ours), "target IP");
            Assert.That(received.Where(f => TestFrames.EthSrc(f) == vnic.MacAddress), Is.Empty,
                "Receive must not return our own transmitted frames (PACKET_OUTGOING)");
        });

        // Linux makes a neighbour entry from a request addressed to it (arp_process, neigh_event_ns).
        string neigh = "";
        Poll.Until(() =>
        {
            neigh = pair.Kernel.Ip($"neigh show {pair.StackAddress} dev {pair.KernelIf}");
            return neigh.Contains(vnic.MacAddress.ToString(), StringComparison.Ordinal);
        }, Deadline, $"a neighbour entry for {pair.StackAddress} with our MAC (last: '{neigh.Trim()}')");

        var c = vnic.Counters;
        Assert.Multiple(() =>
        {
            Assert.That(c.TxFrames, Is.EqualTo(sent));
            Assert.That(c.TxBytes, Is.EqualTo(sent * TestFrames.Length));
            Assert.That(c.RxFrames, Is.EqualTo(received.Count));
            Assert.That(c.RxBytes, Is.EqualTo(received.Sum(f => (long)f.Length)));
            Assert.That(c.RxDropNoBuffer, Is.Zero);
            Assert.That(c.RxDropTooLong, Is.Zero);
            Assert.That(c.TxDropRingFull, Is.Zero);
            Assert.That(c.TxErrors, Is.Zero);
            Assert.That(vnic.Buffers.Available, Is.EqualTo(vnic.Buffers.Count), "every buffer back in the pool");
        });
    }

    [Test]
    public void Kernel_traffic_wakes_the_wait_handle_and_is_received()
    {
        Netns.RequireRoot();
        using var pair = new NamespacePair();
        using var vnic = pair.Stack.Run(() => AfPacketVnic.Open(pair.StackIf, Small));
        Assert.That(vnic.QdiscBypass, Is.True, "PACKET_QDISC_BYPASS is available on this kernel");

        // The kernel side resolves the stack's address: a broadcast ARP request comes to us.
        pair.Start(pair.KernelNs, "ping", "-c", "1", "-W", "3", pair.StackAddress);
        Poll.Until(() => PollReadable(vnic.WaitHandle), Deadline, "the packet socket to poll readable");

        var received = new List<byte[]>();
        Poll.Until(() =>
        {
            TestFrames.Drain(vnic, received);
            return received.Exists(f => TestFrames.IsArp(f) && TestFrames.Operation(f) == TestFrames.Request);
        }, Deadline, "the kernel's ARP request");
        var request = received.Find(f => TestFrames.IsArp(f) && TestFrames.Operation(f) == TestFrames.Request)!;
        Assert.Multiple(() =>
        {
            Assert.That(TestFrames.EthDst(request), Is.EqualTo(MacAddress.Broadcast));
            Assert.That(TestFrames.SenderIp(request), Is.EqualTo(IPAddress.Parse(pair.KernelAddress)));
            Assert.That(TestFrames.TargetIp(request), Is.EqualTo(IPAddress.Parse(pair.StackAddress)));
            Assert.That(vnic.Buffers.Available, Is.EqualTo(vnic.Buffers.Count));
        });
    }

    [Test]
    public void Frames_the_namespace_kernel_sends_are_not_received()
    {
        Netns.RequireRoot();
        using var pair = new NamespacePair();
        using var vnic = pair.Stack.Run(() => AfPacketVnic.Open(pair.StackIf, Small));

        // Give the stack side's kernel an address for this test only, and make it talk: its ARP request and echo
        // request leave through the interface and reach packet sockets as PACKET_OUTGOING; the answers come in.
        string kernelOnStackSide = pair.Subnet[..pair.Subnet.LastIndexOf('.')] + ".3";
        pair.Stack.Ip($"addr add {kernelOnStackSide}/{pair.PrefixLength} dev {pair.StackIf}");
        var ping = pair.Start(pair.StackNs, "ping", "-c", "1", "-W", "3", pair.KernelAddress);
        ping.WaitForOutput("1 received", Deadline);

        var received = new List<byte[]>();
        TestFrames.Drain(vnic, received);
        var stackIfMac = MacAddress.Parse(pair.StackIfMac);
        Assert.Multiple(() =>
        {
            Assert.That(received.Exists(f => TestFrames.IsArp(f) && TestFrames.Operation(f) == TestFrames.Reply), Is.True,
                "the kernel peer's ARP reply comes in");
            Assert.That(received.Where(f => TestFrames.EthSrc(f) == stackIfMac), Is.Empty, "no outgoing frame comes in");
        });
    }

    [Test]
    public void Frames_that_find_the_pool_empty_are_counted_as_dropped()
    {
        Netns.RequireRoot();
        using var pair = new NamespacePair();
        using var vnic = pair.Stack.Run(() => AfPacketVnic.Open(pair.StackIf, Small));
        var held = new List<int>();
        while (vnic.Buffers.TryAllocate(out int b))
            held.Add(b);

        pair.Start(pair.KernelNs, "ping", "-c", "1", "-W", "3", pair.StackAddress);
        Span<PacketDescriptor> batch = stackalloc PacketDescriptor[8];
        var deadline = DateTime.UtcNow + Deadline;
        while (vnic.Counters.RxDropNoBuffer == 0 && DateTime.UtcNow < deadline)
        {
            Assert.That(vnic.Receive(batch), Is.Zero, "nothing can be received with no buffer");
            Thread.Sleep(1);
        }
        Assert.That(vnic.Counters.RxDropNoBuffer, Is.GreaterThan(0), "a frame dropped for want of a buffer");
        Assert.That(vnic.Counters.RxFrames, Is.Zero);
        foreach (int b in held)
            vnic.Buffers.Release(b);
    }

    [Test]
    public void A_full_receive_ring_is_counted_from_the_kernels_statistics()
    {
        Netns.RequireRoot();
        using var pair = new NamespacePair();
        // The smallest ring: 2 slots of 2 KiB fill one page.
        using var vnic = pair.Stack.Run(() => AfPacketVnic.Open(pair.StackIf, new VnicOptions { BufferCount = 64, RingSize = 2 }));
        Assert.That(vnic.RxSlots, Is.EqualTo(2));

        // A static neighbour entry lets the kernel send ICMP echo requests to us without ARP; nobody answers.
        pair.Kernel.Ip($"neigh replace {pair.StackAddress} lladdr {vnic.MacAddress} dev {pair.KernelIf} nud permanent");
        var ping = pair.Start(pair.KernelNs, "ping", "-c", "20", "-i", "0.002", "-W", "1", pair.StackAddress);
        Assert.That(ping.WaitForExit(TimeSpan.FromSeconds(10)), Is.True, "ping finished");

        var received = new List<byte[]>();
        TestFrames.Drain(vnic, received);
        vnic.ReadKernelStatistics();
        Assert.Multiple(() =>
        {
            Assert.That(received, Has.Count.EqualTo(2), "the two frames the ring held");
            Assert.That(vnic.Counters.RxDropRingFull, Is.EqualTo(18), "the rest, dropped by the kernel");
        });
    }

    [Test]
    public void Open_names_a_missing_interface()
    {
        Netns.RequireRoot();
        using var pair = new NamespacePair();
        var e = Assert.Throws<IOException>(() => pair.Stack.Run(() => AfPacketVnic.Open("oltnosuch0", Small)));
        Assert.That(e!.Message, Does.StartWith("af_packet:oltnosuch0: no such interface"));
    }

    [Test]
    public void Open_rejects_a_name_longer_than_an_interface_name()
    {
        var e = Assert.Throws<ArgumentException>(() => AfPacketVnic.Open("a-name-of-16-chr", Small));
        Assert.That(e!.Message, Does.Contain("1 to 15 characters"));
    }

    [Test]
    public void Open_rejects_a_name_with_a_character_an_interface_name_cannot_hold()
    {
        var e = Assert.Throws<ArgumentException>(() => AfPacketVnic.Open("veth\u00e90", Small));
        Assert.That(e!.Message, Does.StartWith("af_packet:veth\u00e90: an interface name holds ASCII"));
        Assert.That(e.Message, Does.Contain("character 4 is U+00E9"));
    }

    [Test]
    public void Dispose_is_idempotent_and_later_use_throws()
    {
        Netns.RequireRoot();
        using var pair = new NamespacePair();
        var vnic = pair.Stack.Run(() => AfPacketVnic.Open(pair.StackIf, Small));
        vnic.Dispose();
        vnic.Dispose();
        Assert.Throws<ObjectDisposedException>(() => vnic.Receive(new PacketDescriptor[1]));
        Assert.Throws<ObjectDisposedException>(() => vnic.Transmit(new PacketDescriptor[1]));
    }

    private static bool PollReadable(int fd) => LinuxNative.PollReadable(fd, 10);
}
