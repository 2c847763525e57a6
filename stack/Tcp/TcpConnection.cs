using Onload.Stack.Wire;

namespace Onload.Stack.Tcp;

/// <summary>Connection states (RFC 9293 §3.3.2).</summary>
public enum TcpState : byte
{
    Closed,
    Listen,
    SynSent,
    SynReceived,
    Established,
    FinWait1,
    FinWait2,
    CloseWait,
    Closing,
    LastAck,
    TimeWait,
}

/// <summary>The timers of one connection; timer id in the wheel = connection × <see cref="Count"/> + kind.</summary>
public enum TcpTimer
{
    /// <summary>The retransmission timer, doing one of the jobs in <see cref="RetransmitKind"/> at a time (as Linux's
    /// icsk_retransmit_timer): RTO, SYN/SYN-ACK retransmission, RACK's reordering timer, the tail loss probe, or the
    /// persist probe when the window is zero.</summary>
    Retransmit,
    DelayedAck,
    /// <summary>Keepalive while idle; 2MSL in TIME_WAIT.</summary>
    Keepalive,
    Count,
}

/// <summary>What the retransmission timer is armed for.</summary>
public enum RetransmitKind : byte
{
    Rto,
    /// <summary>RACK's reordering window ran out for a segment (RFC 8985 §6.2 step 5).</summary>
    Reorder,
    /// <summary>Tail loss probe (RFC 8985 §7.2).</summary>
    Probe,
}

/// <summary>The congestion controller of a connection (TCP_CONGESTION).</summary>
public enum CongestionControl : byte
{
    /// <summary>RFC 9438, the default as on Linux.</summary>
    Cubic,
    /// <summary>RFC 5681 with RFC 6582 recovery ("reno" on Linux).</summary>
    NewReno,
}

/// <summary>
/// One connection's control block (RFC 9293 §3.3.1), a row of a fixed unmanaged table. Names follow the RFC
/// (SND.UNA is <see cref="SndUna"/>) and Linux where the RFC has none.
/// </summary>
public struct TcpConnection
{
    public bool InUse;
    public TcpState State;
    /// <summary>Bound to a local port (by bind, listen or connect).</summary>
    public bool Bound;
    /// <summary>bind() named INADDR_ANY: until connected, getsockname says 0.0.0.0, as Linux.</summary>
    public bool BoundToAny;
    /// <summary>The row holds its port's reservation through <see cref="IStackControl.ReservePort"/> (driverlink
    /// mode), one per port however many rows share it: the port goes back with the last of them (and of the
    /// connections accepted on it). Connections accepted from a listener share its port and never hold it.</summary>
    public bool PortReserved;
    /// <summary>SO_REUSEADDR: may bind a port whose other holders set it too and are not listening.</summary>
    public bool ReuseAddr;
    /// <summary>SO_REUSEPORT: may bind a port whose other holders set it too, listeners included; the port's
    /// listeners then form a group that shares its connections.</summary>
    public bool ReusePort;
    /// <summary>A child of a listener not yet handed out by accept, or -1.</summary>
    public int Listener;
    /// <summary>Next connection in the listener's accept queue, or -1.</summary>
    public int AcceptNext;
    /// <summary>Neighbours in the listener's SYN queue (SYN-RECEIVED children), or -1.</summary>
    public int SynNext;
    public int SynPrev;
    /// <summary>Next connection in the same demultiplexing hash chain, or -1.</summary>
    public int HashNext;
    /// <summary>Neighbours in the stack's list of TIME_WAIT connections, oldest first, or -1.</summary>
    public int TimeWaitNext;
    public int TimeWaitPrev;
    /// <summary>Hashed into the connection table (has a remote end).</summary>
    public bool Hashed;

    public ushort LocalPort;
    public Ipv4Address RemoteAddress;
    public ushort RemotePort;

    // Listener only.
    public int Backlog;
    public int SynQueueLength;
    public int AcceptQueueLength;
    public int AcceptHead;
    public int AcceptTail;
    /// <summary>When this listener last answered a SYN with a cookie (valid if <see cref="SynCookiesSent"/>): an ACK
    /// is checked for a cookie only within a cookie's lifetime of it, as Linux's tcp_synq_no_recent_overflow.</summary>
    public long LastSynCookieAt;
    public bool SynCookiesSent;
    /// <summary>First child in SYN-RECEIVED, or -1: close resets them without scanning the table.</summary>
    public int SynHead;

