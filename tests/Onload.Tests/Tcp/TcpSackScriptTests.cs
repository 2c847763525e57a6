using Onload.Stack;
using Onload.Stack.Tcp;
using Onload.Stack.Wire;
using static Onload.Tests.Tcp.TcpScript;

namespace Onload.Tests.Tcp;

/// <summary>
/// Packet-level scripts for loss recovery and congestion control: SACK and D-SACK on both sides (RFC 2018, RFC 2883),
/// RACK-TLP (RFC 8985), and CUBIC (RFC 9438) against NewReno. The peer's ACKs are timed on the virtual clock, so each
/// retransmission is checked for what it resends and when.
/// </summary>
[TestFixture]
public class TcpSackScriptTests
{
    /// <summary>The scripted round trip: every ACK reaches the stack this long after what it acknowledges left.</summary>
    private const long Rtt = 40 * Ms;
    /// <summary>The payload of a full segment with timestamps: MSS 1460 less the 12 bytes of the option.</summary>
    private const int Mss = 1448;

    /// <summary>A SACK connection with timestamps whose handshake measured <see cref="Rtt"/> (SRTT = 40 ms, RTO at
    /// its 200 ms floor).</summary>
    private static Conn Sender(bool sack = true, long rtt = Rtt) => Establish(sack: sack, rttNs: rtt);

    /// <summary>Queues <paramref name="count"/> full segments of data and returns them as they reached the peer.</summary>
    private static (List<Seg> Segs, long SentAt, byte[] Data) SendSegments(Conn c, int count)
    {
        c.Stack.Poll();
        long sentAt = c.Peer.Clock.NowNanoseconds;
        var data = Enumerable.Range(0, count * Mss).Select(i => (byte)(i * 7 + i / Mss)).ToArray();
        Assert.That(c.Stack.TcpSend(c.Socket, data), Is.EqualTo(data.Length));
        var segs = c.Received();
        Assert.That(segs.Select(s => s.Seq), Is.EqualTo(Enumerable.Range(0, count).Select(i => c.StackSeq + (uint)(i * Mss))));
        Assert.That(segs.Select(s => s.Payload.Length), Is.All.EqualTo(Mss));
        c.StackSeq += (uint)data.Length;
        return (segs, sentAt, data);
    }

    /// <summary>The peer's ACK, timed to reach the stack at <paramref name="at"/> (the link takes 1 ms).</summary>
    private static List<Seg> AckAt(Conn c, long at, uint ack, params SackBlock[] sack)
    {
        c.Peer.Clock.AdvanceTo(at - Ms);
        return c.Send(Ack, ack: ack, sack: sack);
    }

    private static SackBlock Block(Seg from, Seg to) => new(from.Seq, to.Seq + (uint)to.Payload.Length);

    private static uint End(Seg s) => s.Seq + (uint)s.Payload.Length;

    private static ref TcpConnection Row(Conn c) => ref c.Stack.TcpConnections[c.Socket];

    // 1. SACK-based retransmission.

