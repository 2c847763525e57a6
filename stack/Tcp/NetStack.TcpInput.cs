using Onload.Stack.Memory;
using Onload.Stack.Tcp;
using Onload.Stack.Wire;
using Onload.Vnic;

namespace Onload.Stack;

// TCP input: segment arrival (RFC 9293 §3.10.7), with RFC 5961's defences, RFC 7323's PAWS and RFC 6582's
// NewReno. Data is copied from the frame into the connection's receive ring; the frame's buffer goes back at once.
public sealed partial class NetStack
{
    private bool TcpInput(in PacketDescriptor d, Ipv4Packet ip, bool broadcast)
    {
        var bytes = ip.Payload;
        var reason = TcpSegment.Validate(bytes, ip.Source, ip.Destination, (d.Flags & PacketFlags.ChecksumTrusted) != 0);
        if (reason != DropReason.None)
        {
            Counters.TcpInErrs++;
            return Dropped(reason);
        }
        if (broadcast)
            return Dropped(DropReason.TcpNoSocket); // TCP is unicast only (RFC 1122 §4.2.3.10)
        var seg = new TcpSegment(bytes);
        if (!seg.TryParseOptions(out var options))
        {
            Counters.TcpInErrs++;
            return Dropped(DropReason.TcpBadOptions);
        }
        Counters.TcpInSegs++;
        var remote = ip.Source;
        int c = _tcp.Find(seg.DestinationPort, remote, seg.SourcePort);
        if (c >= 0 && _tcp[c].State == TcpState.TimeWait && (seg.Flags & (TcpFlags.Syn | TcpFlags.Ack | TcpFlags.Rst)) == TcpFlags.Syn &&
            TimeWaitAcceptsNewSyn(c, seg, options))
        {
            TcpClosed(c); // a new incarnation may reuse the tuple (RFC 9293 §3.6.1, RFC 6191); an unclosed row stays the application's
            Mirror(c);
            c = -1;
        }
        if (c < 0)
        {
            if (HandedOverLately(seg.DestinationPort, remote, seg.SourcePort))
                return Dropped(DropReason.TcpHandedOver);
            int listener = TcpListenerFor(seg.DestinationPort, remote, seg.SourcePort);
            if (listener >= 0)
                ListenInput(listener, remote, seg, options);
            else if (HandedOverLately(seg.DestinationPort))
                return Dropped(DropReason.TcpHandedOver);
            else
            {
                TcpSendResetFor(remote, seg, bytes.Length);
                Dropped(DropReason.TcpNoSocket);
            }
            return false;
        }
        if (_tcp[c].State == TcpState.SynSent)
            SynSentInput(c, seg, options);
        else
            SynchronizedInput(c, seg, options);
        if (_tcp.IsValid(c))
        {
            TcpOutput(c);
            Mirror(c);
        }
        return false;
    }

    /// <summary>
    /// A segment that came in IPv4 fragments (a path with a small MTU, or a peer splitting the header itself):
    /// Linux reassembles any protocol and takes the segment whole, so put back together in the scratch buffer behind
    /// a plain IPv4 header, it is taken as any other, its checksum checked there.
    /// </summary>
    private void TcpInputReassembled(int queue, bool broadcast)
    {
        ref var q = ref _reassembler[queue];
        var packet = _scratch.AsSpan(0, Ipv4Packet.MinHeaderLength + q.Length);
        _reassembler.CopyOut(queue, 0, packet[Ipv4Packet.MinHeaderLength..]);
        var ip = new Ipv4Packet(packet);
        ip.WriteHeader(q.Source, q.Destination, IpProtocol.Tcp, q.Length, q.Identification, Options.DefaultTtl, dontFragment: false);
        TcpInput(new PacketDescriptor(-1, packet.Length), ip, broadcast);
    }

