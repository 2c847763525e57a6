using System.Numerics;
using Onload.Stack.Memory;
using Onload.Stack.Tcp;
using Onload.Stack.Wire;

namespace Onload.Stack;

// TCP buffer sizing, as Linux does it: the receive buffer auto-tuned by dynamic right-sizing (tcp_rcv_space_adjust:
// once per round trip, about twice what the application read), the send buffer grown with cwnd (tcp_sndbuf_expand),
// and SO_RCVBUF/SO_SNDBUF fixing either. All of it within the row's preallocated rings: a buffer only decides how much
// of its ring may be used, and the ring's in-use extent doubles in place when the buffer outgrows it, so pages a
// connection never needs are never touched.
public sealed partial class NetStack
{
    /// <summary>Linux's SOCK_MIN_RCVBUF and SOCK_MIN_SNDBUF (about 2 × 2304).</summary>
    private const int TcpMinBufferBytes = 4608;

    /// <summary>Initial window of segments (RFC 6928) that the first buffer sizes allow for, as Linux's TCP_INIT_CWND.</summary>
    private const int TcpInitialWindowSegments = 10;

    /// <summary>Buffer sizes and window scale of a new connection: inherited from a listener whose application set them,
    /// else the defaults; the shift is chosen for the largest buffer the connection may reach (RFC 7323 §2.2; Linux
    /// takes the maximum of tcp_rmem, or the SO_RCVBUF value when one was set).</summary>
    private void TcpInitialiseBuffers(int c, int inheritFrom)
    {
        ref var t = ref _tcp[c];
        t.RcvBufSize = Math.Min(Options.TcpReceiveBufferInitialBytes, _tcp.ReceiveBufferSize);
        t.SndBufSize = Math.Min(Options.TcpSendBufferInitialBytes, _tcp.SendBufferSize);
        if (inheritFrom >= 0)
        {
            ref var l = ref _tcp[inheritFrom];
            if (l.RcvBufLocked)
                (t.RcvBufSize, t.RcvBufLocked) = (l.RcvBufSize, true);
            if (l.SndBufLocked)
                (t.SndBufSize, t.SndBufLocked) = (l.SndBufSize, true);
        }
        // No data yet: the extents are set, not grown.
        t.RcvRingSize = RingExtent(t.RcvBufSize, _tcp.ReceiveBufferSize);
        t.SndRingSize = RingExtent(t.SndBufSize, _tcp.SendBufferSize);
        ChooseWindowShift(ref t);
    }

    private void ChooseWindowShift(ref TcpConnection t) =>
        t.RcvWndShift = WindowShiftFor(t.RcvBufLocked ? t.RcvBufSize : _tcp.ReceiveBufferSize);

    private static byte WindowShiftFor(int largestBuffer)
    {
        byte shift = 0;
        while ((largestBuffer >> shift) > ushort.MaxValue && shift < 14)
            shift++;
        return shift;
    }

    private static int RingExtent(int buffer, int ring) => (int)Math.Min((uint)ring, BitOperations.RoundUpToPowerOf2((uint)buffer));

    /// <summary>Linux's tcp_init_buffer_space at establishment: the send buffer made room for twice the initial
    /// window, and the first receive measurement begun with ten segments as the space already used.</summary>
    private void TcpInitBufferSpace(int c)
    {
        ref var t = ref _tcp[c];
        TcpSndBufExpand(c);
        t.RcvSpace = Math.Min(t.RcvBufSize, TcpInitialWindowSegments * TcpOwnMss);
        t.RcvSpaceSeq = t.RcvRead;
        t.RcvSpaceTime = _now;
    }

