using System.Buffers.Binary;
using System.Runtime.InteropServices;
using Onload.Vnic.Native;

namespace Onload.Driverlink;

/// <summary>
/// An established TCP connection as the kernel needs it to take the connection over (issue 7): the 4-tuple, the
/// sequence space, the windows and the options negotiated at the handshake. Addresses and ports in host byte order.
/// </summary>
/// <param name="SndUna">The first unacknowledged byte: the send queue starts here.</param>
/// <param name="RcvNxt">The next byte expected from the peer, not counting a FIN received.</param>
/// <param name="SndWnd">The peer's window (bytes, unscaled) as of <paramref name="SndWl1"/>.</param>
/// <param name="SndWl1">The sequence number of the segment that last updated <paramref name="SndWnd"/> (RFC 9293 3.3.1).</param>
/// <param name="RcvWnd">Our window (bytes, unscaled) to the right of <paramref name="RcvNxt"/>: its right edge must not move left.</param>
/// <param name="MaxWindow">The largest window the peer has offered (bytes, unscaled).</param>
/// <param name="SndWscale">The peer's window shift (RFC 7323 2.2).</param>
/// <param name="RcvWscale">Our window shift.</param>
/// <param name="TsVal">The TSval our next segment would carry (the millisecond clock of RFC 7323 5.4).</param>
/// <param name="PeerClosed">The peer's FIN arrived: after the restore the read side is shut, so reads give the
/// queued data, then 0.</param>
public readonly record struct TcpRepairState(
    uint LocalAddress, ushort LocalPort, uint RemoteAddress, ushort RemotePort,
    uint SndUna,
    uint RcvNxt,
    uint SndWnd, uint SndWl1, uint RcvWnd, uint MaxWindow,
    ushort Mss, bool WindowScaling, byte SndWscale, byte RcvWscale,
    bool Timestamps, uint TsVal,
    bool Sack,
    bool PeerClosed);

/// <summary>
/// Makes an unconnected kernel TCP socket into an established connection with Linux's TCP_REPAIR, as CRIU's
/// libsoccr restores a checkpointed one: in repair mode the kernel takes the sequence numbers, options, windows and
/// queued bytes it is given and sends nothing, not even a SYN; when repair mode ends it sends a window probe, and the
/// connection carries on from where the previous owner left it. Needs CAP_NET_ADMIN: onload-driverd calls it for its
/// clients.
/// </summary>
public static unsafe class TcpRepair
{
    // uapi/linux/tcp.h
    private const int SOL_TCP = 6;
    private const int TCP_REPAIR = 19;
    private const int TCP_REPAIR_QUEUE = 20;
    private const int TCP_QUEUE_SEQ = 21;
    private const int TCP_REPAIR_OPTIONS = 22;
    private const int TCP_TIMESTAMP = 24;
    private const int TCP_REPAIR_WINDOW = 29;
    private const int TCP_RECV_QUEUE = 1;
    private const int TCP_SEND_QUEUE = 2;
    private const uint TCPOPT_MSS = 2;
    private const uint TCPOPT_WINDOW = 3;
    private const uint TCPOPT_SACK_PERM = 4;
    private const uint TCPOPT_TIMESTAMP = 8;
    // asm-generic/socket.h, linux/socket.h
    private const int SOL_SOCKET = 1;
    private const int SO_SNDBUF = 7;
    private const int SO_RCVBUF = 8;
    private const int SO_SNDBUFFORCE = 32;
    private const int SO_RCVBUFFORCE = 33;
    private const int SO_DOMAIN = 39;
    private const int AF_UNSPEC = 0;
    private const int AF_INET = 2;
    private const int AF_INET6 = 10;
    private const int MSG_DONTWAIT = 0x40;
    private const int MSG_NOSIGNAL = 0x4000;
    private const int SHUT_RD = 0;

