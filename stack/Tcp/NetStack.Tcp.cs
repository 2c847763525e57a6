using System.Runtime.CompilerServices;
using Onload.Stack.Arp;
using Onload.Stack.Icmp;
using Onload.Stack.Memory;
using Onload.Stack.Tcp;
using Onload.Stack.Timers;
using Onload.Stack.Wire;
using Onload.Vnic;

namespace Onload.Stack;

// TCP: the socket calls (RFC 9293 §3.9's user interface, with Linux's errors), connection set-up and teardown.
// Calls never block: they return a count, 0, or a negated errno (EAGAIN, EINPROGRESS), as non-blocking sockets do.
public sealed partial class NetStack
{
    private readonly TcpTable _tcp;
    private readonly uint _tcpTimestampOffset;
    private readonly ulong _isnKey0;
    private readonly ulong _isnKey1;
    private readonly ulong _synCookieKey0;
    private readonly ulong _synCookieKey1;
    private uint _connectPortCounter;
    private TokenBucket _challengeAcks;
    private readonly ConnectionMirror? _mirror;
    /// <summary>Moves whenever a neighbour's MAC is learnt, changes or goes: the mirror looks a peer's MAC up
    /// again only then.</summary>
    private uint _neighbourGeneration = 1;
    /// <summary>The TIME_WAIT connections in the order they entered it (<see cref="AllocateTcpRow"/>), or -1.</summary>
    private int _timeWaitOldest = -1;
    private int _timeWaitNewest = -1;

    public TcpTable TcpConnections => _tcp;

    private static int TcpTimerId(int c, TcpTimer timer) => c * (int)TcpTimer.Count + (int)timer;

    /// <summary>RFC 6528: ISN = M + F(4-tuple, secret), M a 4 µs clock, F SipHash under a key drawn at start.</summary>
    private uint InitialSequenceNumber(ushort localPort, Ipv4Address remote, ushort remotePort)
    {
        ulong m0 = ((ulong)_address.Value << 32) | remote.Value;
        ulong m1 = ((ulong)localPort << 16) | remotePort;
        return (uint)SipHash.Hash(_isnKey0, _isnKey1, m0, m1) + (uint)(_now / 4_000);
    }

    private void TcpInitialise(int c, int inheritFrom)
    {
        ref var t = ref _tcp[c];
        t.Rto = Options.TcpInitialRtoNs;
        t.SndMss = 536;
        t.Cwnd = 10u * 536;
        t.Ssthresh = uint.MaxValue;
        t.KeepIdleNs = Options.TcpKeepIdleNs;
        t.KeepIntervalNs = Options.TcpKeepIntervalNs;
        t.KeepCount = Options.TcpKeepCount;
        t.Congestion = Options.TcpCongestionControl;
        if (inheritFrom >= 0)
        {
            // Options set on a listener pass to the connections it accepts, as on Linux.
            ref var l = ref _tcp[inheritFrom];
            t.NoDelay = l.NoDelay;
            t.Congestion = l.Congestion;
            t.KeepAlive = l.KeepAlive;
            t.KeepIdleNs = l.KeepIdleNs;
            t.KeepIntervalNs = l.KeepIntervalNs;
            t.KeepCount = l.KeepCount;
            t.UserTimeoutNs = l.UserTimeoutNs;
            t.LingerZero = l.LingerZero;
        }
        TcpInitialiseBuffers(c, inheritFrom);
    }

    /// <summary>The send sequence space from the ISS: the SYN is outstanding, nothing else is.</summary>
    private static void TcpInitialiseSendSequence(ref TcpConnection t, uint iss)
    {
        t.Iss = iss;
        t.SndUna = iss;
        t.SndNxt = iss + 1;
        t.Recover = iss; // no recovery yet: RFC 6582's guard lets the first one start
        t.RackFack = iss + 1;
    }

    /// <summary>socket(AF_INET, SOCK_STREAM, 0).</summary>
    public int TcpOpen()
    {
        int c = AllocateTcpRow();
        if (c < 0)
            return -(int)Errno.EMFILE;
        TcpInitialise(c, -1);
        return c;
    }

