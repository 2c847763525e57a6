using System.Buffers.Binary;
using Onload.Stack;
using Onload.Stack.Tcp;
using Onload.Stack.Wire;
using Onload.Tests.Wire;
using static Onload.Tests.Tcp.TcpScript;

namespace Onload.Tests.Tcp;

/// <summary>
/// ICMP errors about TCP segments, as Linux's tcp_v4_err takes them (RFC 5927, RFC 1122 §4.2.3.9, RFC 1191): an
/// error must quote one of our connections and a sequence number between SND.UNA and SND.NXT; a hard error ends a
/// connect(), an established connection keeps going with a soft error, and "fragmentation needed" lowers the path
/// MTU and sends again in smaller pieces at once.
/// </summary>
[TestFixture]
[Category("hostile")]
public class TcpIcmpScriptTests
{
    /// <summary>An ICMP error from the peer quoting a TCP header the stack might have sent: our address to the peer,
    /// <paramref name="localPort"/> to <paramref name="remotePort"/> with <paramref name="seq"/> (RFC 792: the IP
    /// header and the first 8 bytes of the datagram).</summary>
    internal static byte[] IcmpErrorFrame(RawPeer peer, byte type, byte code, ushort localPort, ushort remotePort, uint seq,
        ushort nextHopMtu = 0)
    {
        var quote = new byte[28];
        WriteIpv4Header(quote, RawPeer.StackIp, RawPeer.PeerIp, 6, 40 + 100);
        BinaryPrimitives.WriteUInt16BigEndian(quote.AsSpan(20), localPort);
        BinaryPrimitives.WriteUInt16BigEndian(quote.AsSpan(22), remotePort);
        BinaryPrimitives.WriteUInt32BigEndian(quote.AsSpan(24), seq);
        var frame = new byte[14 + 20 + 8 + quote.Length];
        peer.StackMac.GetAddressBytes().CopyTo(frame, 0);
        peer.PeerMac.GetAddressBytes().CopyTo(frame, 6);
        frame[12] = 0x08;
        WriteIpv4Header(frame.AsSpan(14), RawPeer.PeerIp, RawPeer.StackIp, 1, 20 + 8 + quote.Length);
        var icmp = frame.AsSpan(34);
        icmp[0] = type;
        icmp[1] = code;
        BinaryPrimitives.WriteUInt16BigEndian(icmp[6..], nextHopMtu);
        quote.CopyTo(icmp[8..]);
        BinaryPrimitives.WriteUInt16BigEndian(icmp[2..], Sum(icmp));
        return frame;
    }

    private static void WriteIpv4Header(Span<byte> h, System.Net.IPAddress from, System.Net.IPAddress to, byte protocol, int totalLength)
    {
        h[0] = 0x45;
        BinaryPrimitives.WriteUInt16BigEndian(h[2..], (ushort)totalLength);
        h[6] = 0x40; // DF
        h[8] = 64;
        h[9] = protocol;
        from.GetAddressBytes().CopyTo(h[12..]);
        to.GetAddressBytes().CopyTo(h[16..]);
        BinaryPrimitives.WriteUInt16BigEndian(h[10..], Sum(h[..20]));
    }

    private static ushort Sum(ReadOnlySpan<byte> b)
    {
        uint s = 0;
        for (int i = 0; i + 1 < b.Length; i += 2)
            s += (uint)(b[i] << 8 | b[i + 1]);
        if ((b.Length & 1) != 0)
            s += (uint)(b[^1] << 8);
        while (s > 0xffff)
            s = (s & 0xffff) + (s >> 16);
        return (ushort)~s;
    }

    private static List<Seg> InjectIcmp(Conn c, byte type, byte code, uint seq, ushort? remotePort = null, ushort mtu = 0)
    {
        c.Peer.Inject(IcmpErrorFrame(c.Peer, type, code, Port, remotePort ?? PeerPort, seq, mtu));
        return c.Received();
    }

    [Test]
    public void An_error_quoting_another_connection_or_a_sequence_outside_the_flight_changes_nothing()
    {
        using var c = Establish();
        Assert.That(c.Stack.TcpSend(c.Socket, new byte[100]), Is.EqualTo(100));
        Expect(c.Received(), Ack | TcpFlags.Psh, seq: c.StackSeq, length: 100);
        uint una = c.StackSeq;

        InjectIcmp(c, IcmpType.DestinationUnreachable, IcmpUnreachableCode.Port, una, remotePort: PeerPort + 1);
        Assert.That(c.Stack.Counters.Drop(DropReason.IcmpErrorNoSocket), Is.EqualTo(1), "another tuple: no socket");
        InjectIcmp(c, IcmpType.DestinationUnreachable, IcmpUnreachableCode.Port, una + 100 + 1);
        InjectIcmp(c, IcmpType.DestinationUnreachable, IcmpUnreachableCode.Port, una - 1);
        InjectIcmp(c, IcmpType.DestinationUnreachable, IcmpUnreachableCode.FragmentationNeeded, una - 5000, mtu: 600);
        Assert.That(c.Stack.Counters.TcpExtOutOfWindowIcmps, Is.EqualTo(3), "beyond SND.NXT, before SND.UNA (Linux's OutOfWindowIcmps)");
        Assert.That(c.Stack.Counters.Drop(DropReason.TcpIcmpOutOfWindow), Is.EqualTo(3));
        Assert.That(c.Stack.TcpTakeError(c.Socket), Is.Zero, "no error recorded");
        Assert.That(c.Stack.Counters.TcpPathMtuReductions, Is.Zero, "the MTU stays");

        c.StackSeq += 100;
        Assert.That(c.Send(Ack), Is.Empty);
        Assert.That(c.Stack.TcpSend(c.Socket, new byte[3000]), Is.EqualTo(3000));
        var got = c.Received();
        Assert.That(got.Select(s => s.Payload.Length).Max(), Is.EqualTo(1448), "full segments still");
    }