    [Test]
    public void Sack_blocks_leaving_two_holes_get_exactly_the_two_holes_retransmitted()
    {
        using var c = Sender();
        var (s, sentAt, data) = SendSegments(c, 8);
        // Segments 2 and 5 are lost; the peer ACKs each arrival as a receiver does: cumulatively, then with SACK
        // blocks, the newest first (RFC 2018 §4).
        long at = sentAt + Rtt;
        Assert.That(AckAt(c, at, s[1].Seq), Is.Empty);
        Assert.That(c.Send(Ack, ack: s[2].Seq), Is.Empty);
        Assert.That(c.Send(Ack, ack: s[2].Seq, sack: [Block(s[3], s[3])]), Is.Empty, "one segment SACKed: RACK waits for reordering");
        Assert.That(c.Send(Ack, ack: s[2].Seq, sack: [Block(s[3], s[4])]), Is.Empty);
        var resent = c.Send(Ack, ack: s[2].Seq, sack: [Block(s[6], s[6]), Block(s[3], s[4])]);
        // Three segments SACKed and no reordering seen: RACK's window is 0, both holes are lost (RFC 8985 §6.2).
        Assert.That(resent.Select(r => r.Seq), Is.EqualTo(new[] { s[2].Seq, s[5].Seq }), "exactly the holes, in order");
        Assert.That(resent[0].Payload, Is.EqualTo(data.AsSpan(2 * Mss, Mss).ToArray()));
        Assert.That(resent[1].Payload, Is.EqualTo(data.AsSpan(5 * Mss, Mss).ToArray()));
        Assert.That(c.Send(Ack, ack: s[2].Seq, sack: [Block(s[6], s[7]), Block(s[3], s[4])]), Is.Empty, "nothing SACKed is resent");

        Assert.That(c.Send(Ack, ack: s[5].Seq, sack: [Block(s[6], s[7])]), Is.Empty, "the first hole filled");
        Assert.That(c.Send(Ack, ack: End(s[7])), Is.Empty, "the second: all acknowledged");
        Assert.That(Run(c.Peer, 1_000 * Ms), Is.Empty, "no timer sends anything afterwards");
        Assert.That(Row(c).InRecovery, Is.False);
        var n = c.Stack.Counters;
        Assert.That(n.TcpExtTCPSackRecovery, Is.EqualTo(1));
        Assert.That(n.TcpExtTCPFastRetrans, Is.EqualTo(2));
        Assert.That(n.TcpRetransSegs, Is.EqualTo(2));
        Assert.That(n.TcpExtTCPTimeouts, Is.Zero);
        Assert.That(n.TcpExtTCPLossProbes, Is.Zero);
        Assert.That(n.TcpExtTCPSACKReorder, Is.Zero);
    }

    // 2. The receiver's SACK and D-SACK blocks.

    [Test]
    public void Out_of_order_data_is_reported_in_sack_blocks_newest_first_and_duplicates_in_a_leading_dsack_block()
    {
        using var c = Establish();
        uint b = c.PeerSeq;
        byte[] Piece(int i) => Enumerable.Range(i * 100, 100).Select(x => (byte)x).ToArray();
        SackBlock P(int from, int to) => new(b + (uint)(from * 100), b + (uint)(to * 100));
        List<Seg> Deliver(int i) => c.Send(Ack, seq: b + (uint)(i * 100), payload: Piece(i));

        // Pieces 1, 3, 5 and 7 arrive ahead of 0: each is ACKed at once, RCV.NXT unmoved.
        var ack = Expect(Deliver(1), Ack, ack: b, length: 0);
        Assert.That(ack.Sack, Is.EqualTo(new[] { P(1, 2) }));
        Assert.That(Expect(Deliver(3), Ack, ack: b).Sack, Is.EqualTo(new[] { P(3, 4), P(1, 2) }), "the newest first");
        Assert.That(Expect(Deliver(5), Ack, ack: b).Sack, Is.EqualTo(new[] { P(5, 6), P(3, 4), P(1, 2) }));
        Assert.That(Expect(Deliver(7), Ack, ack: b).Sack, Is.EqualTo(new[] { P(7, 8), P(5, 6), P(3, 4) }),
            "four ranges: the three newest fit beside the timestamps");
        Assert.That(c.Stack.Counters.TcpExtTCPOFOQueue, Is.EqualTo(4));

        // Piece 2 joins 1 and 3 into one range, which is now the newest.
        Assert.That(Expect(Deliver(2), Ack, ack: b).Sack, Is.EqualTo(new[] { P(1, 4), P(7, 8), P(5, 6) }));
        // Piece 0 fills the first hole: the ACK jumps past the range it reached.
        Assert.That(Expect(Deliver(0), Ack, ack: b + 400).Sack, Is.EqualTo(new[] { P(7, 8), P(5, 6) }));

        // A duplicate below RCV.NXT: a D-SACK block first (RFC 2883 §4), then the SACK blocks.
        Assert.That(Expect(Deliver(0), Ack, ack: b + 400).Sack, Is.EqualTo(new[] { P(0, 1), P(7, 8), P(5, 6) }));
        Assert.That(c.Stack.Counters.TcpExtTCPDSACKOldSent, Is.EqualTo(1));
        // A duplicate of out-of-order data: the D-SACK block, then the range holding it.
        Assert.That(Expect(Deliver(5), Ack, ack: b + 400).Sack, Is.EqualTo(new[] { P(5, 6), P(5, 6), P(7, 8) }));
        Assert.That(c.Stack.Counters.TcpExtTCPDSACKOfoSent, Is.EqualTo(1));
        Assert.That(Expect(Deliver(4), Ack, ack: b + 600).Sack, Is.EqualTo(new[] { P(7, 8) }), "a D-SACK is reported once");
        Assert.That(Expect(Deliver(6), Ack, ack: b + 800).Sack, Is.Empty, "no holes left: no SACK option");

        var buf = new byte[1000];
        Assert.That(c.Stack.TcpReceive(c.Socket, buf), Is.EqualTo(800));
        Assert.That(buf.AsSpan(0, 800).SequenceEqual(Enumerable.Range(0, 8).SelectMany(Piece).ToArray()), Is.True, "in order");
    }

