using System.Buffers.Binary;
using Onload.Stack.Memory;
using Onload.Stack.Tcp;
using Onload.Stack.Wire;

namespace Onload.Stack;

// TCP output (RFC 9293 §3.8, RFC 896 Nagle, RFC 5681): what to send now, and building segments straight into
// VNIC buffers from the send ring.
public sealed partial class NetStack
{
    /// <summary>Bytes of options on a data segment when timestamps are on: NOP, NOP, TS (RFC 7323 Appendix A).</summary>
    private const int TcpTimestampOptionBytes = 12;

    /// <summary>Sends what the connection may send now: segments marked lost first (RFC 6675 §5), then new data
    /// within the windows, a FIN, or a due ACK.</summary>
    private void TcpOutput(int c)
    {
        ref var t = ref _tcp[c];
        if (t.State is TcpState.Closed or TcpState.Listen or TcpState.SynSent or TcpState.SynReceived or TcpState.TimeWait)
        {
            if (t.AckNow && t.State == TcpState.TimeWait)
                TcpSendFlags(c, t.SndNxt, TcpFlags.Ack);
            t.AckNow = false;
            return;
        }
        bool sent = false;
        while (t.LostCount > 0 && EffectivePipe(c) < t.Cwnd && RetransmitNextLost(c))
            sent = true;
        if (t.LostCount == 0)
        {
            while (TcpSendNew(c, ignoreCongestionWindow: false))
                sent = true;
        }
        if (!sent && t.SndWnd == 0 && t.SndQueued > 0 && t.SndUna == t.SndMax &&
            !_timers.IsScheduled(TcpTimerId(c, TcpTimer.Retransmit)))
        {
            // Zero window with data waiting: the persist timer probes until the window opens (RFC 9293 §3.8.6.1).
            ScheduleRetransmit(c, RetransmitKind.Rto, _now + BackedOffRto(c));
        }
        if (t.AckNow)
            TcpSendFlags(c, AcceptableSeq(ref t, t.SndNxt), TcpFlags.Ack);
    }

    /// <summary>
    /// The sequence number of a segment without data (an ACK, a RST) that would carry <paramref name="next"/>: that,
    /// unless the peer has since pulled its window's right edge back behind it; then the edge itself. A receiver drops
    /// a segment that starts beyond its window unread, its ACK with it (RFC 9293 §3.10.7.4); a peer whose application
    /// waits for our ACK to free its send buffer before it reads again would never open its window, and neither side
    /// would move (found by the exhaustion tests against Linux 6.18). Linux's tcp_acceptable_seq allows SND.NXT up to
    /// a unit of a window scale past the edge, for a window rounded down; here the edge is always taken, since a
    /// zero window is not rounded and the edge is acceptable either way.
    /// </summary>
    private static uint AcceptableSeq(ref TcpConnection t, uint next)
    {
        uint edge = t.SndUna + t.SndWnd;
        return Seq.Ge(edge, next) ? next : edge;
    }

    /// <summary>Sends one segment of new data (or the FIN) if the receive window, the congestion window (unless
    /// told to ignore it, for a loss probe), Nagle, cork and silly-window avoidance allow. Returns whether it did.</summary>
    private bool TcpSendNew(int c, bool ignoreCongestionWindow)
    {
        ref var t = ref _tcp[c];
        if (t.FinSent || t.SentCount == _tcp.SentCapacity)
            return false;
        uint outstanding = t.SndNxt - t.SndUna;
        int unsent = (int)(t.SndUna + (uint)t.SndQueued - t.SndNxt);
        long windowRoom = (long)t.SndWnd - outstanding;
        int length = (int)Math.Max(0, Math.Min(Math.Min(unsent, t.SndMss), windowRoom));
        bool finNow = t.FinQueued && length == unsent;
        if (length == 0 && !finNow)
            return false;
        if (!ignoreCongestionWindow && EffectivePipe(c) >= t.Cwnd)
            return false;
        if (length > 0 && length < t.SndMss && !finNow)
        {
            // Nagle (RFC 896): a small segment waits while data is unacknowledged; TCP_CORK waits for a full one.
            if (t.Cork || (!t.NoDelay && outstanding > 0))
                return false;
            // Sender silly-window avoidance (RFC 9293 §3.8.6.2.1): a small piece of what is queued waits for the
            // window to open, unless it is all there is to send.
            if (length < unsent && length < t.SndWnd / 2)
                return false;
        }
        var flags = TcpFlags.Ack;
        if (length > 0 && length == unsent)
            flags |= TcpFlags.Psh;
        if (finNow)
            flags |= TcpFlags.Fin;
        if (!TcpSendSegment(c, t.SndNxt, length, flags))
            return false;
        RecordSent(c, t.SndNxt, length, finNow);
        if (t.InRecovery && !t.RtoRecovery)
            t.PrrOut += (uint)length + (finNow ? 1u : 0u);
        t.SndNxt += (uint)length + (finNow ? 1u : 0u);
        if (finNow)
            t.FinSent = true;
        ArmAfterNewData(c);
        return true;
    }