    /// <summary>bind(): port 0 picks an ephemeral port.</summary>
    public int TcpBind(int c, Ipv4Endpoint local)
    {
        if (!_tcp.IsValid(c))
            return -(int)Errno.EBADF;
        ref var t = ref _tcp[c];
        if (t.Bound || t.State != TcpState.Closed)
            return -(int)Errno.EINVAL;
        if (!local.Address.IsAny && local.Address != _address)
            return -(int)Errno.EADDRNOTAVAIL;
        ushort port = local.Port;
        if (port != 0 && BindConflict(_tcp, c, port, _tcp.Binder(c)))
            return -(int)Errno.EADDRINUSE;
        t.BoundToAny = local.Address.IsAny;
        if (_control != null)
            return TcpBindReserved(c, port);
        if (port == 0)
        {
            int picked = PickEphemeralPort(_tcp, Errno.EADDRNOTAVAIL); // what Linux's connect() gives when none is left
            if (picked < 0)
                return picked;
            port = (ushort)picked;
        }
        _tcp.BindPort(c, port);
        return 0;
    }

    /// <summary>
    /// The listener a SYN for no connection goes to, or -1: the port's one listener, or the member of its
    /// SO_REUSEPORT group that <see cref="ReuseportPick"/> names.
    /// </summary>
    private int TcpListenerFor(ushort port, Ipv4Address remote, ushort remotePort)
    {
        int first = -1;
        uint listeners = 0;
        for (int o = _tcp.FirstOnPort(port); o >= 0; o = _tcp.NextOnPort(o))
            if (_tcp[o].State == TcpState.Listen)
            {
                if (first < 0)
                    first = o;
                listeners++;
            }
        if (listeners <= 1)
            return first;
        uint pick = ReuseportPick(_address, port, remote, remotePort, listeners);
        for (int o = first; ; o = _tcp.NextOnPort(o))
            if (_tcp[o].State == TcpState.Listen && pick-- == 0)
                return o;
    }

    /// <summary>SO_REUSEADDR: decides later binds and listens on the port, as on Linux.</summary>
    public int TcpSetReuseAddress(int c, bool on)
    {
        if (!_tcp.IsValid(c))
            return -(int)Errno.EBADF;
        _tcp[c].ReuseAddr = on;
        return 0;
    }

    /// <summary>SO_REUSEPORT: decides later binds on the port, and which listeners share its connections.</summary>
    public int TcpSetReusePort(int c, bool on)
    {
        if (!_tcp.IsValid(c))
            return -(int)Errno.EBADF;
        _tcp[c].ReusePort = on;
        return 0;
    }

    /// <summary>listen(): the backlog bounds the SYN queue and the accept queue together.</summary>
    public int TcpListen(int c, int backlog)
    {
        if (!_tcp.IsValid(c))
            return -(int)Errno.EBADF;
        ref var t = ref _tcp[c];
        if (t.State is not (TcpState.Closed or TcpState.Listen))
            return -(int)Errno.EINVAL;
        if (!t.Bound)
        {
            int rc = TcpBind(c, new Ipv4Endpoint(Ipv4Address.Any, 0));
            if (rc != 0)
                return rc;
        }
        else if (t.State == TcpState.Closed && BindConflict(_tcp, c, t.LocalPort, _tcp.Binder(c)))
            return -(int)Errno.EADDRINUSE; // Linux checks the port again as the socket starts to listen
        SetState(c, TcpState.Listen);
        t.Backlog = Math.Clamp(backlog, 1, 4096); // net.core.somaxconn
        return 0;
    }

    /// <summary>A passive open joins its listener's SYN queue (a doubly linked list, so leaving it is O(1)).</summary>
    private void AddToSynQueue(int listener, int c)
    {
        ref var l = ref _tcp[listener];
        ref var t = ref _tcp[c];
        t.SynPrev = -1;
        t.SynNext = l.SynHead;
        if (l.SynHead >= 0)
            _tcp[l.SynHead].SynPrev = c;
        l.SynHead = c;
        l.SynQueueLength++;
    }

    private void RemoveFromSynQueue(int listener, int c)
    {
        ref var l = ref _tcp[listener];
        ref var t = ref _tcp[c];
        if (t.SynPrev >= 0)
            _tcp[t.SynPrev].SynNext = t.SynNext;
        else
            l.SynHead = t.SynNext;
        if (t.SynNext >= 0)
            _tcp[t.SynNext].SynPrev = t.SynPrev;
        t.SynNext = t.SynPrev = -1;
        l.SynQueueLength--;
    }

