using System.Net;
using Onload.Stack;
using Onload.Stack.Wire;
using PD = PacketDotNet;

namespace Onload.Tests.Wire;

/// <summary>Every frame the stack emits decodes in an independent decoder (PacketDotNet) to the fields it meant.</summary>
[TestFixture]
public class EmittedFramesDecodeTests
{
    private static T Decode<T>(byte[] frame) where T : PD.Packet
    {
        var packet = PD.Packet.ParsePacket(PD.LinkLayers.Ethernet, frame);
        var inner = packet.Extract<T>();
        Assert.That(inner, Is.Not.Null, $"{typeof(T).Name} not found in {PacketPrinter.Format(frame)}");
        return inner!;
    }

    [Test]
    public void Arp_reply_to_a_request_for_our_address()
    {
        using var peer = new RawPeer();
        peer.Inject(peer.ArpFrame(PD.ArpOperation.Request, RawPeer.StackIp));
        var reply = peer.Received().Single();
        var eth = Decode<PD.EthernetPacket>(reply);
        Assert.That(eth.Type, Is.EqualTo(PD.EthernetType.Arp));
        Assert.That(eth.DestinationHardwareAddress, Is.EqualTo(peer.PeerMac));
        Assert.That(eth.SourceHardwareAddress, Is.EqualTo(peer.StackMac));
        var arp = Decode<PD.ArpPacket>(reply);
        Assert.That(arp.Operation, Is.EqualTo(PD.ArpOperation.Response));
        Assert.That(arp.SenderHardwareAddress, Is.EqualTo(peer.StackMac));
        Assert.That(arp.SenderProtocolAddress, Is.EqualTo(RawPeer.StackIp));
        Assert.That(arp.TargetHardwareAddress, Is.EqualTo(peer.PeerMac));
        Assert.That(arp.TargetProtocolAddress, Is.EqualTo(RawPeer.PeerIp));
        Assert.That(peer.Stack.Counters.ArpOutReplies, Is.EqualTo(1));
    }

    [Test]
    public void Gratuitous_arp_at_start_announces_our_address()
    {
        var clock = new Onload.Vnic.VirtualClock();
        using var link = new Onload.Vnic.Sim.SimLink(1, clock);
        using var stack = new NetStack(link.B, new StackOptions { Address = Ipv4Cidr.Parse("10.2.0.2/24") }, clock);
        clock.Advance(1_000_000);
        Span<Onload.Vnic.PacketDescriptor> d = stackalloc Onload.Vnic.PacketDescriptor[4];
        Assert.That(link.A.Receive(d), Is.EqualTo(1));
        var frame = link.A.Buffers.Span(d[0]).ToArray();
        link.A.Buffers.Release(d[0].Buffer);
        var arp = Decode<PD.ArpPacket>(frame);
        Assert.That(arp.Operation, Is.EqualTo(PD.ArpOperation.Request));
        Assert.That(arp.SenderProtocolAddress, Is.EqualTo(IPAddress.Parse("10.2.0.2")));
        Assert.That(arp.TargetProtocolAddress, Is.EqualTo(IPAddress.Parse("10.2.0.2")));
        Assert.That(Decode<PD.EthernetPacket>(frame).DestinationHardwareAddress.ToString(), Is.EqualTo("FFFFFFFFFFFF"));
    }