    // 3 and 4. Tail loss probes, and a D-SACK for one that was not needed.

    [TestCase(2, 2 * Rtt + 2 * Ms, TestName = "A lost tail of two segments is probed 2·SRTT + 2 ms after the last ACK, before any RTO")]
    [TestCase(1, 200 * Ms, TestName = "A lone lost segment is probed when the RTO would fire, min(2·SRTT + 200 ms, RTO), not timed out")]
    public void A_lost_tail_is_probed_by_resending_the_last_segment(int lost, long probeAfter)
    {
        using var c = Sender();
        var (s, sentAt, data) = SendSegments(c, 4);
        int kept = 4 - lost;
        Assert.That(AckAt(c, sentAt + Rtt, s[kept].Seq), Is.Empty, $"the first {kept} arrive; the rest are lost");
        long ackedAt = sentAt + Rtt;

        var log = Run(c.Peer, probeAfter + 20 * Ms);
        Assert.That(log, Has.Count.EqualTo(1), string.Join(", ", log.Select(e => $"{e.Seg.Seq} at {(e.At - ackedAt) / Ms} ms")));
        var (at, probe) = log[0];
        Assert.That(probe.Seq, Is.EqualTo(s[3].Seq), "no new data to send: the last segment again");
        Assert.That(probe.Payload, Is.EqualTo(data.AsSpan(3 * Mss, Mss).ToArray()));
        Assert.That(at - ackedAt, Is.InRange(probeAfter, probeAfter + Ms), "when the probe left");
        Assert.That(c.Stack.Counters.TcpExtTCPLossProbes, Is.EqualTo(1));
        Assert.That(c.Stack.Counters.TcpExtTCPTimeouts, Is.Zero);
    }

    [Test]
    public void A_dsack_for_a_tail_loss_probe_marks_reordering_and_keeps_the_window()
    {
        using var c = Sender();
        var (s, sentAt, _) = SendSegments(c, 4);
        Assert.That(AckAt(c, sentAt + Rtt, s[2].Seq), Is.Empty);
        uint cwnd = Row(c).Cwnd;
        var log = Run(c.Peer, 2 * Rtt + 3 * Ms);
        Assert.That(log.Select(e => e.Seg.Seq), Is.EqualTo(new[] { s[3].Seq }), "the probe");
        Assert.That(Row(c).RackReorderingSeen, Is.False);

        // Segments 2 and 3 were only late: their ACK comes, then the probe's copy of 3 comes back as a D-SACK.
        Assert.That(c.Send(Ack, ack: End(s[3])), Is.Empty);
        Assert.That(c.Send(Ack, ack: End(s[3]), sack: [Block(s[3], s[3])]), Is.Empty);

        Assert.That(c.Stack.Counters.TcpExtTCPDSACKRecv, Is.EqualTo(1));
        Assert.That(Row(c).RackReorderingSeen, Is.True, "a spurious retransmission means the path reorders (RFC 8985 §6.2)");
        Assert.That(Row(c).RackReoWndMult, Is.EqualTo(2), "and the reordering window widens");
        Assert.That(Row(c).TlpOutstanding, Is.False, "the probe episode is over");
        Assert.That(c.Stack.Counters.TcpExtTCPLossProbeRecovery, Is.Zero, "the probe repaired nothing (RFC 8985 §7.4.2)");
        Assert.That(Row(c).Cwnd, Is.EqualTo(cwnd), "so the window stays");
        Assert.That(Row(c).InRecovery, Is.False);
    }