    private void QueueForAccept(int c)
    {
        ref var t = ref _tcp[c];
        RemoveFromSynQueue(t.Listener, c);
        ref var l = ref _tcp[t.Listener];
        l.AcceptQueueLength++;
        t.AcceptNext = -1;
        if (l.AcceptTail >= 0)
            _tcp[l.AcceptTail].AcceptNext = c;
        else
            l.AcceptHead = c;
        l.AcceptTail = c;
    }

    /// <summary>accept(): the next established connection, or -EAGAIN.</summary>
    public int TcpAccept(int listener, out Ipv4Endpoint remote)
    {
        remote = default;
        if (!_tcp.IsValid(listener))
            return -(int)Errno.EBADF;
        ref var l = ref _tcp[listener];
        if (l.State != TcpState.Listen)
            return -(int)Errno.EINVAL;
        int c = l.AcceptHead;
        if (c < 0)
            return -(int)Errno.EAGAIN;
        ref var t = ref _tcp[c];
        l.AcceptHead = t.AcceptNext;
        if (l.AcceptHead < 0)
            l.AcceptTail = -1;
        l.AcceptQueueLength--;
        t.AcceptNext = -1;
        t.Listener = -1;
        remote = new Ipv4Endpoint(t.RemoteAddress, t.RemotePort);
        Mirror(c);
        return c;
    }

    /// <summary>connect(): sends the SYN and returns -EINPROGRESS; <see cref="TcpIsConnected"/> or
    /// <see cref="TcpTakeError"/> tell how it ends.</summary>
    public int TcpConnect(int c, Ipv4Endpoint remote)
    {
        if (!_tcp.IsValid(c))
            return -(int)Errno.EBADF;
        ref var t = ref _tcp[c];
        if (t.State == TcpState.SynSent)
            return -(int)Errno.EALREADY;
        if (t.State != TcpState.Closed || t.Dead)
            return -(int)Errno.EISCONN;
        if (remote.Port == 0 || remote.Address.IsAny || remote.Address.IsMulticast || remote.Address.IsLimitedBroadcast)
            return -(int)Errno.ENETUNREACH;
        int rc = Route(remote.Address, out _, out _);
        if (rc != 0)
            return rc;
        if (!t.Bound)
        {
            if (_control != null)
            {
                // The kernel picks the port in driverlink mode (its own connect-time choice).
                rc = TcpBindReserved(c, 0, forConnect: true);
                if (rc != 0)
                    return rc;
            }
            else
            {
                int port = PickConnectPort(remote);
                if (port < 0)
                    return port;
                _tcp.BindPort(c, (ushort)port);
            }
        }
        if (_tcp.Find(t.LocalPort, remote.Address, remote.Port) >= 0)
            return -(int)Errno.EADDRNOTAVAIL;
        t.RemoteAddress = remote.Address;
        t.RemotePort = remote.Port;
        TcpInitialiseSendSequence(ref t, InitialSequenceNumber(t.LocalPort, remote.Address, remote.Port));
        SetState(c, TcpState.SynSent);
        _tcp.Hash(c);
        Counters.TcpActiveOpens++;
        TcpSendFlags(c, t.Iss, TcpFlags.Syn);
        t.SynSentAt = _now;
        ScheduleRetransmit(c, RetransmitKind.Rto, _now + BackedOffRto(c));
        Mirror(c);
        Flush();
        return -(int)Errno.EINPROGRESS;
    }

    public TcpState TcpStateOf(int c) => _tcp.IsValid(c) ? _tcp[c].State : TcpState.Closed;

    /// <summary>Whether the handshake completed (a non-blocking connect's socket turned writable without error).</summary>
    public bool TcpIsConnected(int c) => _tcp.IsValid(c) && _tcp[c].State is not (TcpState.Closed or TcpState.Listen or TcpState.SynSent or TcpState.SynReceived);

    /// <summary>poll(POLLIN): data, a FIN, an error, or (for a listener) a connection to accept.</summary>
    public bool TcpReadable(int c)
    {
        if (!_tcp.IsValid(c))
            return false;
        ref var t = ref _tcp[c];
        if (t.State == TcpState.Listen)
            return t.AcceptHead >= 0;
        return t.Readable > 0 || t.FinReceived || t.Error != 0 || t.Dead;
    }