    /// <summary>A segment without data (an ACK, a SYN, a FIN, a RST, a probe) at <paramref name="seq"/>.</summary>
    private bool TcpSendFlags(int c, uint seq, TcpFlags flags) => TcpSendSegment(c, seq, 0, flags);

    /// <summary>
    /// Builds one segment for connection <paramref name="c"/>: header, options, <paramref name="length"/> bytes of
    /// the send ring from <paramref name="seq"/>, checksum; and sends it. Every segment carries the current ACK and
    /// window, so sending one satisfies a pending ACK.
    /// </summary>
    private bool TcpSendSegment(int c, uint seq, int length, TcpFlags flags)
    {
        ref var t = ref _tcp[c];
        int buffer = AllocateTx();
        if (buffer < 0)
            return false;
        var frame = _pool.Span(buffer);
        var segment = frame[IpPayloadOffset..];
        int optionBytes = TcpWriteOptions(c, segment[TcpSegment.MinHeaderLength..], flags, length);
        int headerLength = TcpSegment.MinHeaderLength + optionBytes;
        if (length > 0)
            ByteRing.Read(_tcp.SendRing(c), seq - t.Iss - 1, segment.Slice(headerLength, length));
        uint ack = (flags & TcpFlags.Ack) != 0 ? t.RcvNxt : 0;
        var tcp = new TcpSegment(segment);
        tcp.WriteHeader(t.LocalPort, t.RemotePort, seq, ack, flags, TcpAdvertiseWindow(c, flags), optionBytes);
        tcp.FillChecksum(_address, t.RemoteAddress, headerLength + length);
        Counters.TcpOutSegs++;
        if ((flags & TcpFlags.Rst) != 0)
            Counters.TcpOutRsts++;
        // The segment carries the ACK only if the peer will read it: one ending beyond the right edge (data into a
        // zero or shrunk window) or starting before SND.UNA (a window probe) is dropped ACK and all by Linux, so a
        // pending ACK still goes on its own (AcceptableSeq) after it.
        if ((flags & (TcpFlags.Syn | TcpFlags.Rst)) != 0 || (flags & TcpFlags.Ack) == 0 ||
            Seq.Ge(seq, t.SndUna) && Seq.Le(seq + (uint)length, t.SndUna + t.SndWnd))
        {
            t.AckNow = false;
            t.SegmentsSinceAck = 0;
            _timers.Cancel(TcpTimerId(c, TcpTimer.DelayedAck));
        }
        // Linux sets DF on TCP: segments are sized to the path, never fragmented.
        Ipv4Output(buffer, t.RemoteAddress, IpProtocol.Tcp, headerLength + length, dontFragment: true);
        return true;
    }

