using System.Buffers.Binary;
using Onload.Stack;
using Onload.Stack.Wire;
using Onload.Vnic.Sim;

namespace Onload.Tests.Sim;

[TestFixture]
public class SimUdpTests
{
    private const long Ms = 1_000_000;

    /// <summary>A payload whose every byte follows from its sequence number, so damage anywhere is seen.</summary>
    private static byte[] Payload(int seq, int length)
    {
        var p = new byte[length];
        BinaryPrimitives.WriteInt32BigEndian(p, seq);
        for (int i = 4; i < length; i++)
            p[i] = (byte)(seq * 31 + i * 7);
        return p;
    }

    private static (int Port, int Socket) Bound(NetStack s, ushort port)
    {
        int h = s.UdpOpen();
        Assert.That(s.UdpBind(h, new Ipv4Endpoint(Ipv4Address.Any, port)), Is.Zero);
        return (port, h);
    }

    /// <summary>Reads everything queued; returns (sequence, intact) for each datagram.</summary>
    private static List<(int Seq, bool Intact)> Drain(NetStack s, int socket)
    {
        var got = new List<(int, bool)>();
        var buf = new byte[2048];
        int n;
        while ((n = s.UdpReceiveFrom(socket, buf, out _)) >= 0)
        {
            int seq = BinaryPrimitives.ReadInt32BigEndian(buf);
            got.Add((seq, buf.AsSpan(0, n).SequenceEqual(Payload(seq, n))));
        }
        Assert.That(n, Is.EqualTo(-(int)Errno.EAGAIN));
        return got;
    }

    [Test]
    public void Two_stacks_exchange_udp_both_ways_in_order_and_intact()
    {
        using var pair = new SimPair(seed: 1);
        var (pa, sa) = Bound(pair.A, 5000);
        var (pb, sb) = Bound(pair.B, 6000);
        for (int i = 0; i < 100; i++)
        {
            Assert.That(pair.A.UdpSendTo(sa, Payload(i, 4 + i * 14), new(SimPair.AddressB.Address, (ushort)pb)), Is.EqualTo(4 + i * 14));
            Assert.That(pair.B.UdpSendTo(sb, Payload(1000 + i, 1472 - i), new(SimPair.AddressA.Address, (ushort)pa)), Is.EqualTo(1472 - i));
            pair.RunFor(Ms);
        }
        var atB = Drain(pair.B, sb);
        var atA = Drain(pair.A, sa);
        Assert.That(atB.Select(x => x.Seq), Is.EqualTo(Enumerable.Range(0, 100)));
        Assert.That(atA.Select(x => x.Seq), Is.EqualTo(Enumerable.Range(1000, 100)));
        Assert.That(atB.Concat(atA).All(x => x.Intact), Is.True);
        Assert.That(pair.A.Counters.TotalDrops + pair.B.Counters.TotalDrops, Is.Zero);
    }

    [Test]
    public void First_datagram_waits_for_arp_and_is_sent_once_resolved()
    {
        using var pair = new SimPair(seed: 2);
        var (_, sb) = Bound(pair.B, 7);
        int sa = pair.A.UdpOpen();
        for (int i = 0; i < 3; i++)
            Assert.That(pair.A.UdpSendTo(sa, Payload(i, 10), new(SimPair.AddressB.Address, 7)), Is.EqualTo(10));
        Assert.That(pair.A.Neighbours.PendingCount, Is.EqualTo(3), "frames wait for resolution");
        pair.RunFor(10 * Ms);
        Assert.That(Drain(pair.B, sb).Select(x => x.Seq), Is.EqualTo(new[] { 0, 1, 2 }));
        Assert.That(pair.A.Counters.ArpOutRequests, Is.EqualTo(2), "one gratuitous, one resolution");
    }

    private static (List<(int Seq, bool Intact)> Received, string Counters) LossyRun(ulong seed, int datagrams)
    {
        var faults = new LinkFaults { Loss = 0.1, Duplicate = 0.05, Reorder = 0.1, Corrupt = 0.1, MinDelayNs = 10_000, MaxDelayNs = 200_000 };
        using var pair = new SimPair(seed, faults, faults);
        var (_, sb) = Bound(pair.B, 9000);
        int sa = pair.A.UdpOpen();
        var received = new List<(int, bool)>();
        for (int i = 0; i < datagrams; i++)
        {
            pair.A.UdpSendTo(sa, Payload(i, 64 + i % 1000), new(SimPair.AddressB.Address, 9000));
            pair.RunFor(50_000);
            received.AddRange(Drain(pair.B, sb));
        }
        pair.RunFor(5_000 * Ms);
        received.AddRange(Drain(pair.B, sb));
        string counters = $"{StackDump.Counters(pair.A)}; {StackDump.Counters(pair.B)}; {pair.Link.AToB.Delivered}; {pair.Link.BToA.Delivered}";
        return (received, counters);
    }