    /// <summary>poll(POLLOUT): room in the send buffer on a connected socket.</summary>
    public bool TcpWritable(int c) => _tcp.IsValid(c) && (TcpIsConnected(c) && _tcp[c].SndQueued < _tcp[c].SndBufSize || _tcp[c].Error != 0);

    /// <summary>getsockopt(SO_ERROR).</summary>
    public int TcpTakeError(int c)
    {
        if (!_tcp.IsValid(c))
            return -(int)Errno.EBADF;
        ref var t = ref _tcp[c];
        // As Linux's SO_ERROR: the pending error, else the soft one an ICMP error left (sk_err_soft), each once.
        return t.Error != 0 ? TakeError(ref t.Error) : TakeError(ref t.SoftError);
    }

    /// <summary>getsockname(): the stack's address, or 0.0.0.0 for a socket bound to any address that is not
    /// connected (a listener, as Linux says of it); 0.0.0.0:0 before it has a port. An accepted connection shares
    /// its listener's port without owning it (Bound stays false) but has a local address all the same.</summary>
    public Ipv4Endpoint TcpLocalEndpoint(int c)
    {
        if (!_tcp.IsValid(c))
            return default;
        ref var t = ref _tcp[c];
        if (!t.Bound && t.LocalPort == 0)
            return default;
        bool wildcard = t.BoundToAny && t.State is TcpState.Closed or TcpState.Listen;
        return new Ipv4Endpoint(wildcard ? default : _address, t.LocalPort);
    }

    /// <summary>send(): copies into the send ring and sends what the windows allow. Returns bytes taken or -EAGAIN.</summary>
    public int TcpSend(int c, ReadOnlySpan<byte> data)
    {
        if (!_tcp.IsValid(c))
            return -(int)Errno.EBADF;
        ref var t = ref _tcp[c];
        if (SendRefused(ref t) is var refused and < 0)
            return refused;
        if (t.SndReserved)
            return -(int)Errno.EBUSY; // a zero-copy send is being written where these bytes would go
        int room = t.SndBufSize - t.SndQueued;
        int n = Math.Min(room, data.Length);
        if (n == 0)
            return data.Length == 0 ? 0 : -(int)Errno.EAGAIN;
        ByteRing.Write(_tcp.SendRing(c), t.SndUna + (uint)t.SndQueued - t.Iss - 1, data[..n]);
        t.SndQueued += n;
        TcpOutput(c);
        Mirror(c);
        Flush();
        return n;
    }

    /// <summary>Why send() cannot queue on the connection now (a pending error taken, EPIPE, EAGAIN while
    /// connecting), or 0.</summary>
    private static int SendRefused(ref TcpConnection t)
    {
        if (t.Error != 0)
            return -TakeError(ref t.Error);
        if (t.Dead || t.FinQueued)
            return -(int)Errno.EPIPE;
        if (t.State is TcpState.SynSent or TcpState.SynReceived)
            return -(int)Errno.EAGAIN;
        if (t.State is not (TcpState.Established or TcpState.CloseWait))
            return -(int)Errno.EPIPE; // as Linux (sk_stream_wait_connect): never connected, or listening
        return 0;
    }

    /// <summary>recv(): bytes read; 0 at end of stream; -EAGAIN when nothing is there yet.</summary>
    public int TcpReceive(int c, Span<byte> buffer)
    {
        if (!_tcp.IsValid(c))
            return -(int)Errno.EBADF;
        ref var t = ref _tcp[c];
        if (t.RcvLent > 0)
            return -(int)Errno.EBUSY; // bytes lent by zero-copy receive come back first (TcpReceiveReturn)
        int readable = t.Readable;
        if (readable > 0 && buffer.Length > 0)
        {
            int n = Math.Min(readable, buffer.Length);
            ByteRing.Read(_tcp.ReceiveRing(c), t.RcvRead - t.Irs - 1, buffer[..n]);
            Consumed(c, n);
            return n;
        }
        return NothingToRead(ref t);
    }

