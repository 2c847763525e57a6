using Onload.Stack;
using Onload.Stack.Tcp;
using Onload.Stack.Wire;
using Onload.Tests.Wire;
using static Onload.Tests.Tcp.TcpScript;

namespace Onload.Tests.Tcp;

/// <summary>
/// Packet-level scripts against one stack: hand-built segments go in from a raw peer (PacketDotNet computes their
/// checksums), and the exact segments the stack answers are checked — flags, sequence numbers, window, options.
/// </summary>
[TestFixture]
public class TcpScriptTests
{
    private static int ExpectedWindowShift(int buffer)
    {
        int s = 0;
        while ((buffer >> s) > ushort.MaxValue && s < 14)
            s++;
        return s;
    }

    // 1. Passive open.

    [Test]
    public void Passive_open_answers_a_syn_with_a_syn_ack_carrying_the_negotiated_options()
    {
        using var peer = Listening(out int l);
        peer.Inject(peer.TcpFrame(PeerPort, Port, PeerIsn, 0, TcpFlags.Syn, 64240, SynOptions(1460, true, (12345, 0), 7)));
        var synAck = Expect(TcpSegments(peer.Received()), TcpFlags.Syn | Ack, ack: PeerIsn + 1, window: 65535);
        Assert.That(synAck.SrcPort, Is.EqualTo(Port));
        Assert.That(synAck.DstPort, Is.EqualTo(PeerPort));
        Assert.That(synAck.Mss, Is.EqualTo(1460), "MSS = MTU 1500 - 40");
        Assert.That(synAck.WScale, Is.EqualTo(ExpectedWindowShift(peer.Stack.TcpConnections.ReceiveBufferSize)), "window scale");
        Assert.That(synAck.SackOk, Is.True, "SACK-permitted");
        Assert.That(synAck.TsEcr, Is.EqualTo(12345u), "TSecr echoes the SYN's TSval");
        Assert.That(synAck.TsVal, Is.Not.Null);
        Assert.That(synAck.Payload, Is.Empty);
        Assert.That(peer.Stack.TcpAccept(l, out _), Is.EqualTo(-(int)Errno.EAGAIN), "not before the final ACK");

        peer.Inject(peer.TcpFrame(PeerPort, Port, PeerIsn + 1, synAck.Seq + 1, Ack, 1000, TsOption(12346, synAck.TsVal!.Value)));
        Assert.That(TcpSegments(peer.Received()), Is.Empty);
        int c = peer.Stack.TcpAccept(l, out var remote);
        Assert.That(c, Is.GreaterThanOrEqualTo(0));
        Assert.That(remote.Port, Is.EqualTo(PeerPort));
        Assert.That(peer.Stack.TcpStateOf(c), Is.EqualTo(TcpState.Established));
        Assert.That(peer.Stack.Counters.TcpPassiveOpens, Is.EqualTo(1));
    }

    [Test]
    public void A_syn_ack_offers_only_the_options_the_syn_offered()
    {
        using var peer = Listening(out _);
        peer.Inject(peer.TcpFrame(PeerPort, Port, PeerIsn, 0, TcpFlags.Syn, 8192, SynOptions(536, false, null, -1)));
        var synAck = Expect(TcpSegments(peer.Received()), TcpFlags.Syn | Ack, ack: PeerIsn + 1);
        Assert.That(synAck.Mss, Is.EqualTo(1460));
        Assert.That(synAck.WScale, Is.EqualTo(-1));
        Assert.That(synAck.SackOk, Is.False);
        Assert.That(synAck.TsVal, Is.Null);
    }

