using System.Net;
using Onload.Stack;
using Onload.Stack.Wire;
using Onload.Vnic;
using PD = PacketDotNet;

namespace Onload.Tests.Wire;

/// <summary>Malformed and hostile frames are dropped and counted under their reason, never thrown through, and
/// leave no buffer behind.</summary>
[TestFixture]
[Category("hostile")]
public class HostileFrameTests
{
    private static void SetIpChecksum(byte[] f)
    {
        int ihl = (f[14] & 0xF) * 4;
        f[24] = f[25] = 0;
        ushort c = Checksum.Compute(f.AsSpan(14, Math.Min(ihl, f.Length - 14)));
        f[24] = (byte)(c >> 8);
        f[25] = (byte)c;
    }

    private static byte[] Udp(RawPeer p) => p.UdpFrame(40000, 9, "hello hostile world"u8.ToArray());

    public static IEnumerable<TestCaseData> Cases()
    {
        yield return Case("truncated Ethernet header", p => new byte[10], DropReason.EthernetTruncated);
        yield return Case("frame for another MAC", p => { var f = Udp(p); f[0] = 0x02; f[5] = 0x99; return f; }, DropReason.EthernetNotForUs);
        yield return Case("multicast source MAC", p => { var f = Udp(p); f[6] |= 1; return f; }, DropReason.EthernetBadSource);
        yield return Case("unknown EtherType", p => { var f = Udp(p); f[12] = 0x88; f[13] = 0xB5; return f; }, DropReason.EthernetUnknownType);
        yield return Case("IP header cut short", p => Udp(p)[..(14 + 12)], DropReason.IpTruncated);
        yield return Case("IP version 6 in an IPv4 EtherType", p => { var f = Udp(p); f[14] = 0x65; return f; }, DropReason.IpBadVersion);
        yield return Case("IHL below 5", p => { var f = Udp(p); f[14] = 0x44; return f; }, DropReason.IpBadHeaderLength);
        yield return Case("IHL beyond the frame", p => { var f = Udp(p)[..(14 + 24)]; f[14] = 0x4F; return f; }, DropReason.IpBadHeaderLength);
        yield return Case("total length below IHL", p => { var f = Udp(p); f[16] = 0; f[17] = 12; SetIpChecksum(f); return f; }, DropReason.IpBadTotalLength);
        yield return Case("total length beyond the frame", p => { var f = Udp(p); f[16] = 0x05; f[17] = 0xDC; SetIpChecksum(f); return f; }, DropReason.IpTruncated);
        yield return Case("bad IP header checksum", p => { var f = Udp(p); f[24] ^= 0x55; return f; }, DropReason.IpBadChecksum);
        yield return Case("IP option overrunning the header", p => WithOptions(Udp(p), [0x07, 0x27, 0x04, 0x00]), DropReason.IpBadOptions);
        yield return Case("IP option with length 1", p => WithOptions(Udp(p), [0x44, 0x01, 0x00, 0x00]), DropReason.IpBadOptions);
        yield return Case("IP packet for another host", p => { var f = Udp(p); f[33] = 77; SetIpChecksum(f); return f; }, DropReason.IpNotForUs);
        yield return Case("martian source (loopback)", p => { var f = Udp(p); f[26] = 127; SetIpChecksum(f); return f; }, DropReason.IpMartianSource);
        yield return Case("martian source (our own address)", p => { var f = Udp(p); f[29] = 2; SetIpChecksum(f); return f; }, DropReason.IpMartianSource);
        yield return Case("fragment with under 8 bytes and more to come", p => { var f = Shorten(Udp(p), 14 + 20 + 4); f[20] = 0x20; SetIpChecksum(f); return f; }, DropReason.IpReassemblyInconsistent);
        yield return Case("fragment ending past 65,535 bytes", p => { var f = Udp(p); f[20] = 0x1F; f[21] = 0xFD; SetIpChecksum(f); return f; }, DropReason.IpReassemblyOversize);
        yield return Case("multicast to a group not joined", p => { var f = Udp(p); f[0] = 0x01; f[1] = 0x00; f[2] = 0x5e; f[3] = 0x01; f[4] = 0x02; f[5] = 0x03; f[30] = 239; f[31] = 1; f[32] = 2; f[33] = 3; SetIpChecksum(f); return f; }, DropReason.IpMulticastNotJoined);
        yield return Case("UDP header cut short", p => Shorten(Udp(p), 14 + 20 + 6), DropReason.UdpTruncated);
        yield return Case("UDP length beyond IP payload", p => { var f = Udp(p); f[38] = 0x10; return f; }, DropReason.UdpBadLength);
        yield return Case("UDP length below 8", p => { var f = Udp(p); f[38] = 0; f[39] = 4; return f; }, DropReason.UdpBadLength);
        yield return Case("bad UDP checksum", p => { var f = Udp(p); f[^1] ^= 0xFF; return f; }, DropReason.UdpBadChecksum);
        yield return Case("ICMP cut short", p => Shorten(p.EchoRequestFrame(1, 1, []), 14 + 20 + 4), DropReason.IcmpTruncated);
        yield return Case("bad ICMP checksum", p => { var f = p.EchoRequestFrame(1, 1, [1, 2, 3]); f[^1] ^= 1; return f; }, DropReason.IcmpBadChecksum);
        yield return Case("ARP cut short", p => p.ArpFrame(PD.ArpOperation.Request, RawPeer.StackIp)[..(14 + 20)], DropReason.ArpTruncated);
        yield return Case("ARP with bad operation", p => { var f = p.ArpFrame(PD.ArpOperation.Request, RawPeer.StackIp); f[21] = 9; return f; }, DropReason.ArpBadOperation);
        yield return Case("ARP for IPv6 protocol type", p => { var f = p.ArpFrame(PD.ArpOperation.Request, RawPeer.StackIp); f[16] = 0x86; f[17] = 0xDD; return f; }, DropReason.ArpUnsupportedFormat);
        yield return Case("ARP for another host", p => p.ArpFrame(PD.ArpOperation.Request, IPAddress.Parse("10.2.0.77")), DropReason.ArpNotForUs);
        yield return Case("ARP claiming our own address", p => p.ArpFrame(PD.ArpOperation.Request, RawPeer.StackIp, sender: RawPeer.StackIp), DropReason.ArpBogusSender);
    }