    /// <summary>The application is done with <paramref name="n"/> bytes at the read point: they leave the ring and
    /// the window opens.</summary>
    private void Consumed(int c, int n)
    {
        ref var t = ref _tcp[c];
        uint before = RcvWindow(c);
        t.RcvRead += (uint)n;
        TcpRcvSpaceAdjust(c);
        // A window update when reading opened the window a good deal (RFC 9293 §3.8.6.2.2).
        if (t.State is TcpState.Established or TcpState.FinWait1 or TcpState.FinWait2 &&
            RcvWindow(c) - before >= Math.Min((uint)t.RcvBufSize / 2, 2u * (uint)TcpOwnMss) &&
            (uint)(t.RcvAdv - t.RcvNxt) < (uint)t.RcvBufSize / 2)
        {
            t.AckNow = true;
            TcpOutput(c);
            Flush();
        }
        Mirror(c); // RCV.NXT - the read point: unread data may be gone
    }

    /// <summary>recv(MSG_PEEK): copies what is readable without consuming it; otherwise as <see cref="TcpReceive"/>
    /// (0 at end of stream, a pending error taken, -EAGAIN).</summary>
    public int TcpPeek(int c, Span<byte> buffer)
    {
        if (!_tcp.IsValid(c))
            return -(int)Errno.EBADF;
        ref var t = ref _tcp[c];
        int readable = t.Readable;
        if (readable > 0 && buffer.Length > 0)
        {
            int n = Math.Min(readable, buffer.Length);
            ByteRing.Read(_tcp.ReceiveRing(c), t.RcvRead + (uint)t.RcvLent - t.Irs - 1, buffer[..n]);
            return n;
        }
        return NothingToRead(ref t);
    }

    /// <summary>What a read with nothing to copy says: end of stream, the pending error, ENOTCONN or EAGAIN.</summary>
    private static int NothingToRead(ref TcpConnection t)
    {
        // Linux's order (tcp_recvmsg): the peer's FIN ends the stream before a pending error is reported, so a
        // reset after the FIN is left for send() to report.
        if (t.FinReceived)
            return 0;
        if (t.Error != 0)
            return -TakeError(ref t.Error);
        if (t.Dead || t.ShutdownRead)
            return 0;
        if (t.State is TcpState.Closed or TcpState.Listen)
            return -(int)Errno.ENOTCONN;
        return -(int)Errno.EAGAIN;
    }

    /// <summary>shutdown(): SHUT_WR sends a FIN after the queued data; SHUT_RD makes reads end.</summary>
    public int TcpShutdown(int c, bool read, bool write)
    {
        if (!_tcp.IsValid(c))
            return -(int)Errno.EBADF;
        ref var t = ref _tcp[c];
        if (!TcpIsConnected(c) && t.State != TcpState.SynReceived)
            return -(int)Errno.ENOTCONN;
        if (read)
            t.ShutdownRead = true;
        if (write && !t.FinQueued)
        {
            t.FinQueued = true;
            if (t.State == TcpState.Established)
                SetState(c, TcpState.FinWait1);
            else if (t.State == TcpState.CloseWait)
                SetState(c, TcpState.LastAck);
            TcpOutput(c);
            Mirror(c);
            Flush();
        }
        return 0;
    }

    /// <summary>
    /// close(): a FIN after the queued data (the stack finishes the connection on its own), or a RST when unread
    /// data is left or SO_LINGER is zero, as Linux does (RFC 9293 §3.10.4 leaves the unread-data case open).
    /// </summary>
    public int TcpClose(int c)
    {
        if (!_tcp.IsValid(c))
            return -(int)Errno.EBADF;
        ref var t = ref _tcp[c];
        switch (t.State)
        {
            case TcpState.Listen:
                // Connections not yet accepted are reset: both queues are lists off the listener, and each
                // child leaves its list as it is freed.
                while (t.AcceptHead >= 0)
                    TcpAbort(t.AcceptHead);
                while (t.SynHead >= 0)
                    TcpAbort(t.SynHead);
                TcpFree(c);
                return 0;
            case TcpState.Closed:
            case TcpState.SynSent:
                TcpFree(c);
                return 0;
        }
        bool unread = t.Readable > 0;
        if (unread || t.LingerZero)
        {
            if (unread)
                Counters.TcpExtTCPAbortOnClose++;
            else
                Counters.TcpExtTCPAbortOnData++;
            TcpAbort(c);
            return 0;
        }
        t.Orphaned = true;
        if (t.State is TcpState.Established or TcpState.SynReceived or TcpState.CloseWait)
            TcpShutdown(c, read: true, write: true);
        if (t.Dead || t.State == TcpState.Closed)
            TcpFree(c);
        return 0;
    }