    /// <summary>RFC 9293 §3.10.7.2 and Linux: a listener drops what is neither SYN nor ACK, and a SYN with FIN
    /// (found by the differential decode test: the stack had answered SYN-FIN with a SYN-ACK).</summary>
    [TestCase(TcpFlags.Syn | TcpFlags.Fin)]
    [TestCase(TcpFlags.Fin)]
    [TestCase(TcpFlags.Psh)]
    public void A_listener_drops_a_segment_that_is_neither_syn_nor_ack_and_a_syn_with_fin(TcpFlags flags)
    {
        using var peer = Listening(out int l);
        peer.Inject(peer.TcpFrame(PeerPort, Port, PeerIsn, 0, flags, 8192, SynOptions(1460, false, null, -1)));
        Assert.That(TcpSegments(peer.Received()), Is.Empty, "no answer");
        Assert.That(peer.Stack.Counters.Drop(DropReason.TcpListenBadSegment), Is.EqualTo(1));
        Assert.That(peer.Stack.TcpAccept(l, out _), Is.EqualTo(-(int)Errno.EAGAIN), "no connection");
    }

    [Test]
    public void Closing_a_listener_resets_the_connections_in_its_syn_and_accept_queues_and_frees_their_rows()
    {
        using var peer = Listening(out int l);
        int open = peer.Stack.TcpConnections.Open;
        uint[] isn = new uint[3];
        for (int i = 0; i < 3; i++)
        {
            peer.Inject(peer.TcpFrame((ushort)(PeerPort + i), Port, PeerIsn, 0, TcpFlags.Syn, 8192, SynOptions(1460, false, null, -1)));
            isn[i] = Expect(TcpSegments(peer.Received()), TcpFlags.Syn | Ack, ack: PeerIsn + 1).Seq;
        }
        // The first completes its handshake (accept queue); the other two stay in SYN-RECEIVED (SYN queue).
        peer.Inject(peer.TcpFrame(PeerPort, Port, PeerIsn + 1, isn[0] + 1, Ack, 8192, []));
        Assert.That(TcpSegments(peer.Received()), Is.Empty);
        Assert.That(peer.Stack.TcpConnections.Open, Is.EqualTo(open + 3));

        Assert.That(peer.Stack.TcpClose(l), Is.Zero);
        var resets = TcpSegments(peer.Received());
        Assert.That(resets.Select(s => s.DstPort), Is.EquivalentTo(new[] { PeerPort, (ushort)(PeerPort + 1), (ushort)(PeerPort + 2) }));
        Assert.That(resets.Select(s => s.Flags), Is.All.EqualTo(TcpFlags.Rst | Ack));
        Assert.That(resets.Select(s => s.Seq), Is.EquivalentTo(isn.Select(x => x + 1)));
        Assert.That(peer.Stack.TcpConnections.Open, Is.EqualTo(open - 1), "the listener and its three children are gone");
        peer.Inject(peer.TcpFrame((ushort)(PeerPort + 3), Port, PeerIsn, 0, TcpFlags.Syn, 8192, SynOptions(1460, false, null, -1)));
        Expect(TcpSegments(peer.Received()), TcpFlags.Rst | Ack, seq: 0, ack: PeerIsn + 1, why: "the port is closed");
    }

    // 2. Closed ports.

    [Test]
    public void A_syn_to_a_closed_port_gets_rst_ack_with_seq_zero()
    {
        using var peer = Listening(out _);
        peer.Inject(peer.TcpFrame(PeerPort, 81, 5000, 0, TcpFlags.Syn, 64240, SynOptions(1460, true, (1, 0), 7)));
        var rst = Expect(TcpSegments(peer.Received()), TcpFlags.Rst | Ack, seq: 0, ack: 5001, window: 0);
        Assert.That(rst.OptionBytes, Is.Zero);
        Assert.That(rst.SrcPort, Is.EqualTo(81));
    }

    [Test]
    public void A_bare_ack_to_a_closed_port_gets_a_rst_with_seq_equal_to_that_ack()
    {
        using var peer = Listening(out _);
        peer.Inject(peer.TcpFrame(PeerPort, 81, 7777, 123456789, Ack, 1000));
        Expect(TcpSegments(peer.Received()), TcpFlags.Rst, seq: 123456789, ack: 0);
        peer.Inject(peer.TcpFrame(PeerPort, 81, 7777, 0, TcpFlags.Rst, 0));
        Assert.That(TcpSegments(peer.Received()), Is.Empty, "a RST is never answered");
    }

