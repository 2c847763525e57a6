using Onload.Stack.Tcp;
using Onload.Stack.Wire;

namespace Onload.Stack;

// Congestion control: slow start (RFC 5681), congestion avoidance by CUBIC (RFC 9438) or NewReno, and loss
// recovery: entered when RACK, three duplicate ACKs or a timeout find a segment lost; during fast recovery
// proportional rate reduction (RFC 6937) sets the window against the pipe (RFC 6675) on every ACK, so data keeps
// flowing while the window comes down; left when the ACK passes the recovery point (RFC 6582's "recover").
public sealed partial class NetStack
{
    private const uint MaxCwnd = 1u << 30;

    /// <summary>A new cumulative ACK of <paramref name="acked"/> bytes outside recovery (or after a timeout).</summary>
    private void CongestionOnAck(int c, uint acked, uint pipeBefore)
    {
        ref var t = ref _tcp[c];
        // RFC 7661's spirit: grow only a window that was in use.
        bool slowStart = t.Cwnd < t.Ssthresh;
        if (slowStart ? 2 * (ulong)pipeBefore < t.Cwnd : pipeBefore + t.SndMss < t.Cwnd)
            return;
        if (slowStart)
            t.Cwnd = Math.Min(t.Cwnd + Math.Min(acked, t.SndMss), MaxCwnd); // RFC 5681 §3.1 (RFC 3465, L = 1)
        else if (t.Congestion == CongestionControl.NewReno)
            t.Cwnd = Math.Min(t.Cwnd + Math.Max(1u, (uint)((ulong)t.SndMss * acked / t.Cwnd)), MaxCwnd);
        else
        {
            double mss = t.SndMss;
            double cwnd = t.Cubic.OnAck(t.Cwnd / mss, acked / mss, _now, t.Srtt);
            t.Cwnd = (uint)Math.Clamp(cwnd * mss, t.SndMss, MaxCwnd);
        }
    }

    /// <summary>The slow-start threshold after a congestion event (RFC 5681 §3.1 for NewReno, RFC 9438 §4.6).</summary>
    private uint CongestionSsthresh(int c)
    {
        ref var t = ref _tcp[c];
        if (t.Congestion == CongestionControl.NewReno)
            return Math.Max((t.SndMax - t.SndUna) / 2, 2u * t.SndMss);
        double mss = t.SndMss;
        return (uint)Math.Max(t.Cubic.OnCongestion(t.Cwnd / mss) * mss, 2.0 * mss);
    }

    /// <summary>A segment was found lost: recovery starts and the lost segment goes at once (fast retransmit,
    /// RFC 5681 §3.2), whatever the window; after that PRR sets the window on each ACK (RFC 6937 §3: RecoverFS =
    /// SND.NXT − SND.UNA, prr_delivered = prr_out = 0).</summary>
    private void EnterRecovery(int c)
    {
        ref var t = ref _tcp[c];
        t.Ssthresh = CongestionSsthresh(c);
        t.RecoverFs = Math.Max(t.SndMax - t.SndUna, 1u);
        t.PrrDelivered = 0;
        t.PrrOut = 0;
        t.Cwnd = Math.Min(t.Cwnd, EffectivePipe(c) + t.SndMss);
        t.InRecovery = true;
        t.RtoRecovery = false;
        t.Recover = t.SndMax - 1;
        t.TlpOutstanding = false;
        if (t.SackPermitted)
            Counters.TcpExtTCPSackRecovery++;
        else
            Counters.TcpExtTCPRenoRecovery++;
        RetransmitNextLost(c);
    }

    /// <summary>The ACK passed the recovery point: the window is ssthresh (RFC 6937 §3); after a timeout the window
    /// slow-started back already.</summary>
    private void ExitRecovery(int c)
    {
        ref var t = ref _tcp[c];
        if (!t.RtoRecovery)
            t.Cwnd = t.Ssthresh;
        t.InRecovery = false;
        t.RtoRecovery = false;
        t.DupAcks = 0;
    }

