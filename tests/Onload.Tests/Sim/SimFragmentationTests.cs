using System.Buffers.Binary;
using Onload.Stack;
using Onload.Stack.Wire;
using Onload.Vnic.Sim;

namespace Onload.Tests.Sim;

/// <summary>Datagrams larger than the MTU between two stacks: fragmented on send, reassembled on receive.</summary>
[TestFixture]
public class SimFragmentationTests
{
    private const long Ms = 1_000_000;

    private static byte[] Payload(int seq, int length)
    {
        var p = new byte[length];
        BinaryPrimitives.WriteInt32BigEndian(p, seq);
        for (int i = 4; i < length; i++)
            p[i] = (byte)(seq * 17 + i * 5 + (i >> 8));
        return p;
    }

    [TestCase(1473)]
    [TestCase(3000)]
    [TestCase(8000)]
    [TestCase(65507)]
    public void Datagram_larger_than_the_mtu_arrives_whole_both_ways(int size)
    {
        using var pair = new SimPair(seed: 20);
        int sa = pair.A.UdpOpen();
        int sb = pair.B.UdpOpen();
        pair.A.UdpBind(sa, new(Ipv4Address.Any, 1000));
        pair.B.UdpBind(sb, new(Ipv4Address.Any, 2000));
        Assert.That(pair.A.UdpSendTo(sa, Payload(1, size), new(SimPair.AddressB.Address, 2000)), Is.EqualTo(size));
        pair.RunFor(10 * Ms);
        Assert.That(pair.B.UdpSendTo(sb, Payload(2, size), new(SimPair.AddressA.Address, 1000)), Is.EqualTo(size));
        pair.RunFor(10 * Ms);
        var buf = new byte[65536];
        Assert.That(pair.B.UdpReceiveFrom(sb, buf, out _), Is.EqualTo(size));
        Assert.That(buf.AsSpan(0, size).SequenceEqual(Payload(1, size)), Is.True);
        Assert.That(pair.A.UdpReceiveFrom(sa, buf, out _), Is.EqualTo(size));
        Assert.That(buf.AsSpan(0, size).SequenceEqual(Payload(2, size)), Is.True);
        int fragments = (size + 8 + 1479) / 1480;
        Assert.That(pair.A.Counters.IpFragCreates, Is.EqualTo(fragments));
        Assert.That(pair.B.Counters.IpReasmOKs, Is.EqualTo(1));
        Assert.That(pair.A.Reassembly.Active + pair.B.Reassembly.Active, Is.Zero, "nothing left held");
        Assert.That(pair.A.Vnic.Buffers.Available, Is.EqualTo(pair.A.Vnic.Buffers.Count));
    }

    [Test]
    public void Under_loss_and_reordering_large_datagrams_arrive_whole_or_not_at_all_and_nothing_leaks()
    {
        var faults = new LinkFaults { Loss = 0.05, Duplicate = 0.05, Reorder = 0.2, Corrupt = 0.02, MinDelayNs = 10_000, MaxDelayNs = 300_000 };
        using var pair = new SimPair(seed: 21, faults, faults);
        int sa = pair.A.UdpOpen();
        int sb = pair.B.UdpOpen();
        pair.B.UdpBind(sb, new(Ipv4Address.Any, 2000));
        var buf = new byte[65536];
        int whole = 0;
        for (int i = 0; i < 200; i++)
        {
            int size = 2000 + i * 37;
            pair.A.UdpSendTo(sa, Payload(i, size), new(SimPair.AddressB.Address, 2000));
            pair.RunFor(2 * Ms);
            int n;
            while ((n = pair.B.UdpReceiveFrom(sb, buf, out _)) >= 0)
            {
                int seq = BinaryPrimitives.ReadInt32BigEndian(buf);
                Assert.That(buf.AsSpan(0, n).SequenceEqual(Payload(seq, 2000 + seq * 37)), Is.True, $"datagram {seq} damaged");
                whole++;
            }
        }
        Assert.That(whole, Is.InRange(100, 200), StackDump.Counters(pair.B) +
            $" link: lost {pair.Link.AToB.Lost} dup {pair.Link.AToB.Duplicated} corrupt {pair.Link.AToB.Corrupted} full {pair.Link.AToB.DroppedQueueFull} sent {pair.Link.AToB.Sent} delivered {pair.Link.AToB.Delivered}" +
            $" {StackDump.Vnic(pair.B.Vnic)} reassembly active {pair.B.Reassembly.Active} mem {pair.B.Reassembly.Memory}");
        Assert.That(pair.B.Reassembly.Active, Is.GreaterThan(0), "incomplete datagrams wait for their missing fragments");
        pair.RunFor(31_000 * Ms); // past ipfrag_time
        Assert.That(pair.B.Reassembly.Active, Is.Zero);
        Assert.That(pair.B.Reassembly.Memory, Is.Zero);
        Assert.That(pair.B.Counters.Drop(DropReason.IpReassemblyTimeout), Is.GreaterThan(0));
        Assert.That(pair.B.Vnic.Buffers.Available, Is.EqualTo(pair.B.Vnic.Buffers.Count), "every fragment buffer returned");
    }
}
