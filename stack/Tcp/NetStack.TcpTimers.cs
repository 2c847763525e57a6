using Onload.Stack.Tcp;
using Onload.Stack.Wire;

namespace Onload.Stack;

// TCP timers (RFC 6298 retransmission, RFC 9293 §3.8.6.1 persist, RFC 1122 §4.2.3.6 keepalive, delayed ACK,
// 2MSL), all on the timer wheel: each expiry costs O(1), and nothing scans the connections.
public sealed partial class NetStack
{
    /// <summary>One TCP timer fired (its id from <see cref="TcpTimerId"/>).</summary>
    private void TcpTimerExpired(int id)
    {
        int c = id / (int)TcpTimer.Count;
        if (!_tcp.IsValid(c))
            return;
        switch ((TcpTimer)(id % (int)TcpTimer.Count))
        {
            case TcpTimer.Retransmit:
                RetransmitTimer(c);
                break;
            case TcpTimer.DelayedAck:
                _tcp[c].AckNow = true;
                TcpOutput(c);
                break;
            case TcpTimer.Keepalive:
                KeepaliveTimer(c);
                break;
        }
        if (_tcp.IsValid(c))
            Mirror(c);
    }

    /// <summary>The RTO with its exponential backoff (RFC 6298 §5.5). The estimate itself is kept apart, as Linux
    /// keeps icsk_rto apart from icsk_backoff, so that an ACK of new data, which ends the backoff, brings the
    /// timeout straight back to the estimate.</summary>
    private long BackedOffRto(int c)
    {
        ref var t = ref _tcp[c];
        return Math.Min(t.Rto << Math.Min(t.Backoff, 20), Options.TcpMaxRtoNs);
    }

    /// <summary>Linux's tcp_orphan_retries (0, meaning 8): unanswered zero-window probes a closed connection gets.</summary>
    private const int OrphanProbes = 8;

    private void RetransmitTimer(int c)
    {
        ref var t = ref _tcp[c];
        if (t.State is TcpState.SynSent or TcpState.SynReceived)
        {
            int limit = t.State == TcpState.SynSent ? Options.TcpSynRetries : Options.TcpSynAckRetries;
            if (t.Backoff >= limit)
            {
                Counters.TcpExtTCPAbortOnTimeout++;
                TcpFail(c, (int)Errno.ETIMEDOUT);
                return;
            }
            t.Backoff++;
            t.SynSentAt = 0; // Karn: an answer may be to either copy
            Counters.TcpExtTCPTimeouts++;
            if (TcpSendFlags(c, t.Iss, t.State == TcpState.SynSent ? TcpFlags.Syn : TcpFlags.Syn | TcpFlags.Ack))
            {
                Counters.TcpRetransSegs++;
                t.TotalRetrans++;
            }
            ScheduleRetransmit(c, RetransmitKind.Rto, _now + BackedOffRto(c));
            return;
        }
        if (t.SentCount == 0)
        {
            // Nothing outstanding: the persist timer. Probe a zero window with the byte before SND.UNA, which
            // the peer must acknowledge with its current window (Linux's tcp_xmit_probe_skb).
            if (t.SndWnd == 0 && t.SndQueued > 0 && t.State is TcpState.Established or TcpState.CloseWait or TcpState.FinWait1)
            {
                // RFC 1122 §4.2.2.17: probing goes on while the peer answers; probes nobody answers end the connection
                // as retransmissions do (Linux's tcp_probe_timer: tcp_retries2, or tcp_orphan_retries' 8 once the
                // application has closed it). Found by fuzzing: a closed connection stayed in FIN_WAIT_1 for ever.
                int limit = t.Orphaned ? Math.Min(Options.TcpRetries, OrphanProbes) : Options.TcpRetries;
                // An orphan is not kept for ever by a peer that answers every probe and never opens its window
                // (Linux's tcp_probe_timer on a dead socket): once backed off to the maximum RTO, it goes after
                // tcp_orphan_retries' worth of backoff, answered or not.
                bool orphanSpent = t.Orphaned && t.Backoff >= OrphanProbes && t.Rto << Math.Min(t.Backoff, 20) >= Options.TcpMaxRtoNs;
                if (t.ProbesOut >= limit || orphanSpent)
                {
                    Counters.TcpExtTCPAbortOnTimeout++;
                    TcpFail(c, (int)Errno.ETIMEDOUT);
                    return;
                }
                t.ProbesOut++;
                TcpSendFlags(c, t.SndUna - 1, TcpFlags.Ack);
                t.Backoff = Math.Min(t.Backoff + 1, 16);
                ScheduleRetransmit(c, RetransmitKind.Rto, _now + BackedOffRto(c));
            }
            return;
        }
        switch (t.RetransmitKind)
        {
            case RetransmitKind.Probe:
                TailLossProbe(c);
                return;
            case RetransmitKind.Reorder:
                ScheduleRetransmit(c, RetransmitKind.Rto, _now + BackedOffRto(c));
                RackDetectLoss(c);
                if (t.LostCount > 0 && !t.InRecovery)
                    EnterRecovery(c);
                TcpOutput(c);
                return;
        }
        if (t.RetransmitStartedAt == 0)
            t.RetransmitStartedAt = _now;
        bool userTimeout = t.UserTimeoutNs > 0 && _now - t.RetransmitStartedAt >= t.UserTimeoutNs;
        if (userTimeout || t.Backoff >= Options.TcpRetries)
        {
            Counters.TcpExtTCPAbortOnTimeout++;
            TcpFail(c, (int)Errno.ETIMEDOUT);
            return;
        }
        Counters.TcpExtTCPTimeouts++;
        TimeoutRecovery(c);
        t.Backoff++;
        TcpOutput(c);
        ScheduleRetransmit(c, RetransmitKind.Rto, _now + BackedOffRto(c));
    }

    private void KeepaliveTimer(int c)
    {
        ref var t = ref _tcp[c];
        switch (t.State)
        {
            case TcpState.TimeWait:
                TcpClosed(c); // freed if closed; else CLOSED until the application closes it (its descriptor stays valid)
                return;
            case TcpState.FinWait2 when t.Orphaned:
                TcpFree(c); // tcp_fin_timeout: the peer never closed its side
                return;
            case TcpState.Established or TcpState.CloseWait when t.KeepAlive:
                long idle = _now - t.LastReceivedAt;
                if (idle < t.KeepIdleNs && t.KeepProbes == 0)
                {
                    _timers.Schedule(TcpTimerId(c, TcpTimer.Keepalive), t.LastReceivedAt + t.KeepIdleNs);
                    return;
                }
                if (t.KeepProbes >= t.KeepCount)
                {
                    Counters.TcpExtTCPAbortOnTimeout++;
                    TcpFail(c, (int)Errno.ETIMEDOUT);
                    return;
                }
                // A keepalive probe: one byte the peer has already acknowledged (RFC 1122 §4.2.3.6) — no data.
                t.KeepProbes++;
                TcpSendFlags(c, t.SndUna - 1, TcpFlags.Ack);
                _timers.Schedule(TcpTimerId(c, TcpTimer.Keepalive), _now + t.KeepIntervalNs);
                return;
        }
    }
}
