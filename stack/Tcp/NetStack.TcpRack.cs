using Onload.Stack.Tcp;
using Onload.Stack.Wire;

namespace Onload.Stack;

// RACK-TLP (RFC 8985): a segment is lost when one sent after it was delivered more than an RTT plus a reordering
// window ago; a tail loss probe makes the receiver speak up when the last segments of a flight vanish. Used when
// SACK is on, as Linux does (without SACK the stack falls back to NewReno's duplicate ACKs).
public sealed partial class NetStack
{
    /// <summary>RFC 8985 §7.2's WCDelAckT: the worst delayed ACK a lone segment may wait for.</summary>
    private const long TlpDelayedAckAllowanceNs = 200_000_000;
    /// <summary>Added to 2·SRTT when more than one segment is out, as Linux adds TCP_TIMEOUT_MIN, so that a
    /// sub-millisecond SRTT does not probe every delayed ACK.</summary>
    private const long TlpSlackNs = 2_000_000;

    /// <summary>RFC 8985 §6.2 steps 1–3: a segment was delivered (cumulatively or by SACK).</summary>
    private void RackDelivered(int c, in TcpSentSegment r)
    {
        ref var t = ref _tcp[c];
        long rtt = Math.Max(1, _now - r.SentAt);
        if ((r.Flags & SentFlags.Retransmitted) != 0)
        {
            // The ACK may be for the first copy: an RTT shorter than any seen cannot be the second's.
            if (rtt < t.RackMinRtt)
                return;
        }
        else
            t.RackMinRtt = t.RackMinRtt == 0 ? rtt : Math.Min(t.RackMinRtt, rtt);
        t.RackRtt = rtt;
        if (SentAfter(r.SentAt, r.End, t.RackXmitTs, t.RackEndSeq))
        {
            t.RackXmitTs = r.SentAt;
            t.RackEndSeq = r.End;
        }
        if (Seq.Lt(r.End, t.RackFack) && (r.Flags & SentFlags.Retransmitted) == 0)
        {
            t.RackReorderingSeen = true;
            Counters.TcpExtTCPSACKReorder++;
        }
        t.RackFack = Seq.Max(t.RackFack, r.End);
    }

    private static bool SentAfter(long t1, uint seq1, long t2, uint seq2) => t1 > t2 || t1 == t2 && Seq.Gt(seq1, seq2);

    /// <summary>RFC 8985 §6.2 step 4: no reordering window once three segments are SACKed or recovery began, unless
    /// reordering was seen; otherwise a quarter of the minimum RTT, widened by D-SACKs, at most SRTT.</summary>
    private long RackReorderWindow(int c)
    {
        ref var t = ref _tcp[c];
        if (!t.RackReorderingSeen && (t.InRecovery || t.SackedCount >= 3))
            return 0;
        return Math.Min(Math.Max(1, (int)t.RackReoWndMult) * t.RackMinRtt / 4, t.Srtt);
    }

    /// <summary>RFC 8985 §6.2 step 5: marks lost every segment sent before the most recently delivered one and
    /// outstanding longer than RACK.rtt + the reordering window; arms the reordering timer for the rest.</summary>
    private void RackDetectLoss(int c)
    {
        ref var t = ref _tcp[c];
        if (t.RackRtt == 0)
            return; // nothing delivered yet
        long reorderWindow = RackReorderWindow(c);
        long wait = long.MaxValue;
        for (int i = 0; i < t.SentCount; i++)
        {
            ref var r = ref SentSegment(c, i);
            if ((r.Flags & SentFlags.Sacked) != 0 || WaitsForRetransmit(r.Flags))
                continue;
            if (!SentAfter(t.RackXmitTs, t.RackEndSeq, r.SentAt, r.End))
                continue;
            long remaining = r.SentAt + t.RackRtt + reorderWindow - _now;
            if (remaining <= 0)
                MarkLost(c, ref r);
            else
                wait = Math.Min(wait, remaining);
        }
        if (wait != long.MaxValue)
        {
            ScheduleRetransmit(c, RetransmitKind.Reorder, _now + wait);
        }
    }

    private void ScheduleRetransmit(int c, RetransmitKind kind, long at)
    {
        ref var t = ref _tcp[c];
        t.RetransmitKind = kind;
        t.RetransmitAt = at;
        _timers.Schedule(TcpTimerId(c, TcpTimer.Retransmit), at);
    }