    /// <summary>
    /// Dynamic right-sizing (Linux's tcp_rcv_space_adjust), after the application read: once a round trip has
    /// passed, what it read in that time is the rate to cover. The buffer becomes twice that (a loss costs a round
    /// trip), plus sixteen segments of headroom, plus twice the growth since the last round (a sender in slow start
    /// doubles each round, and the window offered now is used a round later), up to the ring. It never shrinks, and
    /// a slow reader, who never reads more per round than before, never grows it.
    /// </summary>
    private void TcpRcvSpaceAdjust(int c)
    {
        ref var t = ref _tcp[c];
        long rtt = t.RcvRtt != 0 ? t.RcvRtt : t.Srtt;
        if (rtt == 0 || _now - t.RcvSpaceTime < rtt)
            return;
        int copied = (int)(t.RcvRead - t.RcvSpaceSeq);
        if (copied > t.RcvSpace)
        {
            if (Options.TcpModerateRcvbuf && !t.RcvBufLocked && t.RcvSpace > 0)
            {
                long window = 2L * copied + 16L * TcpOwnMss;
                long grow = window * (copied - t.RcvSpace) / t.RcvSpace;
                window += 2 * grow;
                int buffer = (int)Math.Min(window, _tcp.ReceiveBufferSize);
                if (buffer > t.RcvBufSize)
                    SetReceiveBufferSize(c, buffer);
            }
            t.RcvSpace = copied;
        }
        t.RcvSpaceSeq = t.RcvRead;
        t.RcvSpaceTime = _now;
    }

    /// <summary>
    /// The receiver's round-trip time from the timestamp a data segment echoes (Linux's tcp_rcv_rtt_measure_ts):
    /// one sample per echoed value, from full-sized segments only (a smaller one may have waited on the application).
    /// Lower samples are taken at once, higher ones smoothed in only while nothing waits to be read.
    /// </summary>
    private void TcpRcvRttMeasure(int c, in TcpOptions options, int payloadLength)
    {
        ref var t = ref _tcp[c];
        if (!t.Timestamps || !options.HasTimestamps || options.TsEcr == 0 || options.TsEcr == t.RcvRttLastTsEcr)
            return;
        t.RcvRttLastTsEcr = options.TsEcr;
        if (payloadLength < t.SndMss)
            return;
        int ticks = (int)(TcpTimestampNow - options.TsEcr);
        if (ticks < 0)
            return;
        long sample = Math.Max(1, ticks) * 1_000_000L; // the clock's 1 ms tick at least, as Linux
        if (t.RcvRtt == 0 || sample < t.RcvRtt)
            t.RcvRtt = sample;
        else if (t.RcvNxt == t.RcvRead)
            t.RcvRtt += (sample - t.RcvRtt) / 8;
    }

    /// <summary>
    /// Linux's tcp_sndbuf_expand: room for twice the congestion window in segments (at least the initial window;
    /// CUBIC's fast recovery needs 1.7, rounded up), each counted as Linux counts a segment's memory (its
    /// worst-case skb truesize, about three MSS: 87,040 bytes for ten 1448-byte segments, the figure Linux reports
    /// after a handshake), up to the ring. Our ring holds payload only, so the buffer goes as far as Linux's does
    /// with segmentation offload. Only when SO_SNDBUF was not set, and — as tcp_should_expand_sndbuf — not while
    /// the congestion window is full, when a larger buffer would not send more.
    /// </summary>
    private void TcpSndBufExpand(int c)
    {
        ref var t = ref _tcp[c];
        if (t.SndBufLocked || (t.State != TcpState.Established && t.State != TcpState.CloseWait))
            return;
        long segments = Math.Max(TcpInitialWindowSegments, t.Cwnd / Math.Max(1u, t.SndMss));
        int buffer = (int)Math.Min(2 * segments * SegmentMemory(t.SndMss), _tcp.SendBufferSize);
        if (buffer > t.SndBufSize && EffectivePipe(c) < t.Cwnd)
            SetSendBufferSize(c, buffer);
    }

