namespace Onload.Driverlink;

/// <summary>
/// Asks the daemon to make a kernel socket the accelerated TCP connection <see cref="State"/> describes (issue 7: a
/// connection inherited across fork or exec is handed to the kernel, whose TCP_REPAIR needs CAP_NET_ADMIN). Two
/// descriptors travel with it: the socket to restore into (unconnected TCP, AF_INET or dual-stack AF_INET6), and a
/// memfd sealed against shrinking that holds the sent, unsent and received bytes one after the other. Answered by
/// <see cref="TcpHandOverReply"/>.
/// </summary>
/// <remarks>
/// Payload (64 bytes): VNIC id (4), local address (4, network order), local port (2), remote port (2), remote
/// address (4, network order), SndUna (4), RcvNxt (4), SndWnd (4), SndWl1 (4), RcvWnd (4), MaxWindow (4), MSS (2),
/// SndWscale (1), RcvWscale (1), window scaling (1, 0 or 1), timestamps (1), SACK (1), peer closed (1), TSval (4),
/// sent length (4), unsent length (4), received length (4). Without window scaling both shifts are zero, without
/// timestamps TSval is; a shift is at most 14 (RFC 7323 2.3), and neither port is 0.
/// </remarks>
public sealed record TcpHandOver(uint VnicId, TcpRepairState State, uint SentLength, uint UnsentLength, uint ReceivedLength) : Message
{
    /// <summary>RFC 7323 2.3: a larger shift is treated as 14.</summary>
    public const byte MaxWindowShift = 14;

    public override MessageKind Kind => MessageKind.TcpHandOver;

    private protected override void WritePayload(ref PayloadWriter w)
    {
        var s = State;
        if (s.LocalPort == 0 || s.RemotePort == 0)
            throw new ArgumentException("a connection's ports are not 0", nameof(State));
        if (s.SndWscale > MaxWindowShift || s.RcvWscale > MaxWindowShift || (!s.WindowScaling && (s.SndWscale | s.RcvWscale) != 0))
            throw new ArgumentException("window shifts are at most 14, and 0 without window scaling", nameof(State));
        if (!s.Timestamps && s.TsVal != 0)
            throw new ArgumentException("a TSval without timestamps", nameof(State));
        w.U32(VnicId);
        w.Ipv4(s.LocalAddress);
        w.U16(s.LocalPort);
        w.U16(s.RemotePort);
        w.Ipv4(s.RemoteAddress);
        w.U32(s.SndUna);
        w.U32(s.RcvNxt);
        w.U32(s.SndWnd);
        w.U32(s.SndWl1);
        w.U32(s.RcvWnd);
        w.U32(s.MaxWindow);
        w.U16(s.Mss);
        w.U8(s.SndWscale);
        w.U8(s.RcvWscale);
        w.Bool(s.WindowScaling);
        w.Bool(s.Timestamps);
        w.Bool(s.Sack);
        w.Bool(s.PeerClosed);
        w.U32(s.TsVal);
        w.U32(SentLength);
        w.U32(UnsentLength);
        w.U32(ReceivedLength);
    }

    internal static TcpHandOver Read(ref PayloadReader r)
    {
        uint vnicId = r.U32();
        uint local = r.Ipv4();
        ushort localPort = r.U16();
        ushort remotePort = r.U16();
        uint remote = r.Ipv4();
        uint sndUna = r.U32(), rcvNxt = r.U32(), sndWnd = r.U32(), sndWl1 = r.U32(), rcvWnd = r.U32(), maxWindow = r.U32();
        ushort mss = r.U16();
        byte sndWscale = r.U8(), rcvWscale = r.U8();
        bool windowScaling = r.Bool(), timestamps = r.Bool(), sack = r.Bool(), peerClosed = r.Bool();
        uint tsVal = r.U32();
        uint sent = r.U32(), unsent = r.U32(), received = r.U32();
        if (localPort == 0 || remotePort == 0 || sndWscale > MaxWindowShift || rcvWscale > MaxWindowShift ||
            (!windowScaling && (sndWscale | rcvWscale) != 0) || (!timestamps && tsVal != 0))
            r.Fail(DecodeError.BadValue);
        var state = new TcpRepairState(local, localPort, remote, remotePort, sndUna, rcvNxt, sndWnd, sndWl1, rcvWnd, maxWindow,
            mss, windowScaling, sndWscale, rcvWscale, timestamps, tsVal, sack, peerClosed);
        return new TcpHandOver(vnicId, state, sent, unsent, received);
    }
}

/// <summary>
/// The answer to <see cref="TcpHandOver"/>: <see cref="Errno"/> 0 when the kernel holds the connection, else why
/// not (EPERM: not the client's VNIC, address or port; EINVAL: the descriptors or the memfd; else the step of the
/// restore that failed), with <see cref="Reason"/> saying which. Payload: errno (4, not negative), reason (string,
/// at most 255 bytes).
/// </summary>
public sealed record TcpHandOverReply(int Errno, string Reason) : Message
{
    public const int MaxReasonBytes = 255;

    public override MessageKind Kind => MessageKind.TcpHandOverReply;

    private protected override void WritePayload(ref PayloadWriter w)
    {
        if (Errno < 0)
            throw new ArgumentException("an errno is positive, or 0 for done", nameof(Errno));
        w.U32((uint)Errno);
        w.String(Reason, MaxReasonBytes, nameof(Reason));
    }

    internal static TcpHandOverReply Read(ref PayloadReader r)
    {
        uint errno = r.U32();
        string reason = r.String(MaxReasonBytes);
        if (errno > int.MaxValue)
            r.Fail(DecodeError.BadValue);
        return new TcpHandOverReply((int)errno, reason);
    }
}