    /// <summary>
    /// RFC 6191 as Linux's tcp_timewait_state_process: a SYN that PAWS does not reject (its timestamp at most one
    /// tick behind) and whose sequence number is beyond RCV.NXT, or whose timestamp is newer. A sequence number
    /// newer with a timestamp of the same millisecond is accepted: a client reusing the port within the tick that
    /// ended its last connection otherwise met an ACK, reset it, and waited a SYN timeout (1 s).
    /// </summary>
    private bool TimeWaitAcceptsNewSyn(int c, TcpSegment seg, in TcpOptions options)
    {
        ref var t = ref _tcp[c];
        bool timestamps = t.Timestamps && options.HasTimestamps;
        if (timestamps && (int)(t.TsRecent - options.TsVal) > PawsWindow)
            return false;
        return Seq.Gt(seg.SequenceNumber, t.RcvNxt) || (timestamps && (int)(options.TsVal - t.TsRecent) > 0);
    }

    /// <summary>How far behind TS.Recent a timestamp may be before PAWS rejects it (Linux's TCP_PAWS_WINDOW).</summary>
    private const int PawsWindow = 1;

    private void ListenInput(int listener, Ipv4Address remote, TcpSegment seg, in TcpOptions options)
    {
        var flags = seg.Flags;
        if ((flags & TcpFlags.Rst) != 0)
            return;
        if ((flags & TcpFlags.Ack) != 0)
        {
            if ((flags & TcpFlags.Syn) != 0 || !SynCookieAckInput(listener, remote, seg, options))
                TcpSendResetFor(remote, seg, seg.HeaderLength);
            return;
        }
        // RFC 9293 §3.10.7.2: neither SYN nor ACK is dropped; a SYN with FIN is dropped too, as Linux does
        // (tcp_rcv_state_process), rather than opening a connection the peer has already closed.
        if ((flags & TcpFlags.Syn) == 0 || (flags & TcpFlags.Fin) != 0)
        {
            Dropped(DropReason.TcpListenBadSegment);
            return;
        }
        ref var l = ref _tcp[listener];
        int backlog = Math.Max(1, l.Backlog);
        if (l.AcceptQueueLength >= backlog)
        {
            // Nothing could be accepted now, cookie or not (Linux's sk_acceptq_is_full in tcp_conn_request): the
            // client retransmits its SYN.
            ListenOverflowDrop();
            return;
        }
        // The SYN queue full (it is bounded by the backlog, as the accept queue is): a cookie when they are on
        // (Linux's tcp_syn_flood_action), else a drop and the client retransmits.
        if (l.SynQueueLength + l.AcceptQueueLength >= backlog)
        {
            if (Options.TcpSyncookies)
            {
                Counters.TcpExtTCPReqQFullDoCookies++;
                TcpSendSynCookie(listener, remote, seg, options);
            }
            else
            {
                Counters.TcpExtTCPReqQFullDrop++;
                ListenOverflowDrop();
            }
            return;
        }
        // No row at all: the cookie's ACK would find none either.
        int c = AllocateTcpRow();
        if (c < 0)
        {
            ListenOverflowDrop();
            return;
        }
        ref var t = ref _tcp[c];
        OpenChild(c, listener, remote, seg, seg.SequenceNumber,
            InitialSequenceNumber(l.LocalPort, remote, seg.SourcePort), options);
        TcpSendFlags(c, t.Iss, TcpFlags.Syn | TcpFlags.Ack);
        t.SynSentAt = _now;
        ScheduleRetransmit(c, RetransmitKind.Rto, _now + BackedOffRto(c));
        Mirror(c);
    }

    /// <summary>A listener's new child in SYN-RECEIVED: its endpoints, the peer's ISN and ours, what the SYN said, in
    /// the hash and the listener's SYN queue. Shared by a SYN (RFC 9293 §3.10.7.2) and a SYN cookie's ACK.</summary>
    private void OpenChild(int c, int listener, Ipv4Address remote, TcpSegment seg, uint irs, uint iss, in TcpOptions syn)
    {
        ref var t = ref _tcp[c];
        TcpInitialise(c, listener);
        t.LocalPort = _tcp[listener].LocalPort;
        t.RemoteAddress = remote;
        t.RemotePort = seg.SourcePort;
        t.Listener = listener;
        if (_tcpAcceptedOnPort != null)
            _tcpAcceptedOnPort[t.LocalPort]++;
        SetState(c, TcpState.SynReceived);
        t.Irs = irs;
        t.RcvNxt = t.Irs + 1;
        t.RcvRead = t.RcvNxt;
        t.RcvAdv = t.RcvNxt;
        TcpInitialiseSendSequence(ref t, iss);
        ApplySynOptions(c, seg, syn);
        _tcp.Hash(c);
        AddToSynQueue(listener, c);
        Counters.TcpPassiveOpens++;
    }

