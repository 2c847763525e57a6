using Onload.Stack.Tcp;
using Onload.Stack.Wire;

namespace Onload.Stack;

// The sender's scoreboard: one record per segment in flight (TcpSentSegment), marked SACKed from the peer's SACK
// blocks (RFC 2018, D-SACK RFC 2883), lost by RACK or by duplicate ACKs, and sent again from here. The pipe
// (RFC 6675 §4) is kept as records change, never recounted.
public sealed partial class NetStack
{
    private ref TcpSentSegment SentSegment(int c, int i)
    {
        ref var t = ref _tcp[c];
        return ref _tcp.SentSegments(c)[(t.SentHead + i) & (_tcp.SentCapacity - 1)];
    }

    /// <summary>Appends the record of a segment just sent for the first time.</summary>
    private void RecordSent(int c, uint seq, int dataLength, bool fin)
    {
        ref var t = ref _tcp[c];
        ref var r = ref SentSegment(c, t.SentCount);
        r.Start = seq;
        r.Length = (uint)dataLength + (fin ? 1u : 0u);
        r.SentAt = _now;
        r.Flags = fin ? SentFlags.Fin : SentFlags.None;
        t.SentCount++;
        Account(ref t, r, +1);
    }

    private static bool WaitsForRetransmit(SentFlags f) => (f & (SentFlags.Lost | SentFlags.Resent | SentFlags.Sacked)) == SentFlags.Lost;

    /// <summary>Changes a record's flags, keeping the pipe and the SACKed and lost counts true.</summary>
    private void SetSentFlags(int c, ref TcpSentSegment r, SentFlags flags)
    {
        ref var t = ref _tcp[c];
        Account(ref t, r, -1);
        r.Flags = flags;
        Account(ref t, r, +1);
    }

    /// <summary>Adds (<paramref name="sign"/> +1) or takes away (−1) a record's share of the pipe, of the SACKed
    /// records and bytes, and of the records waiting to be sent again: the one place those totals change.</summary>
    private static void Account(ref TcpConnection t, in TcpSentSegment r, int sign)
    {
        long length = sign * (long)r.Length;
        if (r.InPipe)
            t.Pipe = (uint)(t.Pipe + length);
        if ((r.Flags & SentFlags.Sacked) != 0)
        {
            t.SackedCount += sign;
            t.SackedBytes = (uint)(t.SackedBytes + length);
        }
        if (WaitsForRetransmit(r.Flags))
            t.LostCount += sign;
    }

    private void MarkLost(int c, ref TcpSentSegment r)
    {
        if ((r.Flags & SentFlags.Resent) != 0)
            Counters.TcpExtTCPLostRetransmit++;
        SetSentFlags(c, ref r, (r.Flags | SentFlags.Lost) & ~SentFlags.Resent);
    }

    /// <summary>The cumulative ACK reached <paramref name="ack"/>: records below it leave the scoreboard (each a
    /// delivery for RACK); one it splits is trimmed. Returns how many records left, and in <paramref name="rtt"/>
    /// the time since the newest of them left, or -1 if any of them was sent twice (Karn's rule, as Linux's
    /// FLAG_RETRANS_DATA_ACKED: such an ACK may answer either copy).</summary>
    private int AckSentSegments(int c, uint ack, out long rtt)
    {
        ref var t = ref _tcp[c];
        int removed = 0;
        rtt = -1;
        bool ambiguous = false;
        while (t.SentCount > 0)
        {
            ref var r = ref SentSegment(c, 0);
            if (Seq.Le(r.End, ack))
            {
                if ((r.Flags & SentFlags.Sacked) == 0)
                    RackDelivered(c, in r);
                if ((r.Flags & SentFlags.Retransmitted) != 0)
                    ambiguous = true;
                else
                    rtt = _now - r.SentAt;
                Account(ref t, r, -1);
                t.SentHead = (t.SentHead + 1) & (_tcp.SentCapacity - 1);
                t.SentCount--;
                removed++;
                continue;
            }
            if (Seq.Gt(ack, r.Start))
            {
                Account(ref t, r, -1);
                r.Length -= ack - r.Start;
                r.Start = ack;
                // The piece of a resend cut to the window arrived: the rest was never resent, so it is lost again
                // and out of the pipe.
                if ((r.Flags & SentFlags.Cut) != 0)
                    r.Flags &= ~(SentFlags.Cut | SentFlags.Resent);
                Account(ref t, r, +1);
            }
            break;
        }
        if (ambiguous)
            rtt = -1;
        return removed;
    }