    /// <summary>Options: MSS, window scale, SACK-permitted and timestamps on a SYN (RFC 9293 §3.2, RFC 7323);
    /// afterwards timestamps when negotiated, and SACK blocks when there is something to report and room beside
    /// <paramref name="dataLength"/> bytes of data. Returns their length, padded to a multiple of 4.</summary>
    private int TcpWriteOptions(int c, Span<byte> o, TcpFlags flags, int dataLength)
    {
        ref var t = ref _tcp[c];
        int n = 0;
        bool syn = (flags & TcpFlags.Syn) != 0;
        if (syn)
        {
            o[n++] = TcpSegment.OptionMss;
            o[n++] = 4;
            BinaryPrimitives.WriteUInt16BigEndian(o[n..], (ushort)TcpOwnMss);
            n += 2;
            // On a SYN-ACK, only what the peer offered (RFC 7323 §1.3, §2.2; RFC 2018 §2).
            bool ack = (flags & TcpFlags.Ack) != 0;
            if (ack ? t.SackPermitted : Options.TcpSack)
            {
                o[n++] = TcpSegment.OptionSackPermitted;
                o[n++] = 2;
            }
            else
            {
                o[n++] = TcpSegment.OptionNop;
                o[n++] = TcpSegment.OptionNop;
            }
            if (!ack || t.Timestamps)
            {
                WriteTimestamps(ref t, o[n..]);
                n += 10;
            }
            if (!ack || t.WindowScaling)
            {
                o[n++] = TcpSegment.OptionNop;
                o[n++] = TcpSegment.OptionWindowScale;
                o[n++] = 3;
                o[n++] = t.RcvWndShift;
            }
        }
        else if (t.Timestamps && (flags & TcpFlags.Rst) == 0)
        {
            o[n++] = TcpSegment.OptionNop;
            o[n++] = TcpSegment.OptionNop;
            WriteTimestamps(ref t, o[n..]);
            n += 10;
        }
        if (!syn && (flags & TcpFlags.Rst) == 0 && t.SackPermitted && (t.Dsack.Length != 0 || t.OutOfOrder.Count > 0))
            n += WriteSackBlocks(c, o[n..], Math.Min(TcpMaxOptionBytes - n, TcpOwnMss - dataLength - n));
        while ((n & 3) != 0)
            o[n++] = TcpSegment.OptionEnd;
        return n;
    }

    private const int TcpMaxOptionBytes = 40;

    /// <summary>
    /// NOP, NOP, SACK with as many blocks as fit in <paramref name="room"/> bytes: a pending D-SACK first (RFC 2883
    /// §4), then the out-of-order ranges most recent first (RFC 2018 §4). Returns the bytes written.
    /// </summary>
    private int WriteSackBlocks(int c, Span<byte> o, int room)
    {
        ref var t = ref _tcp[c];
        int fit = Math.Min((room - 4) / 8, SackBlocks.MaxBlocks);
        if (fit <= 0)
            return 0;
        Span<SeqRange> blocks = stackalloc SeqRange[SackBlocks.MaxBlocks];
        int count = 0;
        if (t.Dsack.Length != 0)
        {
            blocks[count++] = t.Dsack;
            t.Dsack = default;
        }
        count += t.OutOfOrder.MostRecent(blocks[count..fit]);
        o[0] = TcpSegment.OptionNop;
        o[1] = TcpSegment.OptionNop;
        o[2] = TcpSegment.OptionSack;
        o[3] = (byte)(2 + 8 * count);
        for (int b = 0; b < count; b++)
        {
            BinaryPrimitives.WriteUInt32BigEndian(o[(4 + 8 * b)..], blocks[b].Start);
            BinaryPrimitives.WriteUInt32BigEndian(o[(8 + 8 * b)..], blocks[b].End);
        }
        return 4 + 8 * count;
    }

    private void WriteTimestamps(ref TcpConnection t, Span<byte> o)
    {
        o[0] = TcpSegment.OptionTimestamps;
        o[1] = 10;
        BinaryPrimitives.WriteUInt32BigEndian(o[2..], TcpTimestampNow);
        BinaryPrimitives.WriteUInt32BigEndian(o[6..], t.TsRecent);
    }

    /// <summary>The timestamp clock: milliseconds (RFC 7323 §5.4 allows 1 ms to 1 s per tick) plus a random offset.</summary>
    private uint TcpTimestampNow => (uint)(_now / 1_000_000) + _tcpTimestampOffset;

    /// <summary>Our MSS: what fits the MTU after the IPv4 and TCP headers.</summary>
    private int TcpOwnMss => _mtu - Ipv4Packet.MinHeaderLength - TcpSegment.MinHeaderLength;