    /// <summary>What a SYN says: the peer's MSS, window scale, SACK and timestamps, and its window.</summary>
    private void ApplySynOptions(int c, TcpSegment seg, in TcpOptions options)
    {
        ref var t = ref _tcp[c];
        int peerMss = options.Mss != 0 ? options.Mss : 536; // RFC 9293 §3.7.1: 536 when no option
        t.WindowScaling = options.WindowScale >= 0;
        t.SndWndShift = t.WindowScaling ? (byte)options.WindowScale : (byte)0;
        if (!t.WindowScaling)
            t.RcvWndShift = 0;
        t.Timestamps = options.HasTimestamps;
        t.SackPermitted = options.SackPermitted && Options.TcpSack;
        if (t.Timestamps)
        {
            t.TsRecent = options.TsVal;
            t.TsRecentAge = _now;
        }
        t.PeerMss = (ushort)peerMss;
        TcpSyncMss(c);
        t.SndWnd = seg.Window; // a SYN's window is never scaled
        t.MaxSndWnd = t.SndWnd;
        t.SndWl1 = seg.SequenceNumber;
        t.SndWl2 = seg.AcknowledgmentNumber;
        t.Cwnd = 10u * t.SndMss; // RFC 6928's initial window, as Linux
        t.Ssthresh = uint.MaxValue;
    }

    private void SynSentInput(int c, TcpSegment seg, in TcpOptions options)
    {
        ref var t = ref _tcp[c];
        var flags = seg.Flags;
        uint ack = seg.AcknowledgmentNumber;
        bool hasAck = (flags & TcpFlags.Ack) != 0;
        if (hasAck && (Seq.Le(ack, t.Iss) || Seq.Gt(ack, t.SndMax)))
        {
            if ((flags & TcpFlags.Rst) == 0)
                TcpSendResetFor(t.RemoteAddress, seg, seg.HeaderLength);
            Dropped(DropReason.TcpBadAck);
            return;
        }
        if ((flags & TcpFlags.Rst) != 0)
        {
            if (hasAck)
                TcpFail(c, (int)Errno.ECONNREFUSED);
            return;
        }
        if ((flags & TcpFlags.Syn) == 0)
            return;
        t.Irs = seg.SequenceNumber;
        t.RcvNxt = t.Irs + 1;
        t.RcvRead = t.RcvNxt;
        t.RcvAdv = t.RcvNxt;
        ApplySynOptions(c, seg, options);
        t.LastReceivedAt = _now;
        if (hasAck)
        {
            t.SndUna = ack;
            SampleRtt(c, HandshakeRtt(c), options);
            _timers.Cancel(TcpTimerId(c, TcpTimer.Retransmit));
            Established(c);
            t.AckNow = true;
        }
        else
        {
            // Simultaneous open (RFC 9293 §3.5, figure 8).
            SetState(c, TcpState.SynReceived);
            TcpSendFlags(c, t.Iss, TcpFlags.Syn | TcpFlags.Ack);
        }
    }

    private void Established(int c)
    {
        ref var t = ref _tcp[c];
        SetState(c, TcpState.Established);
        t.Backoff = 0;
        TcpInitBufferSpace(c);
        ArmKeepalive(c);
    }