    private static TestCaseData Case(string name, Func<RawPeer, byte[]> make, DropReason reason) =>
        new TestCaseData(make, reason).SetName($"Dropped and counted: {name}");

    /// <summary>The IP header grown by 4 option bytes, checksum fixed, lengths kept consistent.</summary>
    private static byte[] WithOptions(byte[] f, byte[] options)
    {
        var g = new byte[f.Length + 4];
        f.AsSpan(0, 34).CopyTo(g);
        options.CopyTo(g, 34);
        f.AsSpan(34).CopyTo(g.AsSpan(38));
        g[14] = 0x46;
        int total = (g[16] << 8 | g[17]) + 4;
        g[16] = (byte)(total >> 8);
        g[17] = (byte)total;
        SetIpChecksum(g);
        return g;
    }

    /// <summary>A frame cut to <paramref name="length"/> with the IP total length saying so (a consistent IP packet).</summary>
    private static byte[] Shorten(byte[] f, int length)
    {
        var g = f[..length];
        int total = length - 14;
        g[16] = (byte)(total >> 8);
        g[17] = (byte)total;
        SetIpChecksum(g);
        return g;
    }

    [TestCaseSource(nameof(Cases))]
    public void Hostile_frame(Func<RawPeer, byte[]> make, DropReason expected)
    {
        using var peer = new RawPeer();
        int s = peer.Stack.UdpOpen();
        peer.Stack.UdpBind(s, new Ipv4Endpoint(Ipv4Address.Any, 9));
        int free = peer.Link.B.Buffers.Available;
        var frame = make(peer);
        Assert.DoesNotThrow(() => peer.Inject(frame));
        Assert.That(peer.Stack.Counters.Drop(expected), Is.EqualTo(1), $"{expected} for {PacketPrinter.Format(frame)}");
        Assert.That(peer.Stack.Counters.TotalDrops, Is.EqualTo(1), "counted once, under one reason");
        Assert.That(peer.Stack.UdpReadable(s), Is.False, "nothing delivered");
        peer.Received();
        Assert.That(peer.Link.B.Buffers.Available, Is.EqualTo(free), "no buffer leaked");
    }

    [Test]
    public void The_valid_frame_the_cases_start_from_is_delivered()
    {
        using var peer = new RawPeer();
        int s = peer.Stack.UdpOpen();
        peer.Stack.UdpBind(s, new Ipv4Endpoint(Ipv4Address.Any, 9));
        peer.Inject(Udp(peer));
        Assert.That(peer.Stack.UdpReadable(s), Is.True);
        Assert.That(peer.Stack.Counters.TotalDrops, Is.Zero);
    }

    [Test]
    public void Ten_thousand_random_mutations_never_throw_nor_leak()
    {
        using var peer = new RawPeer();
        int s = peer.Stack.UdpOpen();
        peer.Stack.UdpBind(s, new Ipv4Endpoint(Ipv4Address.Any, 9));
        var random = new SeededRandom(12345);
        var seeds = new[] { Udp(peer), peer.EchoRequestFrame(1, 2, new byte[40]), peer.ArpFrame(PD.ArpOperation.Request, RawPeer.StackIp) };
        var buf = new byte[2048];
        for (int i = 0; i < 10_000; i++)
        {
            var f = (byte[])seeds[i % seeds.Length].Clone();
            int flips = 1 + random.Next(4);
            for (int k = 0; k < flips; k++)
                f[random.Next(f.Length)] = (byte)random.NextUInt64();
            if (random.Next(4) == 0)
                f = f[..random.Next(f.Length)];
            peer.Inject(f);
            while (peer.Stack.UdpReceiveFrom(s, buf, out _) != -(int)Errno.EAGAIN)
            {
            }
            peer.Received();
        }
        Assert.That(peer.Stack.Counters.TotalDrops, Is.GreaterThan(5000));
        int held = peer.Stack.Neighbours.PendingCount;
        Assert.That(peer.Link.B.Buffers.Available + held, Is.EqualTo(peer.Link.B.Buffers.Count), "every buffer back in the pool");
    }
}