    [Test]
    public void An_established_connection_keeps_going_after_a_port_unreachable_and_so_error_reports_it_once()
    {
        using var c = Establish();
        Assert.That(c.Stack.TcpSend(c.Socket, new byte[100]), Is.EqualTo(100));
        Expect(c.Received(), Ack | TcpFlags.Psh, seq: c.StackSeq, length: 100);

        InjectIcmp(c, IcmpType.DestinationUnreachable, IcmpUnreachableCode.Port, c.StackSeq);
        Assert.That(c.Stack.TcpStateOf(c.Socket), Is.EqualTo(TcpState.Established), "RFC 1122 §4.2.3.9: not fatal once synchronized");
        Assert.That(c.Stack.Counters.TcpIcmpSoftErrors, Is.EqualTo(1));
        Assert.That(c.Stack.TcpSend(c.Socket, new byte[10]), Is.EqualTo(10), "send works");
        Assert.That(c.Stack.TcpTakeError(c.Socket), Is.EqualTo((int)Errno.ECONNREFUSED), "SO_ERROR gives the soft error (sk_err_soft)");
        Assert.That(c.Stack.TcpTakeError(c.Socket), Is.Zero, "once");

        // Heard again, then an ACK: the peer is there after all, and Linux's tcp_ack forgets the soft error.
        InjectIcmp(c, IcmpType.DestinationUnreachable, IcmpUnreachableCode.Port, c.StackSeq);
        c.StackSeq += 100;
        c.Send(Ack);
        Assert.That(c.Stack.TcpTakeError(c.Socket), Is.Zero, "cleared by the ACK");
    }

    [Test]
    public void A_connection_that_times_out_after_a_host_unreachable_fails_with_ehostunreach_not_etimedout()
    {
        using var c = Establish(tweak: o => o with { TcpRetries = 3 });
        Assert.That(c.Stack.TcpSend(c.Socket, new byte[100]), Is.EqualTo(100));
        Expect(c.Received(), Ack | TcpFlags.Psh, length: 100);
        InjectIcmp(c, IcmpType.DestinationUnreachable, IcmpUnreachableCode.Host, c.StackSeq);
        Assert.That(c.Stack.TcpStateOf(c.Socket), Is.EqualTo(TcpState.Established));

        Run(c.Peer, 10_000 * Ms); // nobody answers the retransmissions
        Assert.That(c.Stack.TcpStateOf(c.Socket), Is.EqualTo(TcpState.Closed));
        Assert.That(c.Stack.TcpReceive(c.Socket, new byte[10]), Is.EqualTo(-(int)Errno.EHOSTUNREACH),
            "the error explains the timeout (Linux's tcp_write_err)");
    }

    private static (RawPeer Peer, int Socket, Seg Syn) Connecting()
    {
        var peer = Listening(out _);
        int s = peer.Stack.TcpOpen();
        Assert.That(peer.Stack.TcpConnect(s, new Ipv4Endpoint(Ipv4Address.Parse("10.2.0.1"), PeerPort)), Is.EqualTo(-(int)Errno.EINPROGRESS));
        var syn = Expect(TcpSegments(ReceivedAnsweringArp(peer, Ms)), TcpFlags.Syn);
        return (peer, s, syn);
    }

    [TestCase(3, 3, Errno.ECONNREFUSED, TestName = "A connect quoted by port unreachable fails with ECONNREFUSED")]
    [TestCase(3, 1, Errno.EHOSTUNREACH, TestName = "A connect quoted by host unreachable fails with EHOSTUNREACH")]
    [TestCase(3, 0, Errno.ENETUNREACH, TestName = "A connect quoted by network unreachable fails with ENETUNREACH")]
    [TestCase(3, 13, Errno.EHOSTUNREACH, TestName = "A connect quoted by communication prohibited fails with EHOSTUNREACH")]
    [TestCase(11, 0, Errno.EHOSTUNREACH, TestName = "A connect quoted by time exceeded fails with EHOSTUNREACH")]
    [TestCase(12, 0, Errno.EPROTO, TestName = "A connect quoted by parameter problem fails with EPROTO")]
    public void A_connect_quoted_by_an_error_fails_with_linuxs_errno(int icmpType, int icmpCode, Errno errno)
    {
        byte type = (byte)icmpType, code = (byte)icmpCode;
        var (peer, s, syn) = Connecting();
        using var _ = peer;
        peer.Inject(IcmpErrorFrame(peer, type, code, syn.SrcPort, PeerPort, syn.Seq + 2));
        Assert.That(peer.Stack.TcpStateOf(s), Is.EqualTo(TcpState.SynSent), "a sequence never sent: ignored");
        Assert.That(peer.Stack.Counters.TcpExtOutOfWindowIcmps, Is.EqualTo(1));

        peer.Inject(IcmpErrorFrame(peer, type, code, syn.SrcPort, PeerPort, syn.Seq));
        Assert.That(peer.Stack.TcpStateOf(s), Is.EqualTo(TcpState.Closed));
        Assert.That(peer.Stack.TcpTakeError(s), Is.EqualTo((int)errno), "connect's error (SO_ERROR)");
        Assert.That(peer.Stack.Counters.TcpAttemptFails, Is.EqualTo(1));
        Assert.That(TcpSegments(peer.Received(10_000 * Ms)), Is.Empty, "no SYN retransmitted");
    }