    // 3. RFC 5961.

    [Test]
    public void An_in_window_rst_not_at_rcv_nxt_gets_a_challenge_ack()
    {
        using var c = Establish();
        long before = c.Stack.Counters.TcpExtTCPChallengeACK;
        var ack = Expect(c.Send(TcpFlags.Rst, seq: c.PeerSeq + 10, ack: 0, options: []), Ack, seq: c.StackSeq, ack: c.PeerSeq);
        Assert.That(ack.Payload, Is.Empty);
        Assert.That(c.Stack.Counters.TcpExtTCPChallengeACK, Is.EqualTo(before + 1));
        Assert.That(c.Stack.TcpStateOf(c.Socket), Is.EqualTo(TcpState.Established));
        Assert.That(c.Stack.TcpReceive(c.Socket, new byte[10]), Is.EqualTo(-(int)Errno.EAGAIN));
    }

    [Test]
    public void A_rst_at_rcv_nxt_resets_the_connection()
    {
        using var c = Establish();
        Assert.That(c.Send(TcpFlags.Rst, seq: c.PeerSeq, ack: 0, options: []), Is.Empty);
        Assert.That(c.Stack.TcpReceive(c.Socket, new byte[10]), Is.EqualTo(-104), "ECONNRESET");
        Assert.That(c.Stack.TcpStateOf(c.Socket), Is.EqualTo(TcpState.Closed));
        Assert.That(c.Stack.Counters.TcpEstabResets, Is.EqualTo(1));
    }

    [Test]
    public void A_syn_on_an_established_connection_gets_a_challenge_ack()
    {
        using var c = Establish();
        long before = c.Stack.Counters.TcpExtTCPChallengeACK;
        Expect(c.Send(TcpFlags.Syn, seq: c.PeerSeq + 100, ack: 0, options: SynOptions(1460, true, (c.PeerTs + 5, 0), 7)),
            Ack, seq: c.StackSeq, ack: c.PeerSeq);
        Assert.That(c.Stack.Counters.TcpExtTCPChallengeACK, Is.EqualTo(before + 1));
        Assert.That(c.Stack.TcpStateOf(c.Socket), Is.EqualTo(TcpState.Established));
    }

    [Test]
    public void An_ack_at_the_right_edge_of_a_full_window_is_taken_while_a_hole_is_open()
    {
        // The peer filled the stack's window except for one lost segment: its ACKs now carry SEQ = RCV.NXT +
        // RCV.WND. Linux takes them (tcp_sequence includes the right edge); dropping them starved the stack's
        // own sending of acknowledgements until an RTO.
        using var c = Establish(timestamps: false, tweak: o => o with { TcpReceiveBufferBytes = 4096 });
        Assert.That(c.Stack.TcpSetNoDelay(c.Socket, true), Is.Zero);
        Assert.That(c.Stack.TcpSend(c.Socket, new byte[100]), Is.EqualTo(100));
        Expect(c.Received(), Ack | TcpFlags.Psh, seq: c.StackSeq, length: 100);
        foreach (uint at in (uint[])[1000, 2000, 3000])
            Expect(c.Send(Ack, seq: c.PeerSeq + at, payload: new byte[at == 3000 ? 1096 : 1000]), Ack, ack: c.PeerSeq,
                why: "out of order: a duplicate ACK");
        Assert.That(c.Stack.Counters.Drop(DropReason.TcpOutOfWindow), Is.Zero);

        c.Send(Ack, seq: c.PeerSeq + 4096, ack: c.StackSeq + 100);
        Assert.That(c.Stack.TcpConnections[c.Socket].SndUna, Is.EqualTo(c.StackSeq + 100), "the ACK was taken");
        Assert.That(c.Stack.Counters.Drop(DropReason.TcpOutOfWindow), Is.Zero);
    }

    // 4. PAWS.

