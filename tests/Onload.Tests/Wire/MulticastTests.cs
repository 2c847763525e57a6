using Onload.Stack;
using Onload.Stack.Wire;
using PD = PacketDotNet;

namespace Onload.Tests.Wire;

/// <summary>UDP multicast and IGMP as a peer on the wire sees them.</summary>
[TestFixture]
public class MulticastTests
{
    private static readonly Ipv4Address Group = Ipv4Address.Parse("239.1.2.3");

    private static bool IsIgmp(byte[] f) => f.Length > 34 && f[12] == 0x08 && f[13] == 0x00 && f[23] == IpProtocol.Igmp;

    /// <summary>The IGMP message of a frame (after the IP header and its Router Alert option).</summary>
    private static byte[] Igmp(byte[] f) => f.AsSpan(14 + (f[14] & 0xF) * 4).ToArray();

    private static byte[] MulticastUdp(RawPeer peer, Ipv4Address group, ushort port, byte[] payload)
    {
        var f = peer.UdpFrame(40000, port, payload);
        // Re-address it to the group: destination MAC and IP, then the checksums.
        var mac = new byte[6];
        Onload.Vnic.MacAddress.ForIpv4Multicast(group.Value).Write(mac);
        mac.CopyTo(f, 0);
        var packet = PD.Packet.ParsePacket(PD.LinkLayers.Ethernet, f);
        var ip = packet.Extract<PD.IPv4Packet>()!;
        ip.DestinationAddress = System.Net.IPAddress.Parse(group.ToString());
        packet.Extract<PD.UdpPacket>()!.UpdateUdpChecksum();
        ip.UpdateIPChecksum();
        return packet.Bytes;
    }

    [Test]
    public void Joining_sends_igmpv3_reports_and_leaving_sends_one_that_says_so()
    {
        using var peer = new RawPeer();
        int s = peer.Stack.UdpOpen();
        Assert.That(peer.Stack.UdpJoinGroup(s, Group), Is.Zero);
        var first = peer.Received().Where(IsIgmp).ToList();
        peer.Clock.Advance(1_000_000_001);
        peer.Stack.Poll();
        var second = peer.Received().Where(IsIgmp).ToList();
        Assert.That(first, Has.Count.EqualTo(1), "an unsolicited report at once");
        Assert.That(second, Has.Count.EqualTo(1), "and one more within the unsolicited report interval (robustness 2)");
        foreach (var f in first.Concat(second))
        {
            Assert.That(f.AsSpan(30, 4).ToArray(), Is.EqualTo(new byte[] { 224, 0, 0, 22 }), "to all IGMPv3 routers");
            Assert.That(f.AsSpan(0, 6).ToArray(), Is.EqualTo(new byte[] { 0x01, 0x00, 0x5e, 0x00, 0x00, 0x16 }));
            Assert.That(f[22], Is.EqualTo(1), "TTL 1");
            Assert.That(f.AsSpan(34, 4).ToArray(), Is.EqualTo(new byte[] { 0x94, 0x04, 0, 0 }), "Router Alert");
            var igmp = Igmp(f);
            Assert.That(Checksum.Compute(igmp), Is.Zero);
            Assert.That(igmp[0], Is.EqualTo(IgmpType.V3MembershipReport));
            Assert.That(igmp[8], Is.EqualTo(IgmpRecordType.ChangeToExcludeMode));
            Assert.That(Ipv4Address.Read(igmp.AsSpan(12)), Is.EqualTo(Group));
        }
        Assert.That(peer.Stack.UdpLeaveGroup(s, Group), Is.Zero);
        var leave = peer.Received().Where(IsIgmp).Single();
        Assert.That(Igmp(leave)[8], Is.EqualTo(IgmpRecordType.ChangeToIncludeMode));
    }

    [Test]
    public void A_joined_socket_receives_the_group_and_stops_after_leaving()
    {
        using var peer = new RawPeer();
        int s = peer.Stack.UdpOpen();
        peer.Stack.UdpBind(s, new Ipv4Endpoint(Ipv4Address.Any, 5000));
        var frame = MulticastUdp(peer, Group, 5000, "to the group"u8.ToArray());
        peer.Inject(frame);
        Assert.That(peer.Stack.UdpReadable(s), Is.False, "not joined yet");
        Assert.That(peer.Stack.Counters.Drop(DropReason.IpMulticastNotJoined), Is.EqualTo(1));
        peer.Stack.UdpJoinGroup(s, Group);
        peer.Inject(frame);
        var buf = new byte[64];
        int n = peer.Stack.UdpReceiveFrom(s, buf, out var from);
        Assert.That(buf[..n], Is.EqualTo("to the group"u8.ToArray()));
        Assert.That(from.Address, Is.EqualTo(Ipv4Address.Parse("10.2.0.1")));
        Assert.That(peer.Stack.Counters.UdpNoPorts, Is.Zero);
        peer.Stack.UdpLeaveGroup(s, Group);
        peer.Inject(frame);
        Assert.That(peer.Stack.UdpReadable(s), Is.False, "left");
        Assert.That(peer.Received().Count(f => f[23] == IpProtocol.Icmp), Is.Zero, "no ICMP error about multicast");
    }