    [Test]
    public void A_dsack_for_a_rack_retransmission_marks_reordering_and_widens_the_reordering_window()
    {
        using var c = Sender();
        var (s, sentAt, _) = SendSegments(c, 4);
        var re = AckAt(c, sentAt + Rtt, s[0].Seq, Block(s[1], s[3]));
        Assert.That(re.Select(r => r.Seq), Is.EqualTo(new[] { s[0].Seq }), "three SACKed: RACK resends the hole at once");
        Assert.That(Row(c).InRecovery, Is.True);
        Assert.That(Row(c).RackReorderingSeen, Is.False);
        Assert.That(c.Send(Ack, ack: End(s[3])), Is.Empty, "the original arrived late");
        Assert.That(c.Send(Ack, ack: End(s[3]), sack: [Block(s[0], s[0])]), Is.Empty, "and the resend twice: D-SACK");
        Assert.That(c.Stack.Counters.TcpExtTCPDSACKRecv, Is.EqualTo(1));
        Assert.That(Row(c).RackReorderingSeen, Is.True);
        Assert.That(Row(c).RackReoWndMult, Is.EqualTo(2));

        // Now a segment SACKed ahead of a hole waits out twice minRTT/4 before the hole is called lost. (Recovery
        // ended with nothing in flight, so the window is two segments.)
        var (t, at, _) = SendSegments(c, 2);
        Assert.That(AckAt(c, at + Rtt, t[0].Seq, Block(t[1], t[1])), Is.Empty);
        var log = Run(c.Peer, 30 * Ms);
        Assert.That(log.Select(e => e.Seg.Seq), Is.EqualTo(new[] { t[0].Seq }));
        Assert.That(log[0].At - (at + Rtt), Is.InRange(2 * Rtt / 4, 2 * Rtt / 4 + Ms), "2 × minRTT/4 after the SACK");
    }

    // 5. RACK's time-based loss detection.

    [Test]
    public void Rack_marks_a_segment_lost_a_quarter_min_rtt_after_a_later_one_is_sacked_without_waiting_for_the_rto()
    {
        using var c = Sender();
        var (s, sentAt, data) = SendSegments(c, 4);
        long sackedAt = sentAt + Rtt;
        // Segment 2 arrives ahead of 0 and 1: reordering is not yet proven, so RACK allows minRTT/4 for it.
        Assert.That(AckAt(c, sackedAt, s[0].Seq, Block(s[2], s[2])), Is.Empty, "nothing retransmitted at once");

        // Both segments sent before the SACKed one are lost minRTT/4 after the SACK; proportional rate reduction
        // (RFC 6937 §3, PRR-SSRB) lets one go at once and the next with the next ACK.
        var log = Run(c.Peer, Rtt);
        Assert.That(log.Select(e => e.Seg.Seq), Is.EqualTo(new[] { s[0].Seq }), "the first sent before the SACKed one");
        Assert.That(log[0].At - sackedAt, Is.InRange(Rtt / 4, Rtt / 4 + Ms), "minRTT/4 after the SACK");
        Assert.That(log[0].Seg.Payload, Is.EqualTo(data.AsSpan(0, Mss).ToArray()));
        Assert.That(Row(c).LostCount, Is.EqualTo(1), "the second is marked lost too, waiting for the window");
        Expect(AckAt(c, log[0].At + Rtt, s[0].Seq, Block(s[2], s[3])), Ack, seq: s[1].Seq, length: Mss,
            why: "the next ACK lets the second go");
        var n = c.Stack.Counters;
        Assert.That(n.TcpExtTCPSackRecovery, Is.EqualTo(1));
        Assert.That(n.TcpExtTCPTimeouts, Is.Zero);
        Assert.That(n.TcpExtTCPLossProbes, Is.Zero);
    }

    // 6. Congestion avoidance after a loss.

    /// <summary>A long round trip, so that CUBIC's curve, not its Reno-friendly estimate, sets the window for a while.</summary>
    private const long LongRtt = 500 * Ms;