    [Test]
    public void Paws_drops_a_segment_with_an_old_timestamp_and_sends_a_duplicate_ack()
    {
        using var c = Establish();
        Assert.That(c.Send(Ack | TcpFlags.Psh, payload: "hello"u8.ToArray()), Is.Empty, "delayed ACK");
        c.PeerSeq += 5;
        var dup = Expect(c.Send(Ack | TcpFlags.Psh, payload: "world"u8.ToArray(), options: TsOption(50, c.StackTs)),
            Ack, seq: c.StackSeq, ack: c.PeerSeq, length: 0, why: "PAWS: a duplicate ACK");
        Assert.That(dup.TsEcr, Is.EqualTo(c.PeerTs), "TS.Recent stays at the newest timestamp");
        Assert.That(c.Stack.Counters.TcpExtPAWSEstab, Is.EqualTo(1));
        var buf = new byte[64];
        Assert.That(c.Stack.TcpReceive(c.Socket, buf), Is.EqualTo(5));
        Assert.That(buf.AsSpan(0, 5).SequenceEqual("hello"u8), Is.True);
        Assert.That(c.Stack.TcpReceive(c.Socket, buf), Is.EqualTo(-(int)Errno.EAGAIN), "the old segment was not delivered");
    }

    // 5. Retransmission timing.

    [TestCase(false, 200L, TestName = "Retransmissions back off from the 200 ms minimum RTO after the handshake's RTT sample without timestamps")]
    [TestCase(true, 200L, TestName = "Retransmissions back off from the 200 ms minimum RTO after an RTT sample")]
    public void Retransmissions_back_off_exponentially(bool timestamps, long rtoMs)
    {
        using var c = Establish(timestamps, sack: false); // with SACK a tail loss probe goes first, at the RTO's time (RFC 8985 §7.2)
        c.Stack.Poll();
        long t0 = c.Peer.Clock.NowNanoseconds;
        var data = Enumerable.Range(0, 100).Select(i => (byte)i).ToArray();
        Assert.That(c.Stack.TcpSend(c.Socket, data), Is.EqualTo(100));
        Expect(TcpSegments(c.Peer.Received(advanceNs: 1_000)), Ack | TcpFlags.Psh, seq: c.StackSeq, ack: c.PeerSeq, length: 100);
        var log = Run(c.Peer, (rtoMs * 7 + 50) * Ms);
        Assert.That(log, Has.Count.EqualTo(3), string.Join(", ", log.Select(e => (e.At - t0) / Ms)));
        long expected = t0;
        for (int i = 0; i < 3; i++)
        {
            expected += (rtoMs << i) * Ms;
            var (at, s) = log[i];
            Assert.That(s.Seq, Is.EqualTo(c.StackSeq), "resends from SND.UNA");
            Assert.That(s.Payload.SequenceEqual(data), Is.True);
            Assert.That(at, Is.InRange(expected, expected + 3 * Ms), $"retransmission {i + 1} at {(at - t0) / Ms} ms");
            expected = at;
        }
        Assert.That(c.Stack.Counters.TcpExtTCPTimeouts, Is.EqualTo(3));
    }