    /// <summary>Sends a RST and frees the connection (SO_LINGER 0, unread data on close).</summary>
    private void TcpAbort(int c)
    {
        ref var t = ref _tcp[c];
        if (t.State is not (TcpState.Closed or TcpState.Listen or TcpState.SynSent or TcpState.TimeWait))
            TcpSendFlags(c, AcceptableSeq(ref t, t.SndMax), TcpFlags.Rst | TcpFlags.Ack);
        Flush();
        TcpFree(c);
    }

    /// <summary>The connection failed (reset, refused, timed out): it keeps its row, with the error, until closed.</summary>
    private void TcpFail(int c, int errno)
    {
        ref var t = ref _tcp[c];
        if (t.State is TcpState.SynSent or TcpState.SynReceived)
            Counters.TcpAttemptFails++;
        // A timeout reports the ICMP error that explains it, if one came (Linux's tcp_write_err).
        if (errno == (int)Errno.ETIMEDOUT && t.SoftError != 0)
            errno = t.SoftError;
        t.Error = errno;
        t.Dead = true;
        if (t.Orphaned || t.Listener >= 0)
        {
            TcpFree(c);
            return;
        }
        SetState(c, TcpState.Closed);
        CancelTcpTimers(c);
        _tcp.Unhash(c);
    }

    private void TcpClosed(int c)
    {
        ref var t = ref _tcp[c];
        if (t.Orphaned)
        {
            TcpFree(c);
            return;
        }
        SetState(c, TcpState.Closed);
        t.Dead = true;
        CancelTcpTimers(c);
        _tcp.Unhash(c);
    }

    private void EnterTimeWait(int c)
    {
        ref var t = ref _tcp[c];
        SetState(c, TcpState.TimeWait);
        _timers.Cancel(TcpTimerId(c, TcpTimer.Retransmit));
        _timers.Schedule(TcpTimerId(c, TcpTimer.Keepalive), _now + 2 * Options.TcpMslNs);
    }

    /// <summary>Every state change goes through here, so that TcpCurrEstab (ESTABLISHED and CLOSE_WAIT, as in
    /// RFC 4022's tcpCurrEstab) and the TIME_WAIT list stay true.</summary>
    private void SetState(int c, TcpState state)
    {
        ref var t = ref _tcp[c];
        bool was = t.State is TcpState.Established or TcpState.CloseWait;
        bool now = state is TcpState.Established or TcpState.CloseWait;
        if (was != now)
            Counters.TcpCurrEstab += now ? 1 : -1;
        if (t.State == TcpState.TimeWait && state != TcpState.TimeWait)
            UnlinkTimeWait(c);
        else if (state == TcpState.TimeWait && t.State != TcpState.TimeWait)
            LinkTimeWait(c);
        t.State = state;
    }

    /// <summary>A row for a new connection. When the table is full, the oldest TIME_WAIT connection the application
    /// has closed ends early to make room, as Onload does: a server closing first leaves a TIME_WAIT per
    /// connection for 2MSL, so at a few thousand connections a second the table would otherwise fill with them
    /// and refuse every SYN (Linux stops keeping TIME_WAITs at tcp_max_tw_buckets for the same reason). What
    /// TIME_WAIT guards against, an old duplicate taken for new data, needs the same 4-tuple reused within 2MSL
    /// with sequence numbers that fit, which timestamps (PAWS) and ISNs per RFC 6528 make unlikely.</summary>
    private int AllocateTcpRow()
    {
        int c = _tcp.Allocate();
        if (c >= 0)
            return c;
        for (int old = _timeWaitOldest; old >= 0; old = _tcp[old].TimeWaitNext)
        {
            if (!_tcp[old].Orphaned)
                continue; // the application still holds it: its descriptor must stay valid
            Counters.TcpExtTCPTimeWaitOverflow++;
            TcpFree(old);
            return _tcp.Allocate();
        }
        return -1;
    }