    /// <summary>The index of the record holding <paramref name="seq"/> or the first after it (records are in
    /// sequence order from SND.UNA).</summary>
    private int FindSentSegment(int c, uint seq)
    {
        ref var t = ref _tcp[c];
        uint offset = seq - t.SndUna;
        int lo = 0, hi = t.SentCount;
        while (lo < hi)
        {
            int mid = (lo + hi) >>> 1;
            if (SentSegment(c, mid).End - t.SndUna <= offset)
                lo = mid + 1;
            else
                hi = mid;
        }
        return lo;
    }

    /// <summary>
    /// The SACK blocks of an ACK (RFC 2018 §3; RFC 6675 §5 step 1): records wholly inside a block are SACKed (a
    /// block that splits a record leaves it alone: it is sent again, which costs a duplicate, never data). A first
    /// block below the cumulative ACK, or inside the second block, is a D-SACK (RFC 2883 §4). Blocks outside
    /// [SND.UNA, SND.MAX] are ignored, as Linux's tcp_is_sackblock_valid does.
    /// </summary>
    private void SackInput(int c, in TcpOptions options, uint ack)
    {
        ref var t = ref _tcp[c];
        // Blocks come newest first; taken in sequence order (as Linux sorts them), two new blocks in one ACK do not
        // look like reordering to RACK.
        Span<SeqRange> blocks = stackalloc SeqRange[SackBlocks.MaxBlocks];
        int count = 0;
        for (int b = 0; b < options.SackCount; b++)
        {
            var block = options.Sack[b];
            if (!Seq.Lt(block.Start, block.End) || Seq.Gt(block.End, t.SndMax))
                continue;
            if (b == 0 && (Seq.Le(block.End, ack) ||
                           options.SackCount > 1 && Seq.Ge(block.Start, options.Sack[1].Start) && Seq.Le(block.End, options.Sack[1].End)))
            {
                DsackReceived(c, block);
                continue;
            }
            if (Seq.Lt(block.Start, t.SndUna))
                continue;
            int at = count++;
            for (; at > 0 && Seq.Lt(block.Start, blocks[at - 1].Start); at--)
                blocks[at] = blocks[at - 1];
            blocks[at] = block;
        }
        foreach (var block in blocks[..count])
        {
            for (int i = FindSentSegment(c, block.Start); i < t.SentCount; i++)
            {
                ref var r = ref SentSegment(c, i);
                if (Seq.Ge(r.Start, block.End))
                    break;
                if ((r.Flags & SentFlags.Sacked) != 0 || Seq.Lt(r.Start, block.Start) || Seq.Gt(r.End, block.End))
                    continue;
                RackDelivered(c, in r);
                SetSentFlags(c, ref r, r.Flags | SentFlags.Sacked);
            }
        }
    }

    /// <summary>A D-SACK: the peer got something twice, so a retransmission was spurious (RFC 2883 §4): likely
    /// reordering, and RACK widens its reordering window (RFC 8985 §6.2 step 4). If it covers the tail loss probe,
    /// the probe repaired nothing (§7.4).</summary>
    private void DsackReceived(int c, SeqRange block)
    {
        ref var t = ref _tcp[c];
        Counters.TcpExtTCPDSACKRecv++;
        t.RackReorderingSeen = true;
        t.RackReoWndMult = (byte)Math.Min(Math.Max(1, (int)t.RackReoWndMult) + 1, 16); // it starts at 1 (0 here = unset)
        if (t.TlpOutstanding && t.TlpRetransmitted && Seq.Lt(block.Start, t.TlpHighSeq) && Seq.Le(t.TlpHighSeq, block.End))
            t.TlpDsacked = true;
    }