    private void SynchronizedInput(int c, TcpSegment seg, in TcpOptions options)
    {
        ref var t = ref _tcp[c];
        var flags = seg.Flags;
        uint seq = seg.SequenceNumber;
        var payload = seg.Payload;
        int length = payload.Length + ((flags & TcpFlags.Syn) != 0 ? 1 : 0) + ((flags & TcpFlags.Fin) != 0 ? 1 : 0);

        // PAWS (RFC 7323 §5.3): a timestamp older than TS.Recent is an old duplicate.
        if (t.Timestamps && options.HasTimestamps && (flags & TcpFlags.Rst) == 0 && (int)(options.TsVal - t.TsRecent) < 0 &&
            _now - t.TsRecentAge < 24L * 24 * 3600 * 1_000_000_000)
        {
            Counters.TcpExtPAWSEstab++;
            Dropped(DropReason.TcpPawsRejected);
            t.AckNow = true;
            return;
        }

        // Acceptability (RFC 9293 §3.10.7.4, first check), with the right edge included as Linux's tcp_sequence
        // includes it: a peer that filled our window sends its ACKs at SEQ = RCV.NXT + RCV.WND, and when data of
        // its went missing RCV.NXT lags behind; refusing those ACKs (RFC 9293's strict "<") starves our sending
        // side of acknowledgements until a timeout. Data beyond the window is still not taken (ReceiveData).
        uint rcvWnd = RcvWindow(c);
        uint rightEdge = t.RcvNxt + rcvWnd;
        bool acceptable = length == 0
            ? Seq.Ge(seq, t.RcvNxt) && Seq.Le(seq, rightEdge)
            : seq == rightEdge || rcvWnd != 0 && (Seq.InWindow(seq, t.RcvNxt, rightEdge) ||
                                                   Seq.InWindow(seq + (uint)length - 1, t.RcvNxt, rightEdge));
        if (!acceptable)
        {
            if ((flags & (TcpFlags.Syn | TcpFlags.Rst)) == TcpFlags.Syn && t.State is not (TcpState.SynReceived or TcpState.TimeWait))
                ChallengeAck(c); // RFC 5961 §4.2: a SYN, whatever its sequence number (Linux's syn_challenge)
            else if ((flags & TcpFlags.Rst) == 0 && !OutOfWindowAckLimited(c, flags, payload.Length))
                t.AckNow = true;
            // An old duplicate (a spurious retransmission): reported in a D-SACK block (RFC 2883 §4), as Linux's
            // tcp_send_dupack does.
            if ((flags & TcpFlags.Rst) == 0 && payload.Length > 0 && Seq.Lt(seq, t.RcvNxt))
                ReportDuplicate(c, seq, Seq.Min(seq + (uint)payload.Length, t.RcvNxt), ref Counters.TcpExtTCPDSACKOldSent);
            // A retransmitted FIN in TIME_WAIT (its sequence is now left of the window) restarts 2MSL (RFC 9293 §3.10.7.4).
            if (t.State == TcpState.TimeWait && (flags & TcpFlags.Fin) != 0)
                _timers.Schedule(TcpTimerId(c, TcpTimer.Keepalive), _now + 2 * Options.TcpMslNs);
            Dropped(DropReason.TcpOutOfWindow);
            return;
        }

        // RST (RFC 5961 §3.2): only an exact match resets; anything else in the window gets a challenge ACK.
        if ((flags & TcpFlags.Rst) != 0)
        {
            if (seq == t.RcvNxt)
            {
                if (t.State == TcpState.SynReceived && t.Listener >= 0)
                    TcpFree(c); // a passive open goes back to the listener (RFC 9293 §3.10.7.4)
                else
                {
                    if (t.State is TcpState.Established or TcpState.CloseWait)
                        Counters.TcpEstabResets++;
                    // Linux's tcp_reset: a reset after the peer's FIN (CLOSE_WAIT) is EPIPE, not ECONNRESET.
                    TcpFail(c, t.State switch
                    {
                        TcpState.SynReceived => (int)Errno.ECONNREFUSED,
                        TcpState.CloseWait => (int)Errno.EPIPE,
                        TcpState.Closing or TcpState.LastAck or TcpState.TimeWait => 0,
                        _ => (int)Errno.ECONNRESET,
                    });
                }
            }
            else
                ChallengeAck(c);
            return;
        }

        // SYN in a synchronized state (RFC 5961 §4): challenge ACK.
        if ((flags & TcpFlags.Syn) != 0)
        {
            if (t.State == TcpState.SynReceived && seq == t.Irs)
                t.AckNow = true; // a retransmitted SYN: our SYN-ACK is resent by the timer
            else
                ChallengeAck(c);
            return;
        }

        if ((flags & TcpFlags.Ack) == 0)
            return;

        if (t.Timestamps && options.HasTimestamps && Seq.Le(seq, t.RcvNxt))
        {
            t.TsRecent = options.TsVal;
            t.TsRecentAge = _now;
        }
        t.LastReceivedAt = _now;
        t.KeepProbes = 0;
        t.ProbesOut = 0;

        if (!AckInput(c, seg, options))
            return;
        if (!_tcp.IsValid(c))
            return;

        // Data and FIN (RFC 9293 §3.10.7.4, seventh and eighth steps).
        if (t.State is TcpState.Established or TcpState.FinWait1 or TcpState.FinWait2)
        {
            if (payload.Length > 0)
            {
                TcpRcvRttMeasure(c, options, payload.Length);
                ReceiveData(c, seq, payload);
            }
        }
        if ((flags & TcpFlags.Fin) != 0 && seq + (uint)payload.Length == t.RcvNxt && !t.FinReceived)
            ReceiveFin(c);
        else if ((flags & TcpFlags.Fin) != 0 && t.State == TcpState.TimeWait)
        {
            t.AckNow = true; // a retransmitted FIN: ACK it and restart 2MSL
            _timers.Schedule(TcpTimerId(c, TcpTimer.Keepalive), _now + 2 * Options.TcpMslNs);
        }
    }