    [Test]
    public void An_ack_covering_a_fin_sent_before_a_timeout_ends_it_without_a_second_fin()
    {
        // Data and FIN in flight; the timeout resends only the first segment (cwnd 1 MSS); then the peer's ACK
        // of everything, FIN included, arrives. Sending the FIN again would put it one past the first, where the
        // peer (which acknowledged the first) never accepts it: LAST_ACK would retransmit it forever. (No SACK, so
        // no tail loss probe goes first.)
        using var c = Establish(timestamps: false, sack: false);
        c.Stack.Poll();
        var data = Enumerable.Range(0, 3000).Select(i => (byte)i).ToArray();
        Assert.That(c.Stack.TcpSetNoDelay(c.Socket, true), Is.Zero);
        Assert.That(c.Stack.TcpSend(c.Socket, data), Is.EqualTo(data.Length));
        Assert.That(c.Stack.TcpShutdown(c.Socket, read: false, write: true), Is.Zero);
        var sent = TcpSegments(c.Peer.Received(advanceNs: 1_000));
        Assert.That(sent[^1].Flags & TcpFlags.Fin, Is.EqualTo(TcpFlags.Fin), "the FIN follows the data");
        var log = Run(c.Peer, 210 * Ms);
        Assert.That(log, Has.Count.EqualTo(1), "one segment resent after the 200 ms RTO (the handshake measured the RTT)");
        Assert.That(log[0].Seg.Seq, Is.EqualTo(c.StackSeq));
        Assert.That(log[0].Seg.Flags & TcpFlags.Fin, Is.EqualTo(TcpFlags.None), "the first segment, without the FIN");

        var after = c.Send(Ack, ack: c.StackSeq + (uint)data.Length + 1);
        Assert.That(after.Where(s => (s.Flags & TcpFlags.Fin) != 0), Is.Empty, "no second FIN");
        Assert.That(c.Stack.TcpStateOf(c.Socket), Is.EqualTo(TcpState.FinWait2));
    }

    // 6. Fast retransmit.

    [Test]
    public void Three_duplicate_acks_trigger_a_fast_retransmit_before_any_timeout()
    {
        using var c = Establish(timestamps: false, sack: false); // NewReno's path; with SACK, RACK-TLP acts first
        Assert.That(c.Stack.TcpSetNoDelay(c.Socket, true), Is.Zero);
        const int mss = 1460;
        var data = Enumerable.Range(0, 5 * mss).Select(i => (byte)(i * 13)).ToArray();
        c.Stack.Poll();
        Assert.That(c.Stack.TcpSend(c.Socket, data), Is.EqualTo(data.Length));
        var sent = TcpSegments(c.Peer.Received());
        Assert.That(sent.Select(s => s.Seq), Is.EqualTo(Enumerable.Range(0, 5).Select(i => c.StackSeq + (uint)(i * mss))));
        Assert.That(sent.All(s => s.Payload.Length == mss), Is.True);

        uint second = c.StackSeq + mss;
        Assert.That(c.Send(Ack, ack: second), Is.Empty, "a new ACK with nothing more to send");
        Assert.That(c.Send(Ack, ack: second), Is.Empty, "first duplicate");
        Assert.That(c.Send(Ack, ack: second), Is.Empty, "second duplicate");
        var re = Expect(c.Send(Ack, ack: second), Ack, seq: second, ack: c.PeerSeq, length: mss, why: "third duplicate: fast retransmit");
        Assert.That(re.Payload.SequenceEqual(data.AsSpan(mss, mss).ToArray()), Is.True);
        Assert.That(c.Stack.Counters.TcpExtTCPFastRetrans, Is.EqualTo(1));
        Assert.That(c.Stack.Counters.TcpExtTCPTimeouts, Is.Zero);
    }

    // 7. Zero-window probes.

    [Test]
    public void A_zero_window_is_probed_with_backoff_and_data_flows_when_it_opens()
    {
        using var c = Establish(timestamps: false);
        Assert.That(c.Send(Ack, window: 0), Is.Empty);
        c.Stack.Poll();
        long t0 = c.Peer.Clock.NowNanoseconds;
        var data = Enumerable.Range(0, 300).Select(i => (byte)i).ToArray();
        Assert.That(c.Stack.TcpSend(c.Socket, data), Is.EqualTo(300));
        Assert.That(TcpSegments(c.Peer.Received(advanceNs: 1_000)), Is.Empty, "nothing goes into a zero window");

        var log = Run(c.Peer, 1_450 * Ms);
        Assert.That(log, Has.Count.EqualTo(3), string.Join(", ", log.Select(e => (e.At - t0) / Ms)));
        long expected = t0;
        for (int i = 0; i < 3; i++)
        {
            expected += (200L << i) * Ms; // the RTO after the handshake's RTT sample, doubling
            var (at, s) = log[i];
            Assert.That(s.Flags, Is.EqualTo(Ack));
            Assert.That(s.Seq, Is.EqualTo(c.StackSeq - 1), "probe: SND.UNA - 1");
            Assert.That(s.AckNo, Is.EqualTo(c.PeerSeq));
            Assert.That(s.Payload, Is.Empty);
            Assert.That(at, Is.InRange(expected, expected + 3 * Ms), $"probe {i + 1} at {(at - t0) / Ms} ms");
            expected = at;
        }

        var flow = c.Send(Ack, window: 1000);
        var seg = Expect(flow, Ack | TcpFlags.Psh, seq: c.StackSeq, ack: c.PeerSeq, length: 300, why: "the window opened");
        Assert.That(seg.Payload.SequenceEqual(data), Is.True);
    }

