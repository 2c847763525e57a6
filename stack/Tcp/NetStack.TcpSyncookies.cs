using System.Buffers.Binary;
using Onload.Stack.Tcp;
using Onload.Stack.Wire;

namespace Onload.Stack;

// SYN cookies (RFC 4987 §3.6) as Linux's net.ipv4.tcp_syncookies = 1: only when a listener's SYN queue is full, a
// SYN is answered with a SYN-ACK whose ISN is a cookie (SynCookies) and nothing is kept; the ACK that brings the
// cookie back creates the connection straight into the accept queue. A flood of spoofed SYNs then costs a SYN-ACK
// each and no row, while real clients, whose ACKs come back, are still served.
public sealed partial class NetStack
{
    private const long SynCookieLifetimeNs = SynCookies.MaxAgeMinutes * 60_000_000_000L;

    private SynCookies.Tuple CookieTuple(int listener, Ipv4Address remote, ushort remotePort) =>
        new(_address, _tcp[listener].LocalPort, remote, remotePort);

    /// <summary>The cookie key: apart from the ISN key (RFC 6528) but derived from it, so a stack's random stream
    /// (and the simulator's runs) stay as they were.</summary>
    private (ulong, ulong) SynCookieKey => (_synCookieKey0, _synCookieKey1);

    private static ulong DeriveSynCookieKey(ulong isnKey0, ulong isnKey1, ulong which) =>
        SipHash.Hash(isnKey1, isnKey0, 0x7379_6e63_6f6f_6b69UL, which); // "syncooki"

    /// <summary>A SYN that found the SYN queue full: a SYN-ACK carrying a cookie, and no state. Without timestamps
    /// there is nowhere to keep window scale and SACK, so the SYN-ACK offers neither (Linux's tcp_clear_options).</summary>
    private void TcpSendSynCookie(int listener, Ipv4Address remote, TcpSegment seg, in TcpOptions options)
    {
        ref var l = ref _tcp[listener];
        int buffer = AllocateTx();
        if (buffer < 0)
            return;
        var (key0, key1) = SynCookieKey;
        int mssIndex = SynCookies.MssIndex(options.Mss != 0 ? options.Mss : 536);
        uint cookie = SynCookies.Make(key0, key1, CookieTuple(listener, remote, seg.SourcePort), seg.SequenceNumber,
            SynCookies.Minutes(_now), mssIndex);
        bool timestamps = options.HasTimestamps;
        bool sack = timestamps && options.SackPermitted && Options.TcpSack;
        bool scaling = timestamps && options.WindowScale >= 0;

        // The window and scale the connection will have, as TcpInitialiseBuffers gives it from this listener.
        int rcvBuf = l.RcvBufLocked ? l.RcvBufSize : Math.Min(Options.TcpReceiveBufferInitialBytes, _tcp.ReceiveBufferSize);
        byte shift = WindowShiftFor(l.RcvBufLocked ? l.RcvBufSize : _tcp.ReceiveBufferSize);

        var segment = _pool.Span(buffer)[IpPayloadOffset..];
        var o = segment[TcpSegment.MinHeaderLength..];
        int n = 0;
        o[n++] = TcpSegment.OptionMss;
        o[n++] = 4;
        BinaryPrimitives.WriteUInt16BigEndian(o[n..], (ushort)TcpOwnMss);
        n += 2;
        o[n++] = sack ? TcpSegment.OptionSackPermitted : TcpSegment.OptionNop;
        o[n++] = sack ? (byte)2 : TcpSegment.OptionNop;
        if (timestamps)
        {
            o[n++] = TcpSegment.OptionTimestamps;
            o[n++] = 10;
            BinaryPrimitives.WriteUInt32BigEndian(o[n..], SynCookies.EncodeTimestamp(TcpTimestampNow, options.WindowScale, sack));
            BinaryPrimitives.WriteUInt32BigEndian(o[(n + 4)..], options.TsVal);
            n += 8;
        }
        if (scaling)
        {
            o[n++] = TcpSegment.OptionNop;
            o[n++] = TcpSegment.OptionWindowScale;
            o[n++] = 3;
            o[n++] = shift;
        }
        while ((n & 3) != 0)
            o[n++] = TcpSegment.OptionEnd;
        int headerLength = TcpSegment.MinHeaderLength + n;
        var tcp = new TcpSegment(segment);
        tcp.WriteHeader(l.LocalPort, seg.SourcePort, cookie, seg.SequenceNumber + 1, TcpFlags.Syn | TcpFlags.Ack,
            (ushort)Math.Min(rcvBuf, ushort.MaxValue), n);
        tcp.FillChecksum(_address, remote, headerLength);
        l.LastSynCookieAt = _now;
        l.SynCookiesSent = true;
        Counters.TcpOutSegs++;
        Counters.TcpExtSyncookiesSent++;
        Ipv4Output(buffer, remote, IpProtocol.Tcp, headerLength, dontFragment: true);
    }

    /// <summary>
    /// An ACK to a listener (Linux's cookie_v4_check): if the listener sent cookies lately and the ACK's
    /// acknowledgement number less one is a good cookie for its tuple and sequence number less one, the connection
    /// the SYN asked for is made from what the cookie and the ACK's TSecr carry, and the ACK (with any data it
    /// brings) is processed on it. Returns false when the ACK is to be answered with a RST.
    /// </summary>
    private bool SynCookieAckInput(int listener, Ipv4Address remote, TcpSegment seg, in TcpOptions options)
    {
        ref var l = ref _tcp[listener];
        if (!Options.TcpSyncookies || !l.SynCookiesSent || _now - l.LastSynCookieAt >= SynCookieLifetimeNs)
            return false;
        var (key0, key1) = SynCookieKey;
        uint cookie = seg.AcknowledgmentNumber - 1;
        uint peerIsn = seg.SequenceNumber - 1;
        int mssIndex = SynCookies.Check(key0, key1, CookieTuple(listener, remote, seg.SourcePort), peerIsn,
            SynCookies.Minutes(_now), cookie);
        if (mssIndex < 0)
        {
            Counters.TcpExtSyncookiesFailed++;
            return false;
        }
        Counters.TcpExtSyncookiesRecv++;
        if (l.AcceptQueueLength >= Math.Max(1, l.Backlog))
            return ListenOverflowDrop(); // Linux's syn_recv_sock refuses too; the peer's retransmission tries again
        int c = AllocateTcpRow();
        if (c < 0)
            return ListenOverflowDrop();

        // The SYN, as far as the cookie remembers it.
        var syn = new TcpOptions { Mss = SynCookies.MssTable[mssIndex], WindowScale = -1 };
        if (options.HasTimestamps)
        {
            var (windowScale, sack) = SynCookies.DecodeTimestamp(options.TsEcr);
            syn.HasTimestamps = true;
            syn.TsVal = options.TsVal;
            syn.WindowScale = (sbyte)windowScale;
            syn.SackPermitted = sack;
        }
        OpenChild(c, listener, remote, seg, peerIsn, cookie, syn);
        // The ACK completes the handshake as in SYN-RECEIVED: established, queued for accept, its data taken. Its
        // TSecr, our SYN-ACK's TSval less at most 63 ms, gives the first RTT sample, as on Linux.
        SynchronizedInput(c, seg, options);
        if (_tcp.IsValid(c))
        {
            TcpOutput(c);
            Mirror(c);
        }
        return true;
    }

    private bool ListenOverflowDrop()
    {
        Counters.TcpExtListenOverflows++;
        Dropped(DropReason.TcpListenOverflow);
        return true;
    }
}