    /// <summary>The fifth step: the ACK field. Returns false when the segment is to be dropped.</summary>
    private bool AckInput(int c, TcpSegment seg, in TcpOptions options)
    {
        ref var t = ref _tcp[c];
        uint ack = seg.AcknowledgmentNumber;
        if (t.State == TcpState.SynReceived)
        {
            if (!(Seq.Lt(t.SndUna, ack) && Seq.Le(ack, t.SndMax)))
            {
                TcpSendResetFor(t.RemoteAddress, seg, seg.HeaderLength + seg.Payload.Length);
                return false;
            }
            t.SndUna = ack;
            t.SndWnd = (uint)seg.Window << t.SndWndShift;
            t.MaxSndWnd = Math.Max(t.MaxSndWnd, t.SndWnd);
            t.SndWl1 = seg.SequenceNumber;
            t.SndWl2 = ack;
            SampleRtt(c, HandshakeRtt(c), options);
            _timers.Cancel(TcpTimerId(c, TcpTimer.Retransmit));
            Established(c);
            if (t.Listener >= 0)
                QueueForAccept(c);
            return true;
        }
        // RFC 5961 §5.2: an ACK of something never sent is dropped, data and all, and answered by a challenge ACK,
        // as Linux's tcp_ack does: at most one per connection per 500 ms, within the stack-wide limit, so that a
        // flood of such segments cannot make an ACK each.
        if (Seq.Gt(ack, t.SndMax))
        {
            if (t.OutOfWindowAckAt != 0 && _now - t.OutOfWindowAckAt < OutOfWindowAckIntervalNs)
                Counters.TcpExtTCPACKSkippedChallenge++;
            else
            {
                t.OutOfWindowAckAt = _now;
                ChallengeAck(c);
            }
            Dropped(DropReason.TcpBadAck);
            return false;
        }
        // And one older than SND.UNA - MAX.SND.WND: a blind injector who hit the receive window with a guessed
        // sequence number must guess an acceptable ACK too; dropped, data and all, with a challenge ACK (Linux's
        // tcp_ack, SKB_DROP_REASON_TCP_TOO_OLD_ACK). The window now stands in for a row handed over without one.
        if (Seq.Lt(ack, t.SndUna - Math.Max(t.MaxSndWnd, t.SndWnd)))
        {
            if (_challengeAcks.TryTake(_now))
            {
                Counters.TcpExtTCPChallengeACK++;
                t.AckNow = true;
            }
            Dropped(DropReason.TcpTooOldAck);
            return false;
        }
        // Something got through: an ICMP error heard before is no longer news (Linux's tcp_ack clears sk_err_soft).
        t.SoftError = 0;
        uint window = (uint)seg.Window << t.SndWndShift;
        uint unaBefore = t.SndUna;
        uint sackedBefore = t.SackedBytes;
        if (t.SackPermitted && options.SackCount > 0)
            SackInput(c, options, ack);
        bool advanced = Seq.Gt(ack, t.SndUna);
        if (advanced)
        {
            uint acked = ack - t.SndUna;
            uint pipeBefore = t.Pipe;
            int dataAcked = (int)Math.Min(acked, (uint)t.SndQueued);
            t.SndQueued -= dataAcked;
            t.BytesAcked += dataAcked;
            int records = AckSentSegments(c, ack, out long measured);
            t.SndUna = ack; // never past SND.NXT: an ACK beyond SND.MAX was refused above
            SampleRtt(c, measured, options);
            t.Backoff = 0;
            t.RetransmitStartedAt = 0;
            OnNewAck(c, acked, records, pipeBefore);
            TcpSndBufExpand(c); // Linux's tcp_new_space: the ACK freed room, and cwnd may have grown
        }
        else if (ack == t.SndUna && seg.Payload.Length == 0 && (seg.Flags & TcpFlags.Fin) == 0 &&
                 t.SndMax != t.SndUna && window == t.SndWnd)
            OnDuplicateAck(c);
        TailLossProbeAcked(c, ack, duplicate: !advanced && options.SackCount == 0 && seg.Payload.Length == 0 && window == t.SndWnd);
        if (advanced)
            ArmRetransmitTimer(c);
        if (t.SackPermitted && (t.SackedCount > 0 || t.InRecovery))
        {
            RackDetectLoss(c);
            if (t.LostCount > 0 && !t.InRecovery)
                EnterRecovery(c);
        }
        if (t.InRecovery && !t.RtoRecovery)
        {
            long delivered = (long)(ack - unaBefore) + ((long)t.SackedBytes - sackedBefore);
            if (!t.SackPermitted && !advanced && ack == unaBefore)
                delivered = t.SndMss; // RFC 6937 §3: a duplicate ACK without SACK delivered one segment
            ProportionalRateReduction(c, (uint)Math.Max(0, delivered));
        }

        // Window update (RFC 9293 §3.10.7.4): from a newer segment, or the same one acknowledging more.
        if (Seq.Lt(t.SndWl1, seg.SequenceNumber) || (t.SndWl1 == seg.SequenceNumber && Seq.Le(t.SndWl2, ack)))
        {
            bool opened = t.SndWnd == 0 && window > 0;
            t.SndWnd = window;
            t.MaxSndWnd = Math.Max(t.MaxSndWnd, window);
            t.SndWl1 = seg.SequenceNumber;
            t.SndWl2 = ack;
            if (opened && t.SndUna == t.SndMax)
                _timers.Cancel(TcpTimerId(c, TcpTimer.Retransmit)); // the persist timer's job is done
        }

        bool finAcked = t.FinSent && t.SndUna == t.SndMax;
        switch (t.State)
        {
            case TcpState.FinWait1 when finAcked:
                SetState(c, TcpState.FinWait2);
                if (t.Orphaned)
                    _timers.Schedule(TcpTimerId(c, TcpTimer.Keepalive), _now + Options.TcpFinTimeoutNs);
                break;
            case TcpState.Closing when finAcked:
                EnterTimeWait(c);
                break;
            case TcpState.LastAck when finAcked:
                TcpClosed(c);
                return false;
        }
        return true;
    }