    [Test]
    public void Udp_echo_of_a_datagram_decodes_with_valid_checksums()
    {
        using var peer = new RawPeer();
        int s = peer.Stack.UdpOpen();
        Assert.That(peer.Stack.UdpBind(s, new Ipv4Endpoint(Ipv4Address.Any, 7)), Is.Zero);
        var payload = Enumerable.Range(0, 333).Select(i => (byte)i).ToArray();
        peer.Inject(peer.UdpFrame(40000, 7, payload));
        var buf = new byte[2048];
        int n = peer.Stack.UdpReceiveFrom(s, buf, out var from);
        Assert.That(buf[..n], Is.EqualTo(payload));
        Assert.That(from, Is.EqualTo(new Ipv4Endpoint(Ipv4Address.Parse("10.2.0.1"), 40000)));
        // The stack learnt the peer's MAC from nothing yet: the reply first resolves it.
        Assert.That(peer.Stack.UdpSendTo(s, buf.AsSpan(0, n), from), Is.EqualTo(n));
        var request = peer.Received().Single();
        Assert.That(Decode<PD.ArpPacket>(request).TargetProtocolAddress, Is.EqualTo(RawPeer.PeerIp));
        var reply = new PD.ArpPacket(PD.ArpOperation.Response, peer.StackMac, RawPeer.StackIp, peer.PeerMac, RawPeer.PeerIp);
        peer.Inject(new PD.EthernetPacket(peer.PeerMac, peer.StackMac, PD.EthernetType.Arp) { PayloadPacket = reply }.Bytes);
        var datagram = peer.Received().Single();

        var ip = Decode<PD.IPv4Packet>(datagram);
        Assert.That(ip.SourceAddress, Is.EqualTo(RawPeer.StackIp));
        Assert.That(ip.DestinationAddress, Is.EqualTo(RawPeer.PeerIp));
        Assert.That(ip.TimeToLive, Is.EqualTo(64));
        Assert.That(ip.Protocol, Is.EqualTo(PD.ProtocolType.Udp));
        Assert.That(ip.TotalLength, Is.EqualTo(20 + 8 + 333));
        Assert.That(ip.FragmentFlags & 0x2, Is.EqualTo(0x2), "DF set, as Linux does for UDP");
        Assert.That(ip.ValidIPChecksum, Is.True);
        var udp = Decode<PD.UdpPacket>(datagram);
        Assert.That(udp.SourcePort, Is.EqualTo(7));
        Assert.That(udp.DestinationPort, Is.EqualTo(40000));
        Assert.That(udp.Length, Is.EqualTo(8 + 333));
        Assert.That(udp.ValidUdpChecksum, Is.True);
        Assert.That(udp.PayloadData, Is.EqualTo(payload));
    }

    [Test]
    public void Echo_reply_mirrors_the_request_with_valid_checksums()
    {
        using var peer = new RawPeer();
        var data = Enumerable.Range(0, 56).Select(i => (byte)(i * 3)).ToArray();
        peer.Inject(peer.EchoRequestFrame(id: 0x1234, seq: 7, data));
        var reply = peer.Received().Single();
        var eth = Decode<PD.EthernetPacket>(reply);
        Assert.That(eth.DestinationHardwareAddress, Is.EqualTo(peer.PeerMac));
        var ip = Decode<PD.IPv4Packet>(reply);
        Assert.That(ip.SourceAddress, Is.EqualTo(RawPeer.StackIp));
        Assert.That(ip.DestinationAddress, Is.EqualTo(RawPeer.PeerIp));
        Assert.That(ip.ValidIPChecksum, Is.True);
        var icmp = Decode<PD.IcmpV4Packet>(reply);
        Assert.That(icmp.TypeCode, Is.EqualTo(PD.IcmpV4TypeCode.EchoReply));
        Assert.That(icmp.Id, Is.EqualTo(0x1234));
        Assert.That(icmp.Sequence, Is.EqualTo(7));
        Assert.That(icmp.ValidIcmpChecksum, Is.True, "the incrementally updated checksum verifies");
        Assert.That(reply.AsSpan(14 + 20 + 8).ToArray(), Is.EqualTo(data));
        Assert.That(peer.Stack.Counters.IcmpOutEchoReps, Is.EqualTo(1));
    }

    [Test]
    public void Port_unreachable_quotes_the_offending_datagram()
    {
        using var peer = new RawPeer();
        var offending = peer.UdpFrame(40000, 9999, "nobody home"u8.ToArray());
        peer.Inject(offending);
        var frames = peer.Received();
        // The stack first resolves the peer, then sends the error.
        var reply = new PD.ArpPacket(PD.ArpOperation.Response, peer.StackMac, RawPeer.StackIp, peer.PeerMac, RawPeer.PeerIp);
        peer.Inject(new PD.EthernetPacket(peer.PeerMac, peer.StackMac, PD.EthernetType.Arp) { PayloadPacket = reply }.Bytes);
        frames.AddRange(peer.Received());
        var error = frames.Single(f => f[12] == 0x08 && f[13] == 0x00);
        var ip = Decode<PD.IPv4Packet>(error);
        Assert.That(ip.Protocol, Is.EqualTo(PD.ProtocolType.Icmp));
        Assert.That(ip.ValidIPChecksum, Is.True);
        Assert.That(ip.TypeOfService & 0xC0, Is.EqualTo(0xC0));
        var icmp = Decode<PD.IcmpV4Packet>(error);
        Assert.That(icmp.TypeCode, Is.EqualTo(PD.IcmpV4TypeCode.UnreachablePort));
        Assert.That(icmp.ValidIcmpChecksum, Is.True);
        Assert.That(error.AsSpan(14 + 20 + 8).ToArray(), Is.EqualTo(offending.AsSpan(14).ToArray()), "the whole offending packet fits in 576 bytes");
    }
}