    // Send sequence space (RFC 9293 §3.3.1).
    public uint Iss;
    public uint SndUna;
    /// <summary>The next new sequence number to send. Retransmissions resend recorded segments
    /// (<see cref="TcpSentSegment"/>) and never move it back.</summary>
    public uint SndNxt;
    public uint SndWnd;
    /// <summary>The largest window the peer has offered (RFC 5961 §5.2's MAX.SND.WND, Linux's max_window).</summary>
    public uint MaxSndWnd;
    /// <summary>When the last duplicate ACK answering an out-of-window ACK or SYN went (Linux's last_oow_ack_time).</summary>
    public long OutOfWindowAckAt;
    public uint SndWl1;
    public uint SndWl2;
    /// <summary>Bytes the application wrote that are not yet acknowledged: the send buffer holds [SND.UNA, SND.UNA + this).</summary>
    public int SndQueued;
    /// <summary>What send() may queue: grown with cwnd (Linux's tcp_sndbuf_expand) up to the ring, or set by SO_SNDBUF.</summary>
    public int SndBufSize;
    /// <summary>The part of the send ring in use (a power of two ≥ <see cref="SndBufSize"/>).</summary>
    public int SndRingSize;
    /// <summary>SO_SNDBUF was set: no growth with cwnd (Linux's SOCK_SNDBUF_LOCK).</summary>
    public bool SndBufLocked;
    /// <summary>Shift the peer applies to the windows it advertises (its Window Scale option).</summary>
    public byte SndWndShift;
    /// <summary>The payload of a full segment we send: the peer's MSS and ours (from the MTU), less the options
    /// every segment carries.</summary>
    public ushort SndMss;
    /// <summary>The MSS the peer offered on its SYN (536 if none); 0 before it is known.</summary>
    public ushort PeerMss;

    // Receive sequence space.
    public uint Irs;
    public uint RcvNxt;
    /// <summary>The sequence number of the next byte the application reads.</summary>
    public uint RcvRead;
    /// <summary>The right edge last advertised (RCV.NXT + RCV.WND when sent): never moved left (RFC 9293 §3.8.6.2).</summary>
    public uint RcvAdv;
    /// <summary>What the receive window may offer: auto-tuned (Linux's tcp_rcv_space_adjust) up to the ring, or set by
    /// SO_RCVBUF.</summary>
    public int RcvBufSize;
    /// <summary>The part of the receive ring in use (a power of two ≥ <see cref="RcvBufSize"/>).</summary>
    public int RcvRingSize;
    /// <summary>SO_RCVBUF was set: no auto-tuning (Linux's SOCK_RCVBUF_LOCK).</summary>
    public bool RcvBufLocked;
    /// <summary>Bytes from <see cref="RcvRead"/> lent to the application by zero-copy receive
    /// (NetStack.TcpZeroCopy.cs): read, but still in the ring and in the window until returned.</summary>
    public int RcvLent;
    /// <summary>Zero-copy send: the application is writing into the send ring past the queued bytes; the ring
    /// neither grows nor takes copied sends until it commits.</summary>
    public bool SndReserved;
    /// <summary>Zero-window probes sent since the peer last answered (Linux's icsk_probes_out).</summary>
    public int ProbesOut;
    /// <summary>Data bytes the peer has acknowledged since the connection opened (Linux's tcpi_bytes_acked, less
    /// the SYN and FIN).</summary>
    public long BytesAcked;
    /// <summary>Dynamic right-sizing (Linux's rcvq_space): bytes the application read in the last measured round
    /// trip, and where and when the current measurement began.</summary>
    public int RcvSpace;
    public uint RcvSpaceSeq;
    public long RcvSpaceTime;
    /// <summary>The receiver's round-trip estimate from echoed timestamps, ns (Linux's rcv_rtt_est); 0 until measured.</summary>
    public long RcvRtt;
    public uint RcvRttLastTsEcr;
    /// <summary>Shift we apply to the windows we advertise.</summary>
    public byte RcvWndShift;
    /// <summary>Out-of-order data already in the receive ring beyond RCV.NXT.</summary>
    public OutOfOrderRanges OutOfOrder;
    /// <summary>A duplicate received: the next ACK reports it in a D-SACK block (RFC 2883 §4), then clears it.</summary>
    public SeqRange Dsack;

    // Options negotiated.
    public bool WindowScaling;
    public bool Timestamps;
    public bool SackPermitted;
    public uint TsRecent;
    public long TsRecentAge;