    [Test]
    public void Under_seeded_loss_duplication_reordering_and_corruption_nothing_arrives_damaged()
    {
        var (received, _) = LossyRun(seed: 42, datagrams: 2000);
        Assert.That(received, Is.Not.Empty);
        Assert.That(received.Count(x => !x.Intact), Is.Zero, "a corrupted datagram reached the application");
        Assert.That(received.Select(x => x.Seq).All(s => s is >= 0 and < 2000), Is.True);
        // Loss and corruption are both at 10%: well under all, and well over none, arrive.
        Assert.That(received.Count, Is.InRange(1200, 1950));
    }

    [Test]
    public void A_run_repeats_exactly_from_its_seed()
    {
        var first = LossyRun(seed: 7, datagrams: 500);
        var again = LossyRun(seed: 7, datagrams: 500);
        var other = LossyRun(seed: 8, datagrams: 500);
        Assert.That(again.Received, Is.EqualTo(first.Received));
        Assert.That(again.Counters, Is.EqualTo(first.Counters));
        Assert.That(other.Received, Is.Not.EqualTo(first.Received));
    }

    [Test]
    public void Closed_port_answers_port_unreachable_and_a_connected_socket_sees_ECONNREFUSED()
    {
        using var pair = new SimPair(seed: 3);
        int sa = pair.A.UdpOpen();
        Assert.That(pair.A.UdpConnect(sa, new(SimPair.AddressB.Address, 4444)), Is.Zero);
        Assert.That(pair.A.UdpSend(sa, "x"u8), Is.EqualTo(1));
        pair.RunFor(10 * Ms);
        Assert.That(pair.B.Counters.UdpNoPorts, Is.EqualTo(1));
        Assert.That(pair.B.Counters.IcmpOutDestUnreachs, Is.EqualTo(1));
        Assert.That(pair.A.Counters.IcmpInDestUnreachs, Is.EqualTo(1));
        Assert.That(pair.A.UdpReadable(sa), Is.True, "a pending error makes the socket readable");
        Assert.That(pair.A.UdpReceiveFrom(sa, new byte[16], out _), Is.EqualTo(-(int)Errno.ECONNREFUSED));
        Assert.That(pair.A.UdpReceiveFrom(sa, new byte[16], out _), Is.EqualTo(-(int)Errno.EAGAIN), "reported once");
    }

    [Test]
    public void Unconnected_socket_is_not_told_of_port_unreachable()
    {
        using var pair = new SimPair(seed: 4);
        int sa = pair.A.UdpOpen();
        Assert.That(pair.A.UdpSendTo(sa, "x"u8, new(SimPair.AddressB.Address, 4444)), Is.EqualTo(1));
        pair.RunFor(10 * Ms);
        Assert.That(pair.A.Counters.IcmpInDestUnreachs, Is.EqualTo(1));
        Assert.That(pair.A.UdpReceiveFrom(sa, new byte[16], out _), Is.EqualTo(-(int)Errno.EAGAIN));
    }

    [Test]
    public void Port_unreachable_replies_are_rate_limited_to_the_burst()
    {
        using var pair = new SimPair(seed: 5);
        int sa = pair.A.UdpOpen();
        pair.A.UdpSendTo(sa, "warm"u8, new(SimPair.AddressB.Address, 1));
        pair.RunFor(10 * Ms);
        long before = pair.B.Counters.IcmpOutDestUnreachs;
        for (int i = 0; i < 200; i++)
            pair.A.UdpSendTo(sa, "x"u8, new(SimPair.AddressB.Address, 1));
        pair.RunFor(10_000); // 10 µs: too short to earn more tokens at 1000/s
        long sent = pair.B.Counters.IcmpOutDestUnreachs - before;
        Assert.That(sent, Is.EqualTo(50), "the full burst (the warm-up's token came back in the 10 ms since), then nothing");
        Assert.That(pair.B.Counters.Drop(DropReason.IcmpRateLimited), Is.EqualTo(200 - sent));
    }

    [Test]
    public void Unresolvable_neighbour_fails_after_three_requests_and_returns_every_buffer()
    {
        using var pair = new SimPair(seed: 6, tweak: o => o with { ArpQueuePerEntry = 16 });
        int free = pair.A.Vnic.Buffers.Available;
        int sa = pair.A.UdpOpen();
        for (int i = 0; i < 20; i++)
            pair.A.UdpSendTo(sa, "nobody"u8, new(Ipv4Address.Parse("10.1.0.77"), 9));
        pair.RunFor(5_000 * Ms);
        Assert.That(pair.A.Counters.ArpOutRequests, Is.EqualTo(1 + 3));
        Assert.That(pair.A.Counters.Drop(DropReason.ArpQueueOverflow), Is.EqualTo(20 - 16));
        Assert.That(pair.A.Counters.Drop(DropReason.ArpResolutionFailed), Is.EqualTo(16));
        Assert.That(pair.A.Neighbours.Count, Is.Zero);
        Assert.That(pair.A.Vnic.Buffers.Available, Is.EqualTo(free));
    }