    [Test]
    public void A_peer_that_shrinks_its_window_gets_acks_it_can_accept_and_retransmissions_that_fit_it()
    {
        using var c = Establish(timestamps: false);
        Assert.That(c.Stack.TcpSetNoDelay(c.Socket, true), Is.Zero);
        const int mss = 1460;
        var data = Enumerable.Range(0, 4 * mss).Select(i => (byte)(i * 7)).ToArray();
        c.Stack.Poll();
        Assert.That(c.Stack.TcpSend(c.Socket, data), Is.EqualTo(data.Length));
        Assert.That(TcpSegments(c.Peer.Received()), Has.Count.EqualTo(4));

        // The peer's queue filled before it took any of it: it shrinks its window to one unit of its scale (128 bytes)
        // and sends data of its own. A Linux peer drops a segment that starts beyond its window unread, ACK and all,
        // so the stack's ACK must start at the window's edge, not at SND.NXT four segments on.
        const int edge = 128;
        var payload = new byte[100];
        var acks = c.Send(Ack | TcpFlags.Psh, payload: payload, window: 1);
        acks.AddRange(Run(c.Peer, 50 * Ms).Select(e => e.Seg)); // the delayed ACK
        Expect(acks, Ack, seq: c.StackSeq + edge, ack: c.PeerSeq + 100, why: "the ACK of the peer's data, inside its window");
        c.PeerSeq += 100;

        // The retransmission timeout (the 200 ms floor: the handshake gave the first RTT sample) resends only what
        // fits: the window's 128 bytes, not the first segment's 1460.
        var log = Run(c.Peer, 300 * Ms);
        var re = Expect(log.Select(e => e.Seg).ToList(), Ack, seq: c.StackSeq, ack: c.PeerSeq, length: edge, why: "the retransmission, cut to the window");
        Assert.That(re.Payload.SequenceEqual(data.AsSpan(0, edge).ToArray()), Is.True);

        // The peer takes the piece and opens its window: the rest of the first segment goes at once, not a
        // retransmission timeout later.
        var rest = c.Send(Ack, ack: c.StackSeq + edge);
        Assert.That(rest, Is.Not.Empty, "the rest of the cut segment");
        Assert.That(rest[0].Seq, Is.EqualTo(c.StackSeq + edge));
        Assert.That(rest[0].Payload.SequenceEqual(data.AsSpan(edge, mss - edge).ToArray()), Is.True, "the rest of the first segment");
    }

    // 8. TIME_WAIT.