    private void LinkTimeWait(int c)
    {
        ref var t = ref _tcp[c];
        t.TimeWaitNext = -1;
        t.TimeWaitPrev = _timeWaitNewest;
        if (_timeWaitNewest >= 0)
            _tcp[_timeWaitNewest].TimeWaitNext = c;
        else
            _timeWaitOldest = c;
        _timeWaitNewest = c;
    }

    private void UnlinkTimeWait(int c)
    {
        ref var t = ref _tcp[c];
        if (t.TimeWaitPrev >= 0)
            _tcp[t.TimeWaitPrev].TimeWaitNext = t.TimeWaitNext;
        else
            _timeWaitOldest = t.TimeWaitNext;
        if (t.TimeWaitNext >= 0)
            _tcp[t.TimeWaitNext].TimeWaitPrev = t.TimeWaitPrev;
        else
            _timeWaitNewest = t.TimeWaitPrev;
        t.TimeWaitNext = t.TimeWaitPrev = -1;
    }

    private void CancelTcpTimers(int c)
    {
        for (int k = 0; k < (int)TcpTimer.Count; k++)
            _timers.Cancel(TcpTimerId(c, (TcpTimer)k));
    }

    private void TcpFree(int c)
    {
        ref var t = ref _tcp[c];
        if (t.Listener >= 0 && _tcp.IsValid(t.Listener))
        {
            if (t.State == TcpState.SynReceived)
                RemoveFromSynQueue(t.Listener, c);
            else
                RemoveFromAcceptQueue(t.Listener, c);
        }
        CancelTcpTimers(c);
        SetState(c, TcpState.Closed);
        if (_control != null)
            TcpReleaseReserved(c);
        _tcp.Free(c);
        _mirror?.Clear(c); // a child shares its listener's port without owning it: Free leaves that port alone
    }

    private void RemoveFromAcceptQueue(int listener, int c)
    {
        ref var l = ref _tcp[listener];
        int prev = -1;
        for (int i = l.AcceptHead; i >= 0; prev = i, i = _tcp[i].AcceptNext)
        {
            if (i != c)
                continue;
            if (prev < 0)
                l.AcceptHead = _tcp[i].AcceptNext;
            else
                _tcp[prev].AcceptNext = _tcp[i].AcceptNext;
            if (l.AcceptTail == c)
                l.AcceptTail = prev;
            l.AcceptQueueLength--;
            return;
        }
    }

    /// <summary>TCP_NODELAY: setting it sends what Nagle held back.</summary>
    public int TcpSetNoDelay(int c, bool on)
    {
        if (!_tcp.IsValid(c))
            return -(int)Errno.EBADF;
        _tcp[c].NoDelay = on;
        if (on)
            PushPending(c);
        return 0;
    }

    /// <summary>TCP_CORK: clearing it sends what waited.</summary>
    public int TcpSetCork(int c, bool on)
    {
        if (!_tcp.IsValid(c))
            return -(int)Errno.EBADF;
        _tcp[c].Cork = on;
        if (!on)
            PushPending(c);
        return 0;
    }

    private void PushPending(int c)
    {
        TcpOutput(c);
        Mirror(c);
        Flush();
    }