    [Test]
    public void A_v2_general_query_is_answered_with_a_v2_report_within_the_max_response_time()
    {
        using var peer = new RawPeer();
        int s = peer.Stack.UdpOpen();
        peer.Stack.UdpJoinGroup(s, Group);
        peer.Clock.Advance(2_000_000_000);
        peer.Stack.Poll();
        peer.Received();
        var query = new byte[8];
        IgmpMessage.WriteV2(query, IgmpType.MembershipQuery, Ipv4Address.Any);
        query[1] = 100; // 10 s
        query[2] = query[3] = 0;
        ushort c = Checksum.Compute(query);
        query[2] = (byte)(c >> 8);
        query[3] = (byte)c;
        var ip = new PD.IPv4Packet(RawPeer.PeerIp, System.Net.IPAddress.Parse("224.0.0.1")) { Protocol = PD.ProtocolType.Igmp, TimeToLive = 1, PayloadData = query };
        ip.UpdateCalculatedValues();
        ip.UpdateIPChecksum();
        peer.Inject(new PD.EthernetPacket(peer.PeerMac, System.Net.NetworkInformation.PhysicalAddress.Parse("01-00-5E-00-00-01"), PD.EthernetType.IPv4) { PayloadPacket = ip }.Bytes);
        Assert.That(peer.Stack.Counters.IgmpInQueries, Is.EqualTo(1));
        Assert.That(peer.Stack.IgmpV2Compatibility, Is.True);
        var reports = new List<byte[]>();
        for (int i = 0; i < 101 && reports.Count == 0; i++)
        {
            peer.Clock.Advance(100_000_000);
            peer.Stack.Poll();
            reports.AddRange(peer.Received().Where(IsIgmp));
        }
        var report = reports.Single();
        Assert.That(Igmp(report)[0], Is.EqualTo(IgmpType.V2MembershipReport));
        Assert.That(Ipv4Address.Read(report.AsSpan(30)), Is.EqualTo(Group), "a v2 report goes to the group itself");
    }

    [Test]
    public void Sending_to_a_group_uses_its_mac_and_the_multicast_ttl_and_loops_back_when_asked()
    {
        using var peer = new RawPeer();
        int tx = peer.Stack.UdpOpen();
        int rx = peer.Stack.UdpOpen();
        peer.Stack.UdpBind(rx, new Ipv4Endpoint(Ipv4Address.Any, 6000));
        peer.Stack.UdpJoinGroup(rx, Group);
        peer.Received();
        Assert.That(peer.Stack.UdpSendTo(tx, "one"u8, new(Group, 6000)), Is.EqualTo(3));
        var sent = peer.Received().Single(f => f[23] == IpProtocol.Udp);
        Assert.That(sent.AsSpan(0, 6).ToArray(), Is.EqualTo(new byte[] { 0x01, 0x00, 0x5e, 0x01, 0x02, 0x03 }));
        Assert.That(sent[22], Is.EqualTo(1), "IP_MULTICAST_TTL defaults to 1");
        Assert.That(peer.Stack.UdpReadable(rx), Is.True, "IP_MULTICAST_LOOP defaults to on");
        var buf = new byte[16];
        Assert.That(peer.Stack.UdpReceiveFrom(rx, buf, out _), Is.EqualTo(3));

        Assert.That(peer.Stack.UdpSetMulticastTtl(tx, 32), Is.Zero);
        Assert.That(peer.Stack.UdpSetMulticastLoop(tx, false), Is.Zero);
        peer.Stack.UdpSendTo(tx, "two"u8, new(Group, 6000));
        Assert.That(peer.Received().Single(f => f[23] == IpProtocol.Udp)[22], Is.EqualTo(32));
        Assert.That(peer.Stack.UdpReadable(rx), Is.False, "loop off");
    }

    [Test]
    public void Membership_calls_give_linux_errors()
    {
        using var peer = new RawPeer();
        var st = peer.Stack;
        int s = st.UdpOpen();
        Assert.That(st.UdpJoinGroup(s, Ipv4Address.Parse("10.2.0.9")), Is.EqualTo(-(int)Errno.EINVAL));
        Assert.That(st.UdpJoinGroup(s, Group), Is.Zero);
        Assert.That(st.UdpJoinGroup(s, Group), Is.EqualTo(-(int)Errno.EADDRINUSE));
        Assert.That(st.UdpLeaveGroup(s, Ipv4Address.Parse("239.9.9.9")), Is.EqualTo(-(int)Errno.EADDRNOTAVAIL));
        for (int i = 1; i < 20; i++)
            Assert.That(st.UdpJoinGroup(s, new Ipv4Address(Group.Value + (uint)i)), Is.Zero);
        Assert.That(st.UdpJoinGroup(s, new Ipv4Address(Group.Value + 20)), Is.EqualTo(-(int)Errno.ENOBUFS), "IP_MAX_MEMBERSHIPS");
        Assert.That(st.UdpSetMulticastTtl(s, 256), Is.EqualTo(-(int)Errno.EINVAL));
        Assert.That(st.UdpClose(s), Is.Zero);
        Assert.That(st.MulticastGroups.Count, Is.Zero, "close leaves every group");
    }
}