    /// <summary>The time since our SYN or SYN-ACK left, if it left once (Karn); else -1. Without it a connection
    /// without timestamps had no RTT sample until its first data was acknowledged, and a loss in its first flight
    /// waited the initial 1 s RTO where Linux, having measured the handshake, waits 200 ms.</summary>
    private long HandshakeRtt(int c) => _tcp[c].SynSentAt != 0 ? _now - _tcp[c].SynSentAt : -1;

    /// <summary>The longest round trip a timestamp echo may give, in 1 ms ticks (Linux's INT_MAX µs).</summary>
    private const uint MaxTimestampRttTicks = int.MaxValue / 1000;

    /// <summary>
    /// RFC 6298 §2: SRTT, RTTVAR and RTO from a sample: <paramref name="measured"/>, the time since the newest
    /// segment this ACK covers was sent, if it was sent once (Karn); else by the echoed timestamp (RFC 7323 §4),
    /// whose millisecond clock is coarse and which, after a timeout, may echo an old copy, so only while not
    /// backed off.
    /// </summary>
    private void SampleRtt(int c, long measured, in TcpOptions options)
    {
        ref var t = ref _tcp[c];
        long sample = measured;
        // An echo from the future, or from longer ago than Linux believes (tcp_rtt_tsopt_us: INT_MAX µs, about 35
        // minutes), is no sample: the fuzzer's made a 46-day SRTT, and a loss probe timer set that far out.
        if (sample < 0 && t.Timestamps && options.HasTimestamps && options.TsEcr != 0 && t.Backoff == 0 &&
            TcpTimestampNow - options.TsEcr is var ticks and < MaxTimestampRttTicks)
            sample = (long)ticks * 1_000_000;
        if (sample < 0)
            return;
        sample = Math.Max(sample, 1_000);
        if (t.Srtt == 0)
        {
            t.Srtt = sample;
            t.RttVar = sample / 2;
        }
        else
        {
            t.RttVar = (3 * t.RttVar + Math.Abs(t.Srtt - sample)) / 4;
            t.Srtt = (7 * t.Srtt + sample) / 8;
        }
        t.Rto = Math.Clamp(t.Srtt + Math.Max(1_000_000, 4 * t.RttVar), Options.TcpMinRtoNs, Options.TcpMaxRtoNs);
    }