    // Round-trip time (RFC 6298), in nanoseconds.
    public long Srtt;
    public long RttVar;
    public long Rto;
    public int Backoff;
    public long RetransmitStartedAt;
    /// <summary>When our SYN or SYN-ACK left, or 0 once it was sent again (Karn): the handshake's round trip is the
    /// first RTT sample, with or without timestamps, as Linux takes it.</summary>
    public long SynSentAt;
    /// <summary>Segments this connection sent again, SYNs included (Linux's tcpi_total_retrans): its share of
    /// <see cref="StackCounters.TcpRetransSegs"/>, for onload-stackdump and TCP_INFO.</summary>
    public uint TotalRetrans;

    // The scoreboard: records of the segments in [SND.UNA, SND.MAX) (TcpTable.SentSegments).
    public int SentHead;
    public int SentCount;
    /// <summary>Bytes in flight by RFC 6675's reckoning (<see cref="TcpSentSegment.InPipe"/>).</summary>
    public uint Pipe;
    /// <summary>Records SACKed, and records lost and waiting to be sent again.</summary>
    public int SackedCount;
    public int LostCount;
    /// <summary>Bytes in records SACKed (RFC 6937's DeliveredData counts its change).</summary>
    public uint SackedBytes;
    public RetransmitKind RetransmitKind;
    /// <summary>When the retransmission timer fires (clock ns), whatever its kind.</summary>
    public long RetransmitAt;

    // RACK (RFC 8985 §6.1).
    public long RackXmitTs;
    public uint RackEndSeq;
    public long RackRtt;
    public long RackMinRtt;
    /// <summary>The highest sequence delivered (cumulatively or by SACK): below it, a late delivery is reordering.</summary>
    public uint RackFack;
    public bool RackReorderingSeen;
    public byte RackReoWndMult;
    // Tail loss probe (RFC 8985 §7).
    public bool TlpOutstanding;
    public bool TlpRetransmitted;
    public bool TlpDsacked;
    public uint TlpHighSeq;

    // Congestion control (RFC 5681, NewReno RFC 6582, CUBIC RFC 9438).
    public CongestionControl Congestion;
    public uint Cwnd;
    public uint Ssthresh;
    /// <summary>Duplicate ACKs in a row; without SACK each stands for one segment that left the network.</summary>
    public int DupAcks;
    public bool InRecovery;
    /// <summary>The recovery began with a timeout (Linux's CA_Loss): slow start, no deflation at its end.</summary>
    public bool RtoRecovery;
    /// <summary>The highest sequence number sent when recovery began (RFC 6582 §3.2); recovery ends past it.</summary>
    public uint Recover;
    // Proportional rate reduction during fast recovery (RFC 6937 §3).
    public uint PrrDelivered;
    public uint PrrOut;
    public uint RecoverFs;
    public CubicState Cubic;

    // Closing.
    /// <summary>The application shut down sending: a FIN follows the queued data.</summary>
    public bool FinQueued;
    public bool FinSent;
    /// <summary>The peer's FIN was received in order: reads return 0 after the data.</summary>
    public bool FinReceived;
    public bool ShutdownRead;

    // Pending work.
    public bool AckNow;
    public int SegmentsSinceAck;
    /// <summary>A pending asynchronous error (ECONNRESET, ETIMEDOUT, ECONNREFUSED), reported once.</summary>
    public int Error;
    /// <summary>An ICMP error heard while synchronized (Linux's sk_err_soft): not fatal, reported if the connection
    /// then times out, or by getsockopt(SO_ERROR).</summary>
    public int SoftError;
    /// <summary>The path MTU an ICMP "fragmentation needed" set (RFC 1191), or 0 for the link's.</summary>
    public ushort PathMtu;
    /// <summary>The connection was reset or timed out: nothing more to read or send.</summary>
    public bool Dead;
    /// <summary>The application closed its handle; the stack frees the row when the connection ends.</summary>
    public bool Orphaned;

    // Socket options.
    public bool NoDelay;
    public bool Cork;
    public bool KeepAlive;
    public bool LingerZero;
    public long KeepIdleNs;
    public long KeepIntervalNs;
    public int KeepCount;
    public int KeepProbes;
    public long UserTimeoutNs;
    public long LastReceivedAt;

    /// <summary>The highest sequence number sent: SND.NXT itself, since SND.NXT never moves back.</summary>
    public readonly uint SndMax => SndNxt;

    /// <summary>Bytes readable now.</summary>
    public readonly int Readable => (int)(RcvNxt - RcvRead) - RcvLent - (FinReceived ? 1 : 0);
}