    /// <summary>Publishes connection <paramref name="c"/>'s state to the mirror, if there is one: called where a
    /// step of the state machine ends (a segment processed, a socket call, a timer), so one update covers every
    /// field that step changed.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void Mirror(int c)
    {
        if (_mirror != null)
            MirrorUpdate(c);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void MirrorUpdate(int c)
    {
        ref var t = ref _tcp[c];
        if (!t.InUse)
        {
            _mirror!.Clear(c);
            return;
        }
        var r = default(ConnectionMirrorLayout.Copy);
        r.State = t.State;
        r.LocalPort = t.LocalPort;
        r.RemoteAddress = t.RemoteAddress.Value;
        r.RemotePort = t.RemotePort;
        r.SndNxt = t.SndNxt;
        r.RcvNxt = t.RcvNxt;
        r.SndUna = t.SndUna;
        r.TsRecent = t.TsRecent;
        r.TsVal = TcpTimestampNow;
        r.RcvWndShift = t.RcvWndShift;
        long window = Seq.Gt(t.RcvAdv, t.RcvNxt) ? (long)(t.RcvAdv - t.RcvNxt) >> t.RcvWndShift : 0;
        r.Window = (ushort)Math.Min(window, ushort.MaxValue);
        var flags = MirrorFlags.None;
        if (t.Readable > 0)
            flags |= MirrorFlags.Unread;
        if ((int)(t.SndUna + (uint)t.SndQueued - t.SndNxt) > 0)
            flags |= MirrorFlags.Unsent;
        if (t.SndUna != t.SndNxt)
            flags |= MirrorFlags.Unacked;
        if (t.Timestamps)
            flags |= MirrorFlags.Timestamps;
        if (t.Listener >= 0)
            flags |= MirrorFlags.NotAccepted;
        if (t.FinSent)
            flags |= MirrorFlags.FinSent;
        if (t.Dead)
            flags |= MirrorFlags.Dead;
        r.Flags = flags;
        var nextHop = _subnet.Contains(t.RemoteAddress) || Options.Gateway is not { } gateway ? t.RemoteAddress : gateway;
        r.NextHop = nextHop.Value;
        if (!_mirror!.TryCachedMac(c, t.RemoteAddress, _neighbourGeneration, out var mac))
        {
            int i = _arp.Find(nextHop);
            mac = i >= 0 && _arp[i].State != NeighbourState.Incomplete ? _arp[i].Mac : MacAddress.Zero;
            _mirror.CacheMac(c, t.RemoteAddress, _neighbourGeneration, mac);
        }
        r.RemoteMac = mac.Value;
        _mirror.Write(c, r);
    }

    /// <summary>TCP_CONGESTION: "cubic" or "reno", as Linux names them; -ENOENT for any other, as Linux.</summary>
    public int TcpSetCongestionControl(int c, string name)
    {
        if (!_tcp.IsValid(c))
            return -(int)Errno.EBADF;
        if (!TryParseCongestionControl(name, out var algorithm))
            return -(int)Errno.ENOENT;
        ref var t = ref _tcp[c];
        t.Congestion = algorithm;
        t.Cubic = default;
        return 0;
    }

    public static bool TryParseCongestionControl(string name, out CongestionControl algorithm)
    {
        switch (name)
        {
            case "cubic":
                algorithm = CongestionControl.Cubic;
                return true;
            case "reno":
                algorithm = CongestionControl.NewReno;
                return true;
            default:
                algorithm = default;
                return false;
        }
    }

    /// <summary>SO_LINGER with a zero timeout: close() resets.</summary>
    public int TcpSetLingerZero(int c, bool on)
    {
        if (!_tcp.IsValid(c))
            return -(int)Errno.EBADF;
        _tcp[c].LingerZero = on;
        return 0;
    }

    /// <summary>SO_KEEPALIVE with TCP_KEEPIDLE, TCP_KEEPINTVL and TCP_KEEPCNT (0 keeps the current value).</summary>
    public int TcpSetKeepalive(int c, bool on, long idleNs = 0, long intervalNs = 0, int count = 0)
    {
        if (!_tcp.IsValid(c))
            return -(int)Errno.EBADF;
        if (idleNs < 0 || intervalNs < 0 || count < 0)
            return -(int)Errno.EINVAL;
        ref var t = ref _tcp[c];
        t.KeepAlive = on;
        if (idleNs > 0)
            t.KeepIdleNs = idleNs;
        if (intervalNs > 0)
            t.KeepIntervalNs = intervalNs;
        if (count > 0)
            t.KeepCount = count;
        ArmKeepalive(c);
        return 0;
    }

    /// <summary>TCP_USER_TIMEOUT: how long sent data may stay unacknowledged before the connection fails (0: off).</summary>
    public int TcpSetUserTimeout(int c, long timeoutNs)
    {
        if (!_tcp.IsValid(c))
            return -(int)Errno.EBADF;
        if (timeoutNs < 0)
            return -(int)Errno.EINVAL;
        _tcp[c].UserTimeoutNs = timeoutNs;
        return 0;
    }

    private void ArmKeepalive(int c)
    {
        ref var t = ref _tcp[c];
        if (t.KeepAlive && t.State is TcpState.Established or TcpState.CloseWait)
            _timers.Schedule(TcpTimerId(c, TcpTimer.Keepalive), Math.Max(t.LastReceivedAt, _now) + t.KeepIdleNs);
        else if (t.State is not (TcpState.TimeWait or TcpState.FinWait2))
            _timers.Cancel(TcpTimerId(c, TcpTimer.Keepalive));
    }
}