    /// <summary>The receive window now: free space in the ring (as advertised, never less than offered).</summary>
    private uint RcvWindow(int c)
    {
        ref var t = ref _tcp[c];
        long free = t.RcvBufSize - (long)(t.RcvNxt - t.RcvRead);
        long offered = (long)(int)(t.RcvAdv - t.RcvNxt);
        return (uint)Math.Max(0, Math.Max(free, offered));
    }

    /// <summary>
    /// Copies a segment's data into the receive ring at its sequence position. In order, RCV.NXT advances (past the
    /// out-of-order ranges it reaches); out of order, the data waits in the ring, its range is kept for the SACK
    /// blocks, and an ACK goes at once. A duplicate is reported in a D-SACK block (RFC 2883).
    /// </summary>
    private void ReceiveData(int c, uint seq, ReadOnlySpan<byte> data)
    {
        ref var t = ref _tcp[c];
        if (Seq.Lt(seq, t.RcvNxt))
        {
            uint skip = t.RcvNxt - seq;
            uint duplicateEnd = skip >= (uint)data.Length ? seq + (uint)data.Length : t.RcvNxt;
            ReportDuplicate(c, seq, duplicateEnd, ref Counters.TcpExtTCPDSACKOldSent);
            if (skip >= (uint)data.Length)
                return;
            data = data[(int)skip..];
            seq = t.RcvNxt;
        }
        // Up to the buffer, or to the right edge offered if SO_RCVBUF has since made the buffer smaller.
        uint limit = Seq.Max(t.RcvRead + (uint)t.RcvBufSize, t.RcvAdv);
        if (Seq.Gt(seq + (uint)data.Length, limit))
        {
            if (Seq.Ge(seq, limit))
                return;
            data = data[..(int)(limit - seq)];
        }
        if (t.ShutdownRead)
        {
            // SHUT_RD: Linux acknowledges and discards.
            if (seq == t.RcvNxt)
            {
                t.RcvNxt += (uint)data.Length;
                t.RcvRead = t.RcvNxt - (uint)t.RcvLent; // bytes lent by zero-copy receive stay where they are
            }
            t.AckNow = true;
            return;
        }
        if (seq != t.RcvNxt)
        {
            uint end = seq + (uint)data.Length;
            t.AckNow = true; // quick ACK on out-of-order data (RFC 5681 §4.2)
            if (t.OutOfOrder.Covers(seq, end))
            {
                ReportDuplicate(c, seq, end, ref Counters.TcpExtTCPDSACKOfoSent);
                t.OutOfOrder.Add(seq, end); // the range holding it becomes the newest: the second block (RFC 2883 §4 (4))
                return;
            }
            // Overlapping data already held from an earlier start keeps its bytes, whatever the new copy says: Linux's
            // tcp_data_queue_ofo keeps both segments and reads the lower one first. Data held from a later start is
            // the new segment's (it replaces that segment, or is read first).
            uint held = t.OutOfOrder.HeldPast(seq);
            if (!t.OutOfOrder.Add(seq, end))
            {
                Counters.TcpExtTCPOFODrop++; // too many holes: the peer sends it again
                return;
            }
            Counters.TcpExtTCPOFOQueue++;
            if (held != seq)
            {
                ReportDuplicate(c, seq, held, ref Counters.TcpExtTCPDSACKOfoSent);
                data = data[(int)(held - seq)..];
                seq = held;
            }
            CopyIntoReceiveRing(c, seq, data);
            return;
        }
        CopyIntoReceiveRing(c, seq, data);
        t.RcvNxt += (uint)data.Length;
        if (t.OutOfOrder.Count > 0)
        {
            uint next = t.OutOfOrder.Advance(t.RcvNxt);
            if (next != t.RcvNxt)
            {
                t.RcvNxt = next;
                t.AckNow = true; // a hole filled: tell the sender now
            }
        }
        // Delayed ACK (RFC 9293 §3.8.6.3; RFC 5681 §4.2): at least every second full segment, else within 40 ms.
        t.SegmentsSinceAck++;
        if (t.SegmentsSinceAck >= 2)
            t.AckNow = true;
        else if (!t.AckNow)
        {
            Counters.TcpExtDelayedACKs++;
            _timers.Schedule(TcpTimerId(c, TcpTimer.DelayedAck), _now + Options.TcpDelayedAckNs);
        }
    }

