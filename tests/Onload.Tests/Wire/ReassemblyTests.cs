using Onload.Stack;
using Onload.Stack.Wire;

namespace Onload.Tests.Wire;

/// <summary>IPv4 reassembly against hand-made fragments: order, duplicates, overlaps and limits as Linux handles them.</summary>
[TestFixture]
public class ReassemblyTests
{
    private static byte[] Data(int length) => Enumerable.Range(0, length).Select(i => (byte)(i * 7 + (i >> 8))).ToArray();

    private static (RawPeer Peer, int Socket) Listening(Func<StackOptions, StackOptions>? tweak = null)
    {
        var peer = new RawPeer(tweak: tweak);
        int s = peer.Stack.UdpOpen();
        peer.Stack.UdpBind(s, new Ipv4Endpoint(Ipv4Address.Any, 9));
        return (peer, s);
    }

    private static void AssertReceived(RawPeer peer, int s, byte[] expected)
    {
        var buf = new byte[65536];
        int n = peer.Stack.UdpReceiveFrom(s, buf, out _);
        Assert.That(n, Is.EqualTo(expected.Length));
        Assert.That(buf.AsSpan(0, n).SequenceEqual(expected), Is.True);
    }

    private static void AssertNothingLeft(RawPeer peer)
    {
        Assert.That(peer.Stack.Reassembly.Active, Is.Zero);
        peer.Received();
        Assert.That(peer.Link.B.Buffers.Available + peer.Stack.Neighbours.PendingCount, Is.EqualTo(peer.Link.B.Buffers.Count));
    }

    [Test]
    public void Fragments_in_reverse_order_reassemble()
    {
        var (peer, s) = Listening();
        using var _ = peer;
        var data = Data(4000);
        var fragments = RawPeer.Fragment(peer.UdpFrame(40000, 9, data), 1480);
        fragments.Reverse();
        foreach (var f in fragments)
            peer.Inject(f);
        AssertReceived(peer, s, data);
        Assert.That(peer.Stack.Counters.IpReasmOKs, Is.EqualTo(1));
        AssertNothingLeft(peer);
    }

    [Test]
    public void A_duplicate_fragment_is_ignored_and_the_datagram_still_completes()
    {
        var (peer, s) = Listening();
        using var _ = peer;
        var data = Data(3000);
        var fragments = RawPeer.Fragment(peer.UdpFrame(40000, 9, data), 1000);
        peer.Inject(fragments[1]);
        peer.Inject(fragments[1]);
        peer.Inject(fragments[0]);
        peer.Inject(fragments[2]);
        peer.Inject(fragments[3]);
        AssertReceived(peer, s, data);
        Assert.That(peer.Stack.Counters.Drop(DropReason.IpFragmentDuplicate), Is.EqualTo(1));
        AssertNothingLeft(peer);
    }

    [Test]
    public void A_partial_overlap_discards_the_whole_datagram()
    {
        var (peer, s) = Listening();
        using var _ = peer;
        var frame = peer.UdpFrame(40000, 9, Data(3000));
        var ip = frame.AsSpan(14, 20).ToArray();
        var payload = frame.AsSpan(34).ToArray();
        peer.Inject(RawPeer.FragmentFrame(frame, ip, payload.AsSpan(0, 1400), 0, more: true));
        // Starts inside the first fragment and runs past it: FragmentSmack's shape.
        peer.Inject(RawPeer.FragmentFrame(frame, ip, payload.AsSpan(800, 1400), 800, more: true));
        peer.Inject(RawPeer.FragmentFrame(frame, ip, payload.AsSpan(2200), 2200, more: false));
        Assert.That(peer.Stack.Counters.Drop(DropReason.IpReassemblyOverlap), Is.EqualTo(1),
            StackDump.Counters(peer.Stack));
        Assert.That(peer.Stack.UdpReadable(s), Is.False, "no datagram made of overlapping pieces");
        peer.Clock.Advance(31_000_000_000);
        peer.Stack.Poll();
        AssertNothingLeft(peer);
    }

    [Test]
    public void A_copy_with_other_bytes_straddling_fragments_that_came_in_order_is_a_duplicate_but_across_runs_an_overlap()
    {
        var (peer, s) = Listening();
        using var _ = peer;
        var data = Data(3000);
        var frame = peer.UdpFrame(40000, 9, data);
        var ip = frame.AsSpan(14, 20).ToArray();
        var payload = frame.AsSpan(34).ToArray();
        var forged = Enumerable.Repeat((byte)0xee, 1000).ToArray();
        // [0, 800) then [800, 1600): one run, as Linux's inet_frag_queue_insert keeps them; [400, 1400) lies inside it.
        peer.Inject(RawPeer.FragmentFrame(frame, ip, payload.AsSpan(0, 800), 0, more: true));
        peer.Inject(RawPeer.FragmentFrame(frame, ip, payload.AsSpan(800, 800), 800, more: true));
        peer.Inject(RawPeer.FragmentFrame(frame, ip, forged, 400, more: true));
        peer.Inject(RawPeer.FragmentFrame(frame, ip, payload.AsSpan(1600), 1600, more: false));
        AssertReceived(peer, s, data);
        Assert.That(peer.Stack.Counters.Drop(DropReason.IpFragmentDuplicate), Is.EqualTo(1), "ignored, the first bytes kept");

        // The same pieces, the second before the first: two runs, and the copy straddling them condemns the datagram.
        frame[19] ^= 1; // another identification
        ip = frame.AsSpan(14, 20).ToArray();
        peer.Inject(RawPeer.FragmentFrame(frame, ip, payload.AsSpan(800, 800), 800, more: true));
        peer.Inject(RawPeer.FragmentFrame(frame, ip, payload.AsSpan(0, 800), 0, more: true));
        peer.Inject(RawPeer.FragmentFrame(frame, ip, forged, 400, more: true));
        peer.Inject(RawPeer.FragmentFrame(frame, ip, payload.AsSpan(1600), 1600, more: false));
        Assert.That(peer.Stack.Counters.Drop(DropReason.IpReassemblyOverlap), Is.EqualTo(1));
        Assert.That(peer.Stack.UdpReadable(s), Is.False);
        peer.Clock.Advance(31_000_000_000);
        peer.Stack.Poll();
        AssertNothingLeft(peer);
    }