    [Test]
    public void Active_close_ends_in_time_wait_which_reacks_a_fin_and_frees_the_row_after_2msl()
    {
        const long msl = 1_000 * Ms;
        using var c = Establish(timestamps: false, tweak: o => o with { TcpMslNs = msl });
        int open = c.Stack.TcpConnections.Open;
        c.Stack.Poll();
        Assert.That(c.Stack.TcpClose(c.Socket), Is.Zero);
        Expect(TcpSegments(c.Peer.Received()), Ack | TcpFlags.Fin, seq: c.StackSeq, ack: c.PeerSeq);
        Assert.That(c.Send(Ack, ack: c.StackSeq + 1), Is.Empty);
        Assert.That(c.Stack.TcpStateOf(c.Socket), Is.EqualTo(TcpState.FinWait2));
        c.StackSeq++;

        Expect(c.Send(Ack | TcpFlags.Fin), Ack, seq: c.StackSeq, ack: c.PeerSeq + 1, why: "the peer's FIN is acknowledged");
        long enteredAt = c.Peer.Clock.NowNanoseconds;
        Assert.That(c.Stack.TcpStateOf(c.Socket), Is.EqualTo(TcpState.TimeWait));

        Expect(c.Send(Ack | TcpFlags.Fin), Ack, seq: c.StackSeq, ack: c.PeerSeq + 1, why: "a retransmitted FIN is acknowledged again");
        Assert.That(c.Stack.TcpStateOf(c.Socket), Is.EqualTo(TcpState.TimeWait));

        c.Peer.Clock.AdvanceTo(enteredAt + 2 * msl - 10 * Ms);
        c.Stack.Poll();
        Assert.That(c.Stack.TcpConnections.Open, Is.EqualTo(open), "still in TIME_WAIT before 2MSL");
        c.Peer.Clock.Advance(20 * Ms);
        c.Stack.Poll();
        Assert.That(c.Stack.TcpConnections.Open, Is.EqualTo(open - 1), "freed after 2MSL");
        Assert.That(TcpSegments(c.Peer.Received()), Is.Empty);
    }

    [TestCase(true, TestName = "A_syn_in_time_wait_with_a_newer_sequence_number_and_the_same_timestamp_opens_a_new_connection")]
    [TestCase(false, TestName = "A_syn_in_time_wait_with_an_older_sequence_number_and_the_same_timestamp_is_refused")]
    public void Time_wait_takes_a_new_syn_as_linux_does(bool newerSequence)
    {
        // A client reusing its port within the millisecond its last connection ended sends the same timestamp: Linux
        // (tcp_timewait_state_process) opens the new connection if PAWS lets the SYN by and its ISN is beyond RCV.NXT.
        using var c = Establish(tweak: o => o with { TcpMslNs = 60_000 * Ms });
        Assert.That(c.Stack.TcpClose(c.Socket), Is.Zero);
        Expect(TcpSegments(c.Peer.Received()), Ack | TcpFlags.Fin, seq: c.StackSeq, ack: c.PeerSeq);
        c.StackSeq++;
        Expect(c.Send(Ack | TcpFlags.Fin, ack: c.StackSeq), Ack, seq: c.StackSeq, ack: c.PeerSeq + 1);
        Assert.That(c.Stack.TcpStateOf(c.Socket), Is.EqualTo(TcpState.TimeWait));

        uint isn = newerSequence ? c.PeerSeq + 100_000 : c.PeerSeq - 100_000;
        var answer = c.Send(TcpFlags.Syn, seq: isn, ack: 0, options: SynOptions(1460, true, (c.PeerTs, 0), 7));
        if (newerSequence)
            Expect(answer, TcpFlags.Syn | Ack, ack: isn + 1, why: "a new incarnation of the four-tuple");
        else
        {
            Assert.That(answer, Has.None.Matches<Seg>(s => (s.Flags & TcpFlags.Syn) != 0), "the SYN is not taken");
            Assert.That(c.Stack.TcpStateOf(c.Socket), Is.EqualTo(TcpState.TimeWait));
        }
    }