    [Test]
    public void A_half_open_child_is_dropped_by_host_unreachable_quoting_its_syn_ack_and_kept_by_port_unreachable()
    {
        using var peer = Listening(out int l);
        peer.Inject(peer.TcpFrame(PeerPort, Port, PeerIsn, 0, TcpFlags.Syn, 1000, SynOptions(1460, true, null, 7)));
        var synAck = Expect(TcpSegments(peer.Received()), TcpFlags.Syn | Ack);
        int rows = peer.Stack.TcpConnections.Open;

        peer.Inject(IcmpErrorFrame(peer, IcmpType.DestinationUnreachable, IcmpUnreachableCode.Host, Port, PeerPort, synAck.Seq + 1));
        Assert.That(peer.Stack.Counters.TcpExtOutOfWindowIcmps, Is.EqualTo(1), "only the SYN-ACK's own sequence number");
        peer.Inject(IcmpErrorFrame(peer, IcmpType.DestinationUnreachable, IcmpUnreachableCode.Port, Port, PeerPort, synAck.Seq));
        Assert.That(peer.Stack.TcpConnections.Open, Is.EqualTo(rows), "port unreachable: kept (Linux's tcp_req_err)");
        peer.Inject(IcmpErrorFrame(peer, IcmpType.DestinationUnreachable, IcmpUnreachableCode.Host, Port, PeerPort, synAck.Seq));
        Assert.That(peer.Stack.TcpConnections.Open, Is.EqualTo(rows - 1), "host unreachable: dropped");
        Assert.That(peer.Stack.Counters.TcpExtListenDrops, Is.EqualTo(1));
        Assert.That(peer.Stack.TcpAccept(l, out _), Is.EqualTo(-(int)Errno.EAGAIN));
    }

    [Test]
    public void Fragmentation_needed_resends_the_flight_at_once_in_pieces_that_fit_never_below_552_and_never_up()
    {
        using var c = Establish();
        Assert.That(c.Stack.TcpSend(c.Socket, new byte[2 * 1448]), Is.EqualTo(2 * 1448));
        var first = c.Received();
        Assert.That(first.Select(s => s.Payload.Length), Is.EqualTo(new[] { 1448, 1448 }));

        var resent = InjectIcmp(c, IcmpType.DestinationUnreachable, IcmpUnreachableCode.FragmentationNeeded, c.StackSeq, mtu: 1000);
        int mss = 1000 - 40 - 12;
        Assert.That(resent.Select(s => s.Payload.Length), Is.EqualTo(new[] { mss, 1448 - mss, mss, 1448 - mss }),
            "both segments again at once, each in pieces of the new MSS (tcp_simple_retransmit)");
        Assert.That(resent[0].Seq, Is.EqualTo(c.StackSeq));
        Assert.That(c.Stack.Counters.TcpPathMtuReductions, Is.EqualTo(1));

        InjectIcmp(c, IcmpType.DestinationUnreachable, IcmpUnreachableCode.FragmentationNeeded, c.StackSeq, mtu: 1400);
        Assert.That(c.Stack.Counters.TcpPathMtuReductions, Is.EqualTo(1), "a larger MTU is ignored (RFC 1191 §3)");
        var tiny = InjectIcmp(c, IcmpType.DestinationUnreachable, IcmpUnreachableCode.FragmentationNeeded, c.StackSeq, mtu: 68);
        Assert.That(tiny.Select(s => s.Payload.Length).Max(), Is.EqualTo(552 - 40 - 12), "the floor, Linux's min_pmtu 552");
        Assert.That(c.Stack.TcpTakeError(c.Socket), Is.Zero, "no error: Linux locks the path MTU at the floor instead");
        Assert.That(c.Stack.TcpStateOf(c.Socket), Is.EqualTo(TcpState.Established));

        c.StackSeq += 2 * 1448;
        c.Send(Ack);
        Assert.That(c.Stack.TcpSend(c.Socket, new byte[1000]), Is.EqualTo(1000));
        Assert.That(c.Received().Select(s => s.Payload.Length), Is.EqualTo(new[] { 500, 500 }), "new data fits the path too");
    }
}