    /// <summary>Sends the first record marked lost again (RFC 6675 §5 NextSeg rule 1). Returns false when no buffer
    /// was free or the record lies beyond the peer's window (only the first may, as a probe).</summary>
    private bool RetransmitNextLost(int c)
    {
        ref var t = ref _tcp[c];
        for (int i = 0; i < t.SentCount; i++)
        {
            ref var r = ref SentSegment(c, i);
            if (!WaitsForRetransmit(r.Flags))
                continue;
            if (i > 0 && Seq.Ge(r.Start, t.SndUna + t.SndWnd))
                return false;
            return Resend(c, ref r);
        }
        return false;
    }

    /// <summary>Sends a recorded segment again, as it was; in pieces if the MSS fell since (<see cref="SetMtu"/>).</summary>
    private bool Resend(int c, ref TcpSentSegment r)
    {
        ref var t = ref _tcp[c];
        var flags = TcpFlags.Ack | ((r.Flags & SentFlags.Fin) != 0 ? TcpFlags.Fin : 0);
        // Only what fits the peer's window now (at most an MSS), as Linux's tcp_retransmit_skb trims: a receiver that
        // shrank its window while holding data drops a segment that ends beyond it, ACK and all (Linux since 6.17).
        // The record is marked cut, so that once its piece is acknowledged the rest waits for retransmission again
        // (AckSentSegments), as the tail tcp_fragment leaves. A zero window gets the segment whole, as a probe.
        int fits = (int)Math.Clamp((long)(int)(t.SndUna + t.SndWnd - r.Start), 0, r.DataLength);
        bool cut = fits > 0 && fits < r.DataLength;
        int piece = Math.Min(fits, (int)t.SndMss);
        bool sent = cut
            ? TcpSendSegment(c, r.Start, piece, flags & ~TcpFlags.Fin)
            : r.DataLength <= t.SndMss ? TcpSendSegment(c, r.Start, r.DataLength, flags) : ResendInPieces(c, in r, flags);
        if (!sent)
            return false;
        r.SentAt = _now;
        var now = r.Flags | SentFlags.Retransmitted | (cut ? SentFlags.Cut : 0);
        if ((now & SentFlags.Lost) != 0)
            now |= SentFlags.Resent;
        SetSentFlags(c, ref r, now);
        Counters.TcpRetransSegs++;
        t.TotalRetrans++;
        if (t.InRecovery && !t.RtoRecovery)
        {
            Counters.TcpExtTCPFastRetrans++;
            t.PrrOut += cut ? (uint)piece : r.Length;
        }
        return true;
    }

    /// <summary>A record larger than the MSS now is: sent as segments of at most an MSS (the FIN on the last), as
    /// Linux's tcp_fragment splits an skb on retransmit. It stays one record: a SACK covering part of it leaves it
    /// unacknowledged, and the cumulative ACK trims it. Returns false when not even the first piece went.</summary>
    private bool ResendInPieces(int c, in TcpSentSegment r, TcpFlags flags)
    {
        ref var t = ref _tcp[c];
        uint seq = r.Start;
        int left = r.DataLength;
        while (left > 0)
        {
            int n = Math.Min(left, (int)t.SndMss);
            var pieceFlags = n == left ? flags : flags & ~TcpFlags.Fin;
            if (!TcpSendSegment(c, seq, n, pieceFlags))
                return seq != r.Start; // the rest goes with the next retransmission
            seq += (uint)n;
            left -= n;
        }
        return true;
    }
}