    /// <summary>One round of the ACK clock: when its ACK arrived, the segments it acknowledged, and the window
    /// (bytes) before and after it, with the SRTT it was computed with.</summary>
    private sealed record Round(long At, int Acked, uint CwndBefore, uint CwndAfter, long Srtt);

    /// <summary>
    /// A non-SACK connection sends ten segments and loses the first. The peer sends a duplicate ACK for each later
    /// arrival (limited transmit, then NewReno recovery from the third) and the full ACK when the resend fills the
    /// hole. From then on it acknowledges everything outstanding once per <see cref="LongRtt"/>, for
    /// <paramref name="rounds"/> rounds. Returns the window when the loss was found and each round.
    /// </summary>
    private static (uint WMax, uint Ssthresh, List<Round> Rounds) CongestionScript(string algorithm, int rounds)
    {
        using var c = Sender(sack: false, rtt: LongRtt);
        Assert.That(c.Stack.TcpSetCongestionControl(c.Socket, algorithm), Is.Zero);
        // The send buffer grows with cwnd from twice the initial window; the filler must wait behind the window
        // from the start, so the script fixes the buffer (SO_SNDBUF) rather than follow its growth.
        Assert.That(c.Stack.TcpSetSendBuffer(c.Socket, 256 * 1024), Is.Zero);
        var (s, sentAt, _) = SendSegments(c, 10);
        var filler = new byte[128 * Mss];
        Assert.That(c.Stack.TcpSend(c.Socket, filler), Is.EqualTo(filler.Length), "more waits behind the window");
        Assert.That(c.Received(), Is.Empty);
        uint wMax = Row(c).Cwnd;
        uint highest = End(s[^1]);

        // Duplicate ACKs for everything sent before recovery began (s0 aside).
        c.Peer.Clock.AdvanceTo(sentAt + LongRtt - Ms);
        uint hole = s[0].Seq, recoverAt = 0;
        for (uint seq = s[1].Seq; recoverAt == 0 || Seq.Lt(seq, recoverAt); seq += Mss)
        {
            foreach (var x in c.Send(Ack, ack: hole))
                highest = Seq.Max(highest, End(x));
            if (recoverAt == 0 && Row(c).InRecovery)
                recoverAt = Row(c).Recover + 1;
        }
        Assert.That(c.Stack.Counters.TcpExtTCPRenoRecovery, Is.EqualTo(1));
        uint ssthresh = Row(c).Ssthresh;
        long lastAckAt = c.Peer.Clock.NowNanoseconds + Ms;
        foreach (var x in c.Send(Ack, ack: recoverAt))
            highest = Seq.Max(highest, End(x));
        Assert.That(Row(c).InRecovery, Is.False, "the full ACK ends recovery");
        Assert.That(Row(c).Cwnd, Is.EqualTo(ssthresh), "with the window at ssthresh (the flight fills it)");

        var log = new List<Round>();
        for (int r = 0; r < rounds; r++)
        {
            c.Stack.TcpSend(c.Socket, filler); // keep data waiting: the window is always in use
            Assert.That(c.Received(), Is.Empty, "the window is full until the ACK");
            long at = lastAckAt + LongRtt;
            uint before = Row(c).Cwnd;
            int acked = (int)((highest - Row(c).SndUna) / Mss);
            foreach (var x in AckAt(c, at, highest))
                highest = Seq.Max(highest, End(x));
            log.Add(new Round(at, acked, before, Row(c).Cwnd, Row(c).Srtt));
            lastAckAt = at;
        }
        Assert.That(c.Stack.Counters.TcpExtTCPTimeouts, Is.Zero);
        return (wMax, ssthresh, log);
    }