    /// <summary>Linux's net.ipv4.tcp_min_snd_mss: the least a peer's MSS (or a path MTU) makes us send per segment,
    /// before options. A peer that asks for MSS 1 would otherwise get a segment per byte, 40 bytes of headers each.</summary>
    public const int TcpMinSndMss = 48;

    /// <summary>The send MSS from the peer's MSS and the path MTU as it is now (the link's, or lower if ICMP said so),
    /// at least <see cref="TcpMinSndMss"/>, less the timestamp option every segment then carries (Linux's
    /// tcp_sync_mss and __tcp_mtu_to_mss); nothing before the peer's SYN told its MSS.</summary>
    private void TcpSyncMss(int c)
    {
        ref var t = ref _tcp[c];
        if (t.PeerMss == 0)
            return;
        int mtu = t.PathMtu != 0 ? Math.Min(t.PathMtu, _mtu) : _mtu;
        int mss = Math.Max(Math.Min(t.PeerMss, mtu - Ipv4Packet.MinHeaderLength - TcpSegment.MinHeaderLength), TcpMinSndMss);
        t.SndMss = (ushort)(mss - (t.Timestamps ? TcpTimestampOptionBytes : 0));
    }

    /// <summary>
    /// The window to advertise (RFC 9293 §3.8.6.2.2): free receive buffer, never shrinking the right edge already
    /// offered, and not opened by less than an MSS at a time (receiver silly-window avoidance).
    /// </summary>
    private ushort TcpAdvertiseWindow(int c, TcpFlags flags)
    {
        ref var t = ref _tcp[c];
        if ((flags & TcpFlags.Syn) != 0)
            return (ushort)Math.Min(t.RcvBufSize, ushort.MaxValue); // never scaled on a SYN (RFC 7323 §2.2)
        long free = t.RcvBufSize - (long)(t.RcvNxt - t.RcvRead);
        if (t.ShutdownRead)
            free = t.RcvBufSize;
        uint rightEdge = t.RcvNxt + (uint)Math.Max(0, free);
        if (Seq.Lt(rightEdge, t.RcvAdv))
            rightEdge = t.RcvAdv;
        else if ((long)(rightEdge - t.RcvAdv) < Math.Min(t.RcvBufSize / 2, TcpOwnMss) && Seq.Ge(t.RcvAdv, t.RcvNxt))
            rightEdge = t.RcvAdv;
        long window = (long)(rightEdge - t.RcvNxt) >> t.RcvWndShift;
        window = Math.Min(window, ushort.MaxValue);
        t.RcvAdv = t.RcvNxt + (uint)(window << t.RcvWndShift);
        return (ushort)window;
    }

    /// <summary>A RST answering a segment that has no connection (RFC 9293 §3.10.7.1).</summary>
    private void TcpSendResetFor(Ipv4Address remote, TcpSegment segment, int segmentLength)
    {
        var flags = segment.Flags;
        if ((flags & TcpFlags.Rst) != 0)
            return;
        int buffer = AllocateTx();
        if (buffer < 0)
            return;
        var reset = new TcpSegment(_pool.Span(buffer)[IpPayloadOffset..]);
        if ((flags & TcpFlags.Ack) != 0)
            reset.WriteHeader(segment.DestinationPort, segment.SourcePort, segment.AcknowledgmentNumber, 0, TcpFlags.Rst, 0, 0);
        else
        {
            uint length = (uint)(segmentLength - segment.HeaderLength) +
                ((flags & TcpFlags.Syn) != 0 ? 1u : 0u) + ((flags & TcpFlags.Fin) != 0 ? 1u : 0u);
            reset.WriteHeader(segment.DestinationPort, segment.SourcePort, 0, segment.SequenceNumber + length,
                TcpFlags.Rst | TcpFlags.Ack, 0, 0);
        }
        reset.FillChecksum(_address, remote, TcpSegment.MinHeaderLength);
        Counters.TcpOutSegs++;
        Counters.TcpOutRsts++;
        Ipv4Output(buffer, remote, IpProtocol.Tcp, TcpSegment.MinHeaderLength, dontFragment: true);
    }
}