    /// <summary>Data received twice: ACK at once, with a D-SACK block for it when SACK is on (RFC 2883 §4).</summary>
    private void ReportDuplicate(int c, uint start, uint end, ref long counter)
    {
        ref var t = ref _tcp[c];
        t.AckNow = true;
        if (!t.SackPermitted)
            return;
        t.Dsack = new SeqRange(start, end);
        counter++;
    }

    private void CopyIntoReceiveRing(int c, uint seq, ReadOnlySpan<byte> data) =>
        ByteRing.Write(_tcp.ReceiveRing(c), seq - _tcp[c].Irs - 1, data);

    private void ReceiveFin(int c)
    {
        ref var t = ref _tcp[c];
        t.RcvNxt++;
        t.FinReceived = true;
        t.AckNow = true;
        switch (t.State)
        {
            case TcpState.SynReceived:
            case TcpState.Established:
                SetState(c, TcpState.CloseWait);
                break;
            case TcpState.FinWait1:
                if (t.FinSent && t.SndUna == t.SndMax)
                    EnterTimeWait(c);
                else
                    SetState(c, TcpState.Closing);
                break;
            case TcpState.FinWait2:
                EnterTimeWait(c);
                break;
        }
    }

    /// <summary>
    /// Linux's tcp_oow_rate_limited: the duplicate ACK that answers an out-of-window pure ACK or SYN goes at most
    /// once per <see cref="OutOfWindowAckIntervalNs"/> per connection (net.ipv4.tcp_invalid_ratelimit), so that a
    /// blind injector's barrage, or two ends that disagree about the window, cannot make an ACK per segment. Data
    /// and FINs are always answered: they are no ACK loop.
    /// </summary>
    private bool OutOfWindowAckLimited(int c, TcpFlags flags, int payloadLength)
    {
        if (payloadLength > 0 && (flags & TcpFlags.Syn) == 0 || (flags & (TcpFlags.Syn | TcpFlags.Fin)) == TcpFlags.Fin)
            return false;
        ref var t = ref _tcp[c];
        if (t.OutOfWindowAckAt != 0 && _now - t.OutOfWindowAckAt < OutOfWindowAckIntervalNs)
        {
            Counters.TcpExtTCPACKSkippedSeq++;
            return true;
        }
        t.OutOfWindowAckAt = _now;
        return false;
    }

    /// <summary>net.ipv4.tcp_invalid_ratelimit's 500 ms.</summary>
    private const long OutOfWindowAckIntervalNs = 500_000_000;

    /// <summary>RFC 5961 §7: challenge ACKs, rate-limited across the stack.</summary>
    private void ChallengeAck(int c)
    {
        if (!_challengeAcks.TryTake(_now))
        {
            Dropped(DropReason.TcpChallengeAckLimited);
            return;
        }
        Counters.TcpExtTCPChallengeACK++;
        _tcp[c].AckNow = true;
    }
}