    [Test]
    public void Cubic_grows_the_window_after_a_loss_as_rfc_9438_says()
    {
        var (wMaxBytes, ssthresh, rounds) = CongestionScript("cubic", rounds: 8);
        // RFC 9438 §4.1-§4.6, in segments: β = 0.7, C = 0.4, α = 3(1 - β)/(1 + β); the epoch starts with the first
        // ACK in congestion avoidance.
        const double c = 0.4, beta = 0.7, alpha = 3 * (1 - beta) / (1 + beta);
        double wMax = wMaxBytes / (double)Mss;
        Assert.That(ssthresh / (double)Mss, Is.EqualTo(beta * wMax).Within(0.001), "ssthresh = β·W_max (§4.6)");
        double k = Math.Cbrt((wMax - ssthresh / (double)Mss) / c);
        double WCubic(double t) => c * Math.Pow(t - k, 3) + wMax;
        double wEst = ssthresh / (double)Mss;
        long epoch = rounds[0].At;
        int cubicRounds = 0, renoFriendlyRounds = 0;
        foreach (var r in rounds)
        {
            double cwnd = r.CwndBefore / (double)Mss, t = (r.At - epoch) / 1e9, rtt = r.Srtt / 1e9;
            wEst += (wEst >= wMax ? 1 : alpha) * r.Acked / cwnd; // §4.3
            double expected;
            if (WCubic(t) < wEst)
            {
                expected = Math.Max(cwnd, wEst); // the Reno-friendly region (§4.3)
                renoFriendlyRounds++;
            }
            else
            {
                double target = Math.Clamp(WCubic(t + rtt), cwnd, 1.5 * cwnd); // §4.2
                expected = cwnd + (target - cwnd) / cwnd * r.Acked; // §4.4, §4.5: (target - cwnd)/cwnd per segment
                cubicRounds++;
            }
            Assert.That(r.CwndAfter / (double)Mss, Is.EqualTo(expected).Within(0.01),
                $"cwnd after the round at t = {t:F1} s (W_cubic {WCubic(t):F2}, W_est {wEst:F2})");
        }
        Assert.That(cubicRounds, Is.GreaterThanOrEqualTo(2), "the script reaches the cubic curve");
        Assert.That(renoFriendlyRounds, Is.GreaterThanOrEqualTo(1), "and the Reno-friendly region");
        Assert.That(rounds[^1].CwndAfter, Is.GreaterThan(wMaxBytes), "past W_max, the window probes for more");
    }

    [Test]
    public void Newreno_grows_the_window_by_about_one_segment_per_round_trip_after_a_loss()
    {
        var (wMax, ssthresh, rounds) = CongestionScript("reno", rounds: 8);
        Assert.That(ssthresh, Is.EqualTo(6u * Mss), "half the 12 segments in flight when the loss was found (RFC 5681 §3.1)");
        Assert.That(wMax, Is.EqualTo(10u * Mss));
        foreach (var r in rounds)
        {
            uint expected = r.CwndBefore + (uint)((ulong)Mss * (ulong)(r.Acked * Mss) / r.CwndBefore); // RFC 5681 §3.1 (3)
            Assert.That(r.CwndAfter, Is.EqualTo(expected));
            Assert.That(r.CwndAfter - r.CwndBefore, Is.InRange(Mss, Mss + Mss / 5), "about one segment per round trip");
        }
        Assert.That(rounds[^1].CwndAfter, Is.InRange(ssthresh + 8u * Mss, ssthresh + 9u * Mss));
    }

    [Test]
    public void Tcp_congestion_accepts_cubic_and_reno_and_rejects_an_unknown_name_with_enoent()
    {
        using var c = Establish();
        Assert.That(Row(c).Congestion, Is.EqualTo(CongestionControl.Cubic), "the default");
        Assert.That(c.Stack.TcpSetCongestionControl(c.Socket, "bbr"), Is.EqualTo(-(int)Errno.ENOENT));
        Assert.That(c.Stack.TcpSetCongestionControl(c.Socket, "Reno"), Is.EqualTo(-(int)Errno.ENOENT), "names are exact, as Linux's");
        Assert.That(Row(c).Congestion, Is.EqualTo(CongestionControl.Cubic), "unchanged");
        Assert.That(c.Stack.TcpSetCongestionControl(c.Socket, "reno"), Is.Zero);
        Assert.That(Row(c).Congestion, Is.EqualTo(CongestionControl.NewReno));
        Assert.That(c.Stack.TcpSetCongestionControl(c.Socket, "cubic"), Is.Zero);
        Assert.That(Row(c).Congestion, Is.EqualTo(CongestionControl.Cubic));
    }
}