    /// <summary>The cumulative ACK moved by <paramref name="acked"/> bytes, <paramref name="records"/> records.</summary>
    private void OnNewAck(int c, uint acked, int records, uint pipeBefore)
    {
        ref var t = ref _tcp[c];
        if (t.InRecovery)
        {
            if (Seq.Gt(t.SndUna, t.Recover))
            {
                ExitRecovery(c);
                return;
            }
            if (t.RtoRecovery)
                CongestionOnAck(c, acked, pipeBefore);
            else if (!t.SackPermitted && t.SentCount > 0)
            {
                // NewReno's partial ACK (RFC 6582 §3.2 step 4): the next hole is lost too; send it now. The duplicate
                // ACKs that stood for segments now acknowledged stop counting (Linux's tcp_remove_reno_sacks).
                t.DupAcks = Math.Max(0, t.DupAcks - (records - 1));
                ref var head = ref SentSegment(c, 0);
                if ((head.Flags & (SentFlags.Lost | SentFlags.Sacked)) == 0)
                {
                    MarkLost(c, ref head);
                    RetransmitNextLost(c);
                }
            }
            return;
        }
        t.DupAcks = 0;
        CongestionOnAck(c, acked, pipeBefore);
    }

    /// <summary>A duplicate ACK. The third starts recovery if nothing else did (RFC 5681 §3.2, RFC 6675 §5, guarded
    /// by RFC 6582 §3.2 step 2). Without SACK each stands for a segment that left the network, so the pipe shrinks
    /// by one segment per duplicate: new data flows as RFC 3042's limited transmit and RFC 6582's window inflation
    /// would let it.</summary>
    private void OnDuplicateAck(int c)
    {
        ref var t = ref _tcp[c];
        t.DupAcks++;
        if (t.InRecovery || t.DupAcks != 3 || !Seq.Gt(t.SndUna, t.Recover) || t.SentCount == 0)
            return;
        MarkLost(c, ref SentSegment(c, 0));
        EnterRecovery(c);
    }

    /// <summary>
    /// RFC 6937 §3, on every ACK in fast recovery: <paramref name="delivered"/> bytes reached the receiver (the
    /// cumulative ACK's advance plus the change in SACKed bytes, one segment for a duplicate ACK without SACK).
    /// While the pipe is above ssthresh, send in proportion to what was delivered (PRR); below it, slow-start back
    /// up to ssthresh, at most one segment more than delivered (PRR-SSRB). The window is the pipe plus that.
    /// </summary>
    private void ProportionalRateReduction(int c, uint delivered)
    {
        ref var t = ref _tcp[c];
        t.PrrDelivered += delivered;
        uint pipe = EffectivePipe(c);
        long sendable;
        if (pipe > t.Ssthresh)
            sendable = (long)(((ulong)t.PrrDelivered * t.Ssthresh + t.RecoverFs - 1) / t.RecoverFs) - t.PrrOut;
        else
        {
            long limit = Math.Max((long)t.PrrDelivered - t.PrrOut, delivered) + t.SndMss;
            sendable = Math.Min((long)t.Ssthresh - pipe, limit);
        }
        t.Cwnd = pipe + (uint)Math.Max(0, sendable);
    }

    /// <summary>The pipe the window is compared with: without SACK, less one segment per duplicate ACK.</summary>
    private uint EffectivePipe(int c)
    {
        ref var t = ref _tcp[c];
        if (t.SackPermitted)
            return t.Pipe;
        ulong left = (ulong)t.DupAcks * t.SndMss;
        return left >= t.Pipe ? 0 : t.Pipe - (uint)left;
    }

    /// <summary>The retransmission timeout (RFC 6298 §5.4–5.6, RFC 5681 §3.1): every segment not SACKed is lost,
    /// the window drops to one segment, and slow start sends them again.</summary>
    private void TimeoutRecovery(int c)
    {
        ref var t = ref _tcp[c];
        if (!t.RtoRecovery || t.Backoff == 0)
            t.Ssthresh = CongestionSsthresh(c); // once per episode: a retransmission lost again keeps it
        else
            t.Cubic.EpochStart = 0;
        t.Cwnd = t.SndMss;
        t.InRecovery = true;
        t.RtoRecovery = true;
        t.Recover = t.SndMax - 1;
        t.DupAcks = 0;
        t.TlpOutstanding = false;
        for (int i = 0; i < t.SentCount; i++)
        {
            ref var r = ref SentSegment(c, i);
            if ((r.Flags & SentFlags.Sacked) == 0)
                MarkLost(c, ref r);
        }
    }
}