    /// <summary>
    /// Makes <paramref name="fd"/> (an unconnected TCP socket, AF_INET or dual-stack AF_INET6) the connection
    /// <paramref name="s"/> describes. <paramref name="sent"/>: the bytes [SndUna, SND.NXT) sent but not yet
    /// acknowledged; <paramref name="unsent"/>: the queued bytes after them; <paramref name="received"/>: the unread
    /// bytes, ending at RcvNxt. Returns 0, or a negated errno with the step that failed in <paramref name="failure"/>.
    /// </summary>
    /// <remarks>
    /// A failure before repair mode ends leaves the socket unconnected (the 4-tuple free to restore again), still in
    /// repair mode (so that its close is silent too), having sent nothing. A failure after it (the unsent bytes did not all fit) leaves the connection
    /// the kernel's, short of those bytes. The caller keeps its descriptor either way.
    /// </remarks>
    public static int Restore(int fd, in TcpRepairState s, ReadOnlySpan<byte> sent, ReadOnlySpan<byte> unsent,
                              ReadOnlySpan<byte> received, out string? failure)
    {
        failure = null;
        if (s.Mss == 0)
        {
            failure = "an MSS of 0";
            return -Errno.EINVAL;
        }
        int domain = 0;
        uint length = sizeof(int);
        if (Libc.GetSockOpt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &length) != 0)
            return Failed("getsockopt(SO_DOMAIN)", out failure);
        if (domain is not (AF_INET or AF_INET6))
        {
            failure = $"a socket of address family {domain}, not AF_INET or AF_INET6";
            return -Errno.EAFNOSUPPORT;
        }
        if (SetInt(fd, SOL_TCP, TCP_REPAIR, 1) != 0)
            return Failed("TCP_REPAIR on", out failure);
        int rc = RestoreInRepair(fd, domain, s, sent, unsent.Length, received, out failure);
        if (rc != 0)
            return rc;
        if (SetInt(fd, SOL_TCP, TCP_REPAIR, 0) != 0)
            return Failed("TCP_REPAIR off", out failure);
        // Never sent: an ordinary write, which the kernel sends as the windows allow. Room was made for it above.
        rc = Write(fd, unsent, out failure, "writing the unsent bytes");
        if (rc != 0)
            return rc;
        if (s.PeerClosed && Libc.Shutdown(fd, SHUT_RD) != 0)
            return Failed("shutdown(SHUT_RD) for the peer's FIN", out failure);
        return 0;
    }

    /// <summary>The steps in repair mode, in libsoccr's order: queue sequence numbers (only while closed), bind and
    /// connect (no SYN), then the rest of the connection (<see cref="RestoreConnected"/>).</summary>
    private static int RestoreInRepair(int fd, int domain, in TcpRepairState s, ReadOnlySpan<byte> sent, int unsentLength,
                                       ReadOnlySpan<byte> received, out string? failure)
    {
        failure = null;
        if (SetInt(fd, SOL_TCP, TCP_REPAIR_QUEUE, TCP_SEND_QUEUE) != 0 || SetInt(fd, SOL_TCP, TCP_QUEUE_SEQ, (int)s.SndUna) != 0)
            return Failed("the send queue's sequence number", out failure);
        if (SetInt(fd, SOL_TCP, TCP_REPAIR_QUEUE, TCP_RECV_QUEUE) != 0 ||
            SetInt(fd, SOL_TCP, TCP_QUEUE_SEQ, (int)(s.RcvNxt - (uint)received.Length)) != 0)
            return Failed("the receive queue's sequence number", out failure);

        // Repair mode forces port reuse: the client's backing socket still holds the local port.
        if (Address(fd, domain, s.LocalAddress, s.LocalPort, bind: true) != 0)
            return Failed("bind to the local address", out failure);
        if (Address(fd, domain, s.RemoteAddress, s.RemotePort, bind: false) != 0)
            return Failed("connect to the remote address", out failure);
        int rc = RestoreConnected(fd, s, sent, unsentLength, received, out failure);
        if (rc != 0)
        {
            // Off the kernel's tables, silently (repair mode): the peer's segments must not reach a socket half made.
            var unspec = new SockAddrIn { Family = AF_UNSPEC };
            _ = Libc.Connect(fd, &unspec, (uint)sizeof(SockAddrIn));
        }
        return rc;
    }

    /// <summary>The connected socket's state, still in repair mode: the handshake's options, the timestamp clock,
    /// the queued bytes, the windows.</summary>
    private static int RestoreConnected(int fd, in TcpRepairState s, ReadOnlySpan<byte> sent, int unsentLength,
                                        ReadOnlySpan<byte> received, out string? failure)
    {
        failure = null;
        // struct tcp_repair_opt { u32 opt_code; u32 opt_val; }, one per option the handshake agreed.
        var options = stackalloc uint[8];
        int n = 0;
        options[n++] = TCPOPT_MSS;
        options[n++] = s.Mss;
        if (s.WindowScaling)
        {
            options[n++] = TCPOPT_WINDOW;
            options[n++] = s.SndWscale | (uint)s.RcvWscale << 16;
        }
        if (s.Sack)
        {
            options[n++] = TCPOPT_SACK_PERM;
            options[n++] = 0;
        }
        if (s.Timestamps)
        {
            options[n++] = TCPOPT_TIMESTAMP;
            options[n++] = 0;
        }
        if (Libc.SetSockOpt(fd, SOL_TCP, TCP_REPAIR_OPTIONS, options, (uint)(n * sizeof(uint))) != 0)
            return Failed("TCP_REPAIR_OPTIONS", out failure);
        // The kernel's TSval continues from ours. The value's low bit asks for a microsecond clock (Linux 6.7): keep
        // the millisecond one, rounding up so that TSval never goes back (RFC 7323 5.4).
        if (s.Timestamps && SetInt(fd, SOL_TCP, TCP_TIMESTAMP, (int)((s.TsVal + 1) & ~1u)) != 0)
            return Failed("TCP_TIMESTAMP", out failure);

        // Written in repair mode, the send queue counts as sent: the kernel retransmits it when its timer says so.
        // Room first for what goes after it too, the unsent bytes written once repair mode is off.
        int rc = Raise(fd, SO_SNDBUF, SO_SNDBUFFORCE, (long)sent.Length + unsentLength, out failure);
        if (rc != 0)
            return rc;
        if (SetInt(fd, SOL_TCP, TCP_REPAIR_QUEUE, TCP_SEND_QUEUE) != 0)
            return Failed("selecting the send queue", out failure);
        rc = Write(fd, sent, out failure, "queueing the sent bytes");
        if (rc != 0)
            return rc;
        rc = Raise(fd, SO_RCVBUF, SO_RCVBUFFORCE, received.Length, out failure);
        if (rc != 0)
            return rc;
        if (SetInt(fd, SOL_TCP, TCP_REPAIR_QUEUE, TCP_RECV_QUEUE) != 0)
            return Failed("selecting the receive queue", out failure);
        rc = Write(fd, received, out failure, "queueing the received bytes");
        if (rc != 0)
            return rc;

        // struct tcp_repair_window { snd_wl1, snd_wnd, max_window, rcv_wnd, rcv_wup }: rcv_wup at RcvNxt, so the
        // right edge we advertised, RcvNxt + RcvWnd, stays where it was.
        var window = stackalloc uint[5] { s.SndWl1, s.SndWnd, s.MaxWindow, s.RcvWnd, s.RcvNxt };
        if (Libc.SetSockOpt(fd, SOL_TCP, TCP_REPAIR_WINDOW, window, 5 * sizeof(uint)) != 0)
            return Failed("TCP_REPAIR_WINDOW", out failure);
        return 0;
    }

    /// <summary>bind or connect to an IPv4 address: a sockaddr_in, or on an AF_INET6 socket the v4-mapped
    /// ::ffff:a.b.c.d (which a dual-stack socket speaks IPv4 to).</summary>
    private static int Address(int fd, int domain, uint address, ushort port, bool bind)
    {
        if (domain == AF_INET)
        {
            var v4 = SockAddrIn.Create(address, port);
            return bind ? Libc.Bind(fd, &v4, (uint)sizeof(SockAddrIn)) : Libc.Connect(fd, &v4, (uint)sizeof(SockAddrIn));
        }
        // struct sockaddr_in6: family (2), port (2), flowinfo (4), address (16), scope id (4).
        byte* v6 = stackalloc byte[28];
        new Span<byte>(v6, 28).Clear();
        BinaryPrimitives.WriteUInt16LittleEndian(new Span<byte>(v6, 2), AF_INET6);
        BinaryPrimitives.WriteUInt16BigEndian(new Span<byte>(v6 + 2, 2), port);
        v6[18] = 0xff;
        v6[19] = 0xff;
        BinaryPrimitives.WriteUInt32BigEndian(new Span<byte>(v6 + 20, 4), address);
        return bind ? Libc.Bind(fd, v6, 28) : Libc.Connect(fd, v6, 28);
    }

    /// <summary>
    /// Makes the socket's buffer hold <paramref name="bytes"/> more: the kernel refuses a repair-mode write that does
    /// not fit rather than waiting, and each queued segment costs its truesize, up to twice its payload. Raised only
    /// when the default is too small: setting a size locks it, and the connection loses the kernel's autotuning.
    /// </summary>
    private static int Raise(int fd, int option, int force, long bytes, out string? failure)
    {
        failure = null;
        long needed = 2 * bytes + 8192;
        int current = 0;
        uint length = sizeof(int);
        if (Libc.GetSockOpt(fd, SOL_SOCKET, option, &current, &length) != 0)
            return Failed(option == SO_SNDBUF ? "getsockopt(SO_SNDBUF)" : "getsockopt(SO_RCVBUF)", out failure);
        // The kernel doubles the value set (socket(7)), and reports the doubled one.
        if (current < needed && SetInt(fd, SOL_SOCKET, force, (int)Math.Min(int.MaxValue / 2, (needed + 1) / 2)) != 0)
            return Failed(force == SO_SNDBUFFORCE ? "SO_SNDBUFFORCE" : "SO_RCVBUFFORCE", out failure);
        return 0;
    }

    /// <summary>Writes all of <paramref name="bytes"/> to the queue selected, in as many sends as the kernel takes;
    /// no room is a failure, never a wait (MSG_DONTWAIT), and a vanished peer an errno, not SIGPIPE.</summary>
    private static int Write(int fd, ReadOnlySpan<byte> bytes, out string? failure, string step)
    {
        failure = null;
        fixed (byte* p = bytes)
        {
            int done = 0;
            while (done < bytes.Length)
            {
                nint n = Libc.SendTo(fd, p + done, (nuint)(bytes.Length - done), MSG_DONTWAIT | MSG_NOSIGNAL, null, 0);
                if (n < 0)
                {
                    int e = Marshal.GetLastPInvokeError();
                    if (e == Errno.EINTR)
                        continue;
                    failure = $"{step}: {done} of {bytes.Length} bytes written, then errno {e}";
                    return -e;
                }
                if (n == 0)
                {
                    failure = $"{step}: {done} of {bytes.Length} bytes written, then no room";
                    return -Errno.ENOBUFS;
                }
                done += (int)n;
            }
        }
        return 0;
    }

    private static int SetInt(int fd, int level, int option, int value) => Libc.SetSockOpt(fd, level, option, &value, sizeof(int));

    private static int Failed(string step, out string failure)
    {
        int e = Marshal.GetLastPInvokeError();
        failure = $"{step}: errno {e}";
        return -e;
    }
}