    [Test]
    public void Receive_queue_overflow_is_counted_and_bounded()
    {
        using var pair = new SimPair(seed: 9, tweak: o => o with { UdpQueueDatagrams = 8 });
        var (_, sb) = Bound(pair.B, 9);
        int sa = pair.A.UdpOpen();
        for (int i = 0; i < 20; i++)
        {
            pair.A.UdpSendTo(sa, Payload(i, 100), new(SimPair.AddressB.Address, 9));
            pair.RunFor(Ms);
        }
        Assert.That(Drain(pair.B, sb).Select(x => x.Seq), Is.EqualTo(Enumerable.Range(0, 8)));
        Assert.That(pair.B.Counters.UdpRcvbufErrors, Is.EqualTo(12));
        Assert.That(pair.B.Counters.Drop(DropReason.UdpReceiveBufferFull), Is.EqualTo(12));
    }

    [Test]
    public void Socket_calls_give_linux_errors()
    {
        using var pair = new SimPair(seed: 10, tweak: o => o with { UdpSockets = 2 });
        var s = pair.A;
        int a = s.UdpOpen();
        int b = s.UdpOpen();
        Assert.That(s.UdpOpen(), Is.EqualTo(-(int)Errno.EMFILE));
        Assert.That(s.UdpBind(a, new(Ipv4Address.Any, 53)), Is.Zero);
        Assert.That(s.UdpBind(a, new(Ipv4Address.Any, 54)), Is.EqualTo(-(int)Errno.EINVAL), "already bound");
        Assert.That(s.UdpBind(b, new(Ipv4Address.Any, 53)), Is.EqualTo(-(int)Errno.EADDRINUSE));
        Assert.That(s.UdpBind(b, new(Ipv4Address.Parse("10.1.0.99"), 55)), Is.EqualTo(-(int)Errno.EADDRNOTAVAIL));
        Assert.That(s.UdpSend(b, "x"u8), Is.EqualTo(-(int)Errno.EDESTADDRREQ));
        Assert.That(s.UdpSendTo(b, "x"u8, new(SimPair.AddressB.Address, 0)), Is.EqualTo(-(int)Errno.EINVAL));
        Assert.That(s.UdpSendTo(b, new byte[65508], new(SimPair.AddressB.Address, 9)), Is.EqualTo(-(int)Errno.EMSGSIZE), "over 65,507 bytes");
        Assert.That(s.UdpSendTo(b, new byte[65507], new(SimPair.AddressB.Address, 9)), Is.EqualTo(65507), "fragmented");
        Assert.That(s.UdpSendTo(b, "x"u8, new(Ipv4Address.Parse("192.0.2.1"), 9)), Is.EqualTo(-(int)Errno.ENETUNREACH));
        Assert.That(s.UdpSendTo(b, "x"u8, new(Ipv4Address.Broadcast, 9)), Is.EqualTo(-(int)Errno.EACCES));
        Assert.That(s.UdpSetBroadcast(b, true), Is.Zero);
        Assert.That(s.UdpSendTo(b, "x"u8, new(Ipv4Address.Broadcast, 9)), Is.EqualTo(1));
        Assert.That(s.UdpLocalEndpoint(b).Port, Is.InRange(32768, 60999), "auto-bound to an ephemeral port");
        Assert.That(s.UdpClose(a), Is.Zero);
        Assert.That(s.UdpClose(a), Is.EqualTo(-(int)Errno.EBADF));
        Assert.That(s.UdpReceiveFrom(a, new byte[1], out _), Is.EqualTo(-(int)Errno.EBADF));
    }

    [Test]
    public void Datagram_longer_than_the_buffer_is_truncated_and_the_full_length_reported()
    {
        using var pair = new SimPair(seed: 11);
        var (_, sb) = Bound(pair.B, 9);
        int sa = pair.A.UdpOpen();
        pair.A.UdpSendTo(sa, Payload(5, 300), new(SimPair.AddressB.Address, 9));
        pair.RunFor(10 * Ms);
        var small = new byte[10];
        Assert.That(pair.B.UdpReceiveFrom(sb, small, out var from, out int full), Is.EqualTo(10));
        Assert.That(full, Is.EqualTo(300));
        Assert.That(small, Is.EqualTo(Payload(5, 300)[..10]));
        Assert.That(from, Is.EqualTo(new Ipv4Endpoint(SimPair.AddressA.Address, pair.A.UdpLocalEndpoint(sa).Port)));
        Assert.That(pair.B.UdpReceiveFrom(sb, small, out _), Is.EqualTo(-(int)Errno.EAGAIN), "the rest is discarded");
    }
}