    /// <summary>Linux's per_mss in tcp_sndbuf_expand: a segment with MAX_TCP_HEADER (320) and skb_shared_info (320)
    /// in a power-of-two head, plus the sk_buff (256).</summary>
    private static long SegmentMemory(int mss) => BitOperations.RoundUpToPowerOf2((uint)(mss + 12 + 320 + 320)) + 256;

    /// <summary>Sets the receive buffer, first doubling the ring's in-use extent in place as often as it must to
    /// hold it; the data already in the ring (read position to the highest byte held) moves with it.</summary>
    private void SetReceiveBufferSize(int c, int bytes)
    {
        ref var t = ref _tcp[c];
        if (t.RcvLent > 0)
            bytes = Math.Min(bytes, t.RcvRingSize); // lent bytes must not move: grow once they are back
        if (t.RcvRingSize < bytes)
        {
            uint end = t.RcvNxt;
            for (int i = 0; i < t.OutOfOrder.Count; i++)
                end = Seq.Max(end, t.OutOfOrder[i].End);
            int held = (int)(end - t.RcvRead);
            while (t.RcvRingSize < bytes && t.RcvRingSize < _tcp.ReceiveBufferSize)
            {
                t.RcvRingSize *= 2;
                ByteRing.Double(_tcp.ReceiveRing(c), t.RcvRead - t.Irs - 1, held);
            }
        }
        t.RcvBufSize = bytes;
    }

    private void SetSendBufferSize(int c, int bytes)
    {
        ref var t = ref _tcp[c];
        if (t.SndReserved)
            return; // the application is writing into the ring: it grows at the next chance
        while (t.SndRingSize < bytes && t.SndRingSize < _tcp.SendBufferSize)
        {
            t.SndRingSize *= 2;
            ByteRing.Double(_tcp.SendRing(c), t.SndUna - t.Iss - 1, t.SndQueued);
        }
        t.SndBufSize = bytes;
    }

    /// <summary>setsockopt(SO_RCVBUF): as Linux, the value doubled (at least SOCK_MIN_RCVBUF, here at most the ring)
    /// and auto-tuning off for the socket. Set before connect or listen, it also sizes the window scale. The
    /// window already offered is never taken back (RFC 9293 §3.8.6.2.2).</summary>
    public int TcpSetReceiveBuffer(int c, int bytes)
    {
        if (!_tcp.IsValid(c))
            return -(int)Errno.EBADF;
        ref var t = ref _tcp[c];
        int size = (int)Math.Clamp(2L * Math.Max(0, bytes), TcpMinBufferBytes, _tcp.ReceiveBufferSize);
        t.RcvBufLocked = true;
        SetReceiveBufferSize(c, size);
        if (t.State is TcpState.Closed or TcpState.Listen)
            ChooseWindowShift(ref t);
        return 0;
    }

    /// <summary>setsockopt(SO_SNDBUF): the value doubled, as Linux (at least SOCK_MIN_SNDBUF, at most the ring), and
    /// no growth with cwnd for the socket. Data already queued stays; send() takes more once it is below the size.</summary>
    public int TcpSetSendBuffer(int c, int bytes)
    {
        if (!_tcp.IsValid(c))
            return -(int)Errno.EBADF;
        ref var t = ref _tcp[c];
        int size = (int)Math.Clamp(2L * Math.Max(0, bytes), TcpMinBufferBytes, _tcp.SendBufferSize);
        t.SndBufLocked = true;
        SetSendBufferSize(c, size);
        return 0;
    }

    /// <summary>getsockopt(SO_RCVBUF): the receive buffer now (auto-tuned, or twice what SO_RCVBUF was given).</summary>
    public int TcpGetReceiveBuffer(int c) => _tcp.IsValid(c) ? _tcp[c].RcvBufSize : -(int)Errno.EBADF;

    /// <summary>getsockopt(SO_SNDBUF): the send buffer now.</summary>
    public int TcpGetSendBuffer(int c) => _tcp.IsValid(c) ? _tcp[c].SndBufSize : -(int)Errno.EBADF;
}