    [TestCase(true, TestName = "A_full_table_ends_the_oldest_closed_time_wait_early_to_answer_a_new_syn")]
    [TestCase(false, TestName = "A_full_table_keeps_a_time_wait_the_application_still_holds_and_drops_the_syn")]
    public void A_full_table_makes_room_from_time_wait(bool closed)
    {
        // A server that closes first leaves a TIME_WAIT per connection for 2MSL: at thousands of connections a
        // second they would fill the table and refuse every SYN. Two rows: the listener and one connection.
        using var c = Establish(timestamps: false, tweak: o => o with { TcpConnections = 2, TcpMslNs = 60_000 * Ms });
        if (closed)
            Assert.That(c.Stack.TcpClose(c.Socket), Is.Zero);
        else
            Assert.That(c.Stack.TcpShutdown(c.Socket, read: false, write: true), Is.Zero);
        Expect(TcpSegments(c.Peer.Received()), Ack | TcpFlags.Fin, seq: c.StackSeq, ack: c.PeerSeq);
        c.StackSeq++;
        Expect(c.Send(Ack | TcpFlags.Fin, ack: c.StackSeq), Ack, seq: c.StackSeq, ack: c.PeerSeq + 1);
        Assert.That(c.Stack.TcpConnections.Open, Is.EqualTo(2), "the listener and the TIME_WAIT fill the table");

        const ushort otherPort = PeerPort + 1;
        c.Peer.Inject(c.Peer.TcpFrame(otherPort, Port, 5000, 0, TcpFlags.Syn, 1000, SynOptions(1460, true, null, 7), null));
        var answer = TcpSegments(ReceivedAnsweringArp(c.Peer, Ms));
        if (closed)
        {
            var synAck = Expect(answer, TcpFlags.Syn | Ack, ack: 5001, why: "the new SYN is answered");
            Assert.That(synAck.DstPort, Is.EqualTo(otherPort));
            Assert.That(c.Stack.Counters.TcpExtTCPTimeWaitOverflow, Is.EqualTo(1));
            Assert.That(c.Stack.Counters.TcpExtListenOverflows, Is.Zero);
            Assert.That(c.Send(Ack | TcpFlags.Fin), Has.Some.Matches<Seg>(s => (s.Flags & TcpFlags.Rst) != 0),
                "the ended TIME_WAIT's tuple is unknown now: its peer's retransmitted FIN gets a reset");
        }
        else
        {
            Assert.That(answer, Is.Empty, "no room: the SYN is dropped, for the client to retransmit");
            Assert.That(c.Stack.TcpStateOf(c.Socket), Is.EqualTo(TcpState.TimeWait), "its descriptor still names it");
            Assert.That(c.Stack.Counters.TcpExtTCPTimeWaitOverflow, Is.Zero);
            Assert.That(c.Stack.Counters.TcpExtListenOverflows, Is.EqualTo(1));
        }
    }

    [Test]
    public void Time_wait_of_a_socket_not_yet_closed_ends_in_closed_and_the_row_stays_the_applications()
    {
        // Linux: the socket goes to CLOSE and its descriptor stays valid; freeing the row would let a new connection
        // take it, and the application's later close() would then close someone else's connection.
        const long msl = 1_000 * Ms;
        using var c = Establish(timestamps: false, tweak: o => o with { TcpMslNs = msl });
        int open = c.Stack.TcpConnections.Open;
        Assert.That(c.Stack.TcpShutdown(c.Socket, read: false, write: true), Is.Zero);
        Expect(TcpSegments(c.Peer.Received()), Ack | TcpFlags.Fin, seq: c.StackSeq, ack: c.PeerSeq);
        c.StackSeq++;
        Expect(c.Send(Ack | TcpFlags.Fin, ack: c.StackSeq), Ack, seq: c.StackSeq, ack: c.PeerSeq + 1, why: "the peer's FIN is acknowledged");
        Assert.That(c.Stack.TcpStateOf(c.Socket), Is.EqualTo(TcpState.TimeWait));

        c.Peer.Clock.Advance(2 * msl + 10 * Ms);
        c.Stack.Poll();
        Assert.That(c.Stack.TcpStateOf(c.Socket), Is.EqualTo(TcpState.Closed));
        Assert.That(c.Stack.TcpConnections.Open, Is.EqualTo(open), "the row is kept until close()");
        Assert.That(c.Stack.TcpReceive(c.Socket, new byte[16]), Is.Zero, "end of stream, as before");
        Assert.That(c.Stack.TcpClose(c.Socket), Is.Zero);
        Assert.That(c.Stack.TcpConnections.Open, Is.EqualTo(open - 1));
    }
}