    /// <summary>RFC 8985 §7.2: a probe when SACK is on, no recovery or probe is under way and SRTT is known; PTO =
    /// 2·SRTT, plus the delayed-ACK allowance when one segment is out, or a little slack otherwise. Returns 0 when
    /// no probe is due.</summary>
    private long LossProbeTimeout(int c)
    {
        ref var t = ref _tcp[c];
        if (!t.SackPermitted || t.InRecovery || t.TlpOutstanding || t.Srtt == 0 ||
            t.State is not (TcpState.Established or TcpState.CloseWait or TcpState.FinWait1 or TcpState.Closing or TcpState.LastAck))
            return 0;
        return 2 * t.Srtt + (t.SentCount == 1 ? TlpDelayedAckAllowanceNs : TlpSlackNs);
    }

    /// <summary>An ACK moved SND.UNA: the timer starts again for what is still outstanding (RFC 6298 §5.3), as a loss
    /// probe when one is due, never later than the RTO would fire, which it replaces (RFC 8985 §7.2).</summary>
    private void ArmRetransmitTimer(int c)
    {
        ref var t = ref _tcp[c];
        if (t.SentCount == 0)
        {
            _timers.Cancel(TcpTimerId(c, TcpTimer.Retransmit));
            return;
        }
        long pto = LossProbeTimeout(c);
        if (pto > 0)
            ScheduleRetransmit(c, RetransmitKind.Probe, _now + Math.Min(pto, BackedOffRto(c)));
        else
            ScheduleRetransmit(c, RetransmitKind.Rto, _now + BackedOffRto(c));
    }

    /// <summary>New data went out: the RTO starts if it was not running (RFC 6298 §5.1), and a loss probe is
    /// (re)scheduled for the new tail, never after the RTO already running (as Linux's tcp_schedule_loss_probe).</summary>
    private void ArmAfterNewData(int c)
    {
        ref var t = ref _tcp[c];
        bool running = _timers.IsScheduled(TcpTimerId(c, TcpTimer.Retransmit));
        if (!running)
        {
            ArmRetransmitTimer(c);
            return;
        }
        if (t.RetransmitKind == RetransmitKind.Reorder)
            return;
        long pto = LossProbeTimeout(c);
        if (pto == 0)
            return;
        long at = _now + Math.Min(pto, BackedOffRto(c)); // never later than the RTO would fire (RFC 8985 §7.2)
        if (t.RetransmitKind == RetransmitKind.Rto)
            at = Math.Min(at, t.RetransmitAt);
        ScheduleRetransmit(c, RetransmitKind.Probe, at);
    }

    /// <summary>RFC 8985 §7.3: the probe timeout. New data if the windows allow, else the last segment again; then
    /// the RTO.</summary>
    private void TailLossProbe(int c)
    {
        ref var t = ref _tcp[c];
        bool sent = TcpSendNew(c, ignoreCongestionWindow: true);
        if (sent)
            t.TlpRetransmitted = false;
        else if (t.SentCount > 0)
        {
            ref var last = ref SentSegment(c, t.SentCount - 1);
            // Never from beyond a right edge the peer pulled back, unless it is SND.UNA's segment (Linux's
            // __tcp_retransmit_skb; RFC 9293 §3.8.6.2.1): the receiver said it has no room there.
            bool inWindow = last.Start == t.SndUna || Seq.Lt(last.Start, t.SndUna + t.SndWnd);
            sent = inWindow && (last.Flags & SentFlags.Sacked) == 0 && Resend(c, ref last);
            t.TlpRetransmitted = sent;
        }
        if (sent)
        {
            Counters.TcpExtTCPLossProbes++;
            t.TlpOutstanding = true;
            t.TlpDsacked = false;
            t.TlpHighSeq = t.SndMax;
        }
        ScheduleRetransmit(c, RetransmitKind.Rto, _now + BackedOffRto(c));
    }

    /// <summary>RFC 8985 §7.4.2: once the ACK passes the probe, a retransmitted probe that was not D-SACKed repaired a
    /// real loss, and the window comes down as for any loss. An ACK of exactly the probe may be the original's, the
    /// D-SACK for the copy coming next: the episode waits for that, a bare duplicate ACK, or an ACK beyond.</summary>
    private void TailLossProbeAcked(int c, uint ack, bool duplicate)
    {
        ref var t = ref _tcp[c];
        if (!t.TlpOutstanding || Seq.Lt(ack, t.TlpHighSeq))
            return;
        if (t.TlpRetransmitted && !t.TlpDsacked && ack == t.TlpHighSeq && !duplicate)
            return;
        t.TlpOutstanding = false;
        if (duplicate && ack == t.TlpHighSeq)
            return; // both copies arrived: nothing was lost
        if (t.TlpRetransmitted && !t.TlpDsacked && !t.InRecovery)
        {
            Counters.TcpExtTCPLossProbeRecovery++;
            t.Ssthresh = CongestionSsthresh(c);
            t.Cwnd = t.Ssthresh;
        }
    }
}
