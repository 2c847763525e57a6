using Onload.Stack.Tcp;

namespace Onload.Stack;

/// <summary>
/// Zero-copy TCP: the application reads received bytes where they lie in the connection's receive ring and writes
/// bytes to send straight into its send ring (the C API's onload_zc_* calls, preload/shim/onload_ext.c).
/// </summary>
/// <remarks>
/// Lent receive bytes stay in the ring and in the window until returned: a reader that holds them closes the window
/// (back-pressure), and the ring neither grows nor moves them meanwhile. Returns come in any order from the
/// application; the caller (the C library keeps the list of pieces) returns bytes here only from the read point on.
/// A send reservation is the free space after the queued bytes; committing queues what was written as send() would.
/// </remarks>
public sealed partial class NetStack
{
    /// <summary>
    /// Lends up to <paramref name="max"/> unread bytes: the run after those already lent, up to the ring's wrap.
    /// Returns its length with <paramref name="data"/> pointing at it, or what recv() says with nothing to read
    /// (0 at end of stream, a pending error, -EAGAIN).
    /// </summary>
    public unsafe int TcpReceiveLend(int c, int max, out nint data)
    {
        data = 0;
        if (!_tcp.IsValid(c))
            return -(int)Errno.EBADF;
        ref var t = ref _tcp[c];
        if (t.State == TcpState.Listen)
            return -(int)Errno.EINVAL;
        int readable = t.Readable;
        if (readable <= 0 || max <= 0)
            return max <= 0 && readable > 0 ? -(int)Errno.EINVAL : NothingToRead(ref t);
        var ring = _tcp.ReceiveRing(c);
        int at = (int)((t.RcvRead + (uint)t.RcvLent - t.Irs - 1) & (uint)(ring.Length - 1));
        int n = Math.Min(Math.Min(readable, max), ring.Length - at);
        t.RcvLent += n;
        fixed (byte* p = ring)
            data = (nint)(p + at);
        return n;
    }

    /// <summary>The application is done with the first <paramref name="n"/> lent bytes: they leave the ring and the
    /// window opens, as a read would have.</summary>
    public int TcpReceiveReturn(int c, int n)
    {
        if (!_tcp.IsValid(c))
            return -(int)Errno.EBADF;
        ref var t = ref _tcp[c];
        if (n < 0 || n > t.RcvLent)
            return -(int)Errno.EINVAL;
        t.RcvLent -= n;
        Consumed(c, n);
        return 0;
    }

    /// <summary>
    /// Reserves the send ring's free space after the queued bytes, up to its wrap: its length, with
    /// <paramref name="data"/> pointing at it and <paramref name="position"/> its place in the byte stream (data bytes
    /// queued before it since the connection opened). What send() says otherwise: -EAGAIN with no room, -EPIPE, an error.
    /// Until <see cref="TcpSendCommit"/>, copied sends on the connection get -EBUSY.
    /// </summary>
    public unsafe int TcpSendReserve(int c, out nint data, out long position)
    {
        data = 0;
        position = 0;
        if (!_tcp.IsValid(c))
            return -(int)Errno.EBADF;
        ref var t = ref _tcp[c];
        if (t.SndReserved)
            return -(int)Errno.EBUSY;
        if (SendRefused(ref t) is var refused and < 0)
            return refused;
        int room = t.SndBufSize - t.SndQueued;
        if (room <= 0)
            return -(int)Errno.EAGAIN;
        var ring = _tcp.SendRing(c);
        int at = (int)((t.SndUna + (uint)t.SndQueued - t.Iss - 1) & (uint)(ring.Length - 1));
        int n = Math.Min(room, ring.Length - at);
        t.SndReserved = true;
        position = t.BytesAcked + t.SndQueued;
        fixed (byte* p = ring)
            data = (nint)(p + at);
        return n;
    }

    /// <summary>Queues the first <paramref name="n"/> bytes of the reservation (0 abandons it) and sends what the
    /// windows allow. Returns <paramref name="n"/>.</summary>
    public int TcpSendCommit(int c, int n)
    {
        if (!_tcp.IsValid(c))
            return -(int)Errno.EBADF;
        ref var t = ref _tcp[c];
        if (!t.SndReserved)
            return -(int)Errno.EINVAL;
        if (n < 0 || n > t.SndBufSize - t.SndQueued)
            return -(int)Errno.EINVAL;
        t.SndReserved = false;
        if (n == 0)
            return 0;
        if (t.Dead || t.State is not (TcpState.Established or TcpState.CloseWait))
            return -(int)Errno.EPIPE; // the connection ended while the application wrote
        t.SndQueued += n;
        TcpOutput(c);
        Mirror(c);
        Flush();
        return n;
    }

    /// <summary>Data bytes the peer has acknowledged since the connection opened: a zero-copy send whose end is at
    /// or before it is complete. -EBADF for a handle that is not a connection.</summary>
    public long TcpSendAcked(int c) => _tcp.IsValid(c) ? _tcp[c].BytesAcked : -(int)Errno.EBADF;
}