    [Test]
    public void More_fragments_than_allowed_discard_the_datagram()
    {
        var (peer, s) = Listening(o => o with { ReassemblyMaxFragments = 8 });
        using var _ = peer;
        foreach (var f in RawPeer.Fragment(peer.UdpFrame(40000, 9, Data(200)), 16))
            peer.Inject(f);
        Assert.That(peer.Stack.Counters.Drop(DropReason.IpReassemblyTooManyFragments), Is.EqualTo(1));
        Assert.That(peer.Stack.UdpReadable(s), Is.False);
        peer.Clock.Advance(31_000_000_000);
        peer.Stack.Poll();
        AssertNothingLeft(peer);
    }

    [Test]
    public void Fragments_beyond_the_memory_limit_are_refused_until_timeouts_free_memory()
    {
        var (peer, s) = Listening(o => o with { ReassemblyMemoryBytes = 4 * 2048 });
        using var _ = peer;
        var data = Data(4000);
        var frame = peer.UdpFrame(40000, 9, data);
        var fragments = RawPeer.Fragment(frame, 800); // 6 fragments: never all held at once
        foreach (var f in fragments)
            peer.Inject(f);
        Assert.That(peer.Stack.Counters.Drop(DropReason.IpReassemblyMemoryFull), Is.EqualTo(2));
        Assert.That(peer.Stack.Reassembly.Memory, Is.LessThanOrEqualTo(4 * 2048));
        peer.Clock.Advance(31_000_000_000);
        peer.Stack.Poll();
        Assert.That(peer.Stack.Reassembly.Memory, Is.Zero);
        foreach (var f in RawPeer.Fragment(peer.UdpFrame(40000, 9, Data(2000)), 1480))
            peer.Inject(f);
        AssertReceived(peer, s, Data(2000));
        AssertNothingLeft(peer);
    }

    [Test]
    public void Timeout_with_the_first_fragment_sends_time_exceeded_to_the_sender()
    {
        var (peer, _) = Listening();
        using var __ = peer;
        var frame = peer.UdpFrame(40000, 9, Data(3000));
        var fragments = RawPeer.Fragment(frame, 1480);
        peer.Inject(fragments[0]);
        peer.Received();
        peer.Clock.Advance(31_000_000_000);
        peer.Stack.Poll();
        // The stack resolves the sender first, then sends the error.
        var reply = new PacketDotNet.ArpPacket(PacketDotNet.ArpOperation.Response, peer.StackMac, RawPeer.StackIp, peer.PeerMac, RawPeer.PeerIp);
        peer.Inject(new PacketDotNet.EthernetPacket(peer.PeerMac, peer.StackMac, PacketDotNet.EthernetType.Arp) { PayloadPacket = reply }.Bytes);
        var error = peer.Received().Single(f => f[23] == IpProtocol.Icmp);
        Assert.That(error[34], Is.EqualTo(IcmpType.TimeExceeded));
        Assert.That(error[35], Is.EqualTo(1), "code 1: fragment reassembly time exceeded");
        Assert.That(error.AsSpan(42, 28).SequenceEqual(fragments[0].AsSpan(14, 28)), Is.True, "quotes the first fragment's header");
        AssertNothingLeft(peer);
    }

    [Test]
    public void A_large_ping_is_answered_with_a_fragmented_reply()
    {
        var (peer, _) = Listening();
        using var __ = peer;
        var data = Data(5000);
        foreach (var f in RawPeer.Fragment(peer.EchoRequestFrame(7, 1, data), 1480))
            peer.Inject(f);
        var reply = new PacketDotNet.ArpPacket(PacketDotNet.ArpOperation.Response, peer.StackMac, RawPeer.StackIp, peer.PeerMac, RawPeer.PeerIp);
        var frames = peer.Received();
        peer.Inject(new PacketDotNet.EthernetPacket(peer.PeerMac, peer.StackMac, PacketDotNet.EthernetType.Arp) { PayloadPacket = reply }.Bytes);
        frames.AddRange(peer.Received());
        var fragments = frames.Where(f => f[12] == 0x08 && f[13] == 0x00).ToList();
        Assert.That(fragments, Has.Count.EqualTo(4));
        var whole = fragments.OrderBy(f => (f[20] & 0x1F) << 8 | f[21]).SelectMany(f => f.Skip(34)).ToArray();
        Assert.That(whole[0], Is.EqualTo(IcmpType.EchoReply));
        Assert.That(Checksum.Compute(whole), Is.Zero, "the reply's checksum verifies across the fragments");
        Assert.That(whole.AsSpan(8).SequenceEqual(data), Is.True);
    }
}
