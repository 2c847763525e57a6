using Onload.Stack.Memory;
using Onload.Stack.Tcp;
using Onload.Stack.Wire;

namespace Onload.Stack;

public sealed partial class NetStack
{
    /// <summary>How long segments of a handed-over connection are dropped in silence rather than answered with a
    /// RST: until its port's frames go to the kernel (the same call, or the process's exec).</summary>
    private const long HandedOverQuietNs = 5_000_000_000;

    /// <summary>Connections given away, by (local port, remote address, remote port), and until when.</summary>
    private readonly Dictionary<(ushort, uint, ushort), long> _handedOver = [];

    /// <summary>
    /// Gives connection <paramref name="c"/> (ESTABLISHED or CLOSE_WAIT) to the kernel: the control plane makes
    /// kernel socket <paramref name="socketFd"/> the connection (its state, the bytes sent and not yet acknowledged,
    /// the bytes not yet sent, the bytes not yet read), then the stack forgets its copy without a word to the peer.
    /// Until the port's frames reach the kernel, the stack drops the connection's segments in silence. Returns 0,
    /// or a negated errno with the connection left as it was: EOPNOTSUPP for a state that cannot be handed over
    /// (connecting, closing, an error pending) or a stack without a control plane that can take it.
    /// </summary>
    public int TcpHandOver(int c, int socketFd)
    {
        if (!_tcp.IsValid(c))
            return -(int)Errno.EBADF;
        ref var t = ref _tcp[c];
        if (t.State is not (TcpState.Established or TcpState.CloseWait) || t.FinQueued || t.Dead || t.Error != 0)
            return -(int)Errno.EOPNOTSUPP;
        if (_control is null)
            return -(int)Errno.EOPNOTSUPP;
        if (t.RcvLent > 0 || t.SndReserved)
            return -(int)Errno.EBUSY; // the application holds pointers into the rings (zero-copy)
        int sent = (int)(t.SndNxt - t.SndUna);
        int unsent = t.SndQueued - sent;
        int received = t.Readable;
        var state = new TcpHandOverState(
            Local: new Ipv4Endpoint(_address, t.LocalPort),
            Remote: new Ipv4Endpoint(t.RemoteAddress, t.RemotePort),
            SndUna: t.SndUna,
            RcvNxt: t.RcvNxt - (t.FinReceived ? 1u : 0u),
            SndWnd: t.SndWnd,
            SndWl1: t.SndWl1,
            RcvWnd: Seq.Gt(t.RcvAdv, t.RcvNxt) ? t.RcvAdv - t.RcvNxt : 0,
            Mss: t.PeerMss != 0 ? t.PeerMss : t.SndMss,
            WindowScaling: t.WindowScaling,
            SndWscale: t.SndWndShift,
            RcvWscale: t.RcvWndShift,
            Timestamps: t.Timestamps,
            TsVal: TcpTimestampNow,
            Sack: t.SackPermitted,
            PeerClosed: t.FinReceived,
            SentLength: sent,
            UnsentLength: unsent,
            ReceivedLength: received);
        // A cold path (fork, exec): the queues are copied out of their rings once.
        var send = new byte[sent + unsent];
        var receive = new byte[received];
        ByteRing.Read(_tcp.SendRing(c), t.SndUna - t.Iss - 1, send);
        ByteRing.Read(_tcp.ReceiveRing(c), t.RcvRead - t.Irs - 1, receive);
        int rc = _control.HandOverTcp(in state, socketFd, send.AsSpan(0, sent), send.AsSpan(sent), receive);
        if (rc != 0)
            return rc;
        _handedOver[(t.LocalPort, t.RemoteAddress.Value, t.RemotePort)] = _now + HandedOverQuietNs;
        Counters.TcpHandedOver++;
        _tcpConnectPort![t.LocalPort] = false; // the kernel's connection needs the port's frames: really give it back
        TcpFree(c); // no FIN, no RST: the connection goes on in the kernel
        return 0;
    }

    /// <summary>
    /// A listener whose port goes to the kernel (which listens on it in its place): its connections still in the
    /// SYN queue are dropped in silence (the peer's next segment meets the kernel), and so are the closed connections
    /// left on its port (the caller let those with data unacknowledged drain first), so the port is given back at
    /// once; until the kernel has the port's frames, segments for no connection on it are dropped in silence (a SYN
    /// is sent again, and then meets the kernel's listener). Returns 0, or with nothing changed: EINVAL if
    /// <paramref name="c"/> is not listening, EAGAIN while connections wait in its accept queue (accept and hand them
    /// over first), EBUSY while the program holds a connection on the port that could not be handed over.
    /// </summary>
    public int TcpHandOverListener(int c)
    {
        if (!_tcp.IsValid(c))
            return -(int)Errno.EBADF;
        ref var l = ref _tcp[c];
        if (l.State != TcpState.Listen)
            return -(int)Errno.EINVAL;
        ushort port = l.LocalPort;
        if (l.AcceptHead >= 0)
            return -(int)Errno.EAGAIN;
        // Connections the program holds on the port keep it (the other listeners of an SO_REUSEPORT group do not:
        // they are handed over too, and the port goes with the last).
        for (int i = 0; i < _tcp.Capacity; i++)
            if (i != c && _tcp.IsValid(i) && _tcp[i].LocalPort == port && _tcp[i].Listener < 0 && !_tcp[i].Orphaned &&
                _tcp[i].State != TcpState.Listen)
                return -(int)Errno.EBUSY;
        while (l.SynHead >= 0)
            TcpFree(l.SynHead);
        for (int i = 0; i < _tcp.Capacity; i++)
            if (i != c && _tcp.IsValid(i) && _tcp[i].LocalPort == port && _tcp[i].Orphaned)
                TcpFree(i);
        TcpFree(c);
        _handedOver[(port, 0, 0)] = _now + HandedOverQuietNs;
        return 0;
    }

    /// <summary>Whether a listener is left on <paramref name="port"/> (another of its SO_REUSEPORT group).</summary>
    public bool TcpPortListened(ushort port)
    {
        // A listener is bound, so it is on its port's list: no need to look at every row.
        for (int o = _tcp.FirstOnPort(port); o >= 0; o = _tcp.NextOnPort(o))
            if (_tcp[o].State == TcpState.Listen)
                return true;
        return false;
    }

    /// <summary>Whether listener <paramref name="c"/>'s port is not ready to go to the kernel yet: a handshake is
    /// under way (its last ACK is a round trip away), or a closed connection on the port has data or a FIN
    /// unacknowledged. The caller waits a while, then hands the listener over anyway.</summary>
    public bool TcpListenerSettling(int c)
    {
        if (!_tcp.IsValid(c) || _tcp[c].State != TcpState.Listen)
            return false;
        if (_tcp[c].SynHead >= 0)
            return true;
        ushort port = _tcp[c].LocalPort;
        for (int i = 0; i < _tcp.Capacity; i++)
            if (_tcp.IsValid(i) && _tcp[i].LocalPort == port && _tcp[i].Orphaned &&
                _tcp[i].State is TcpState.FinWait1 or TcpState.Closing or TcpState.LastAck)
                return true;
        return false;
    }

    /// <summary>A segment for no connection: one of a connection handed over lately is dropped in silence (the
    /// kernel has it, and answers once the port's frames reach it); a RST from here would end it.</summary>
    private bool HandedOverLately(ushort localPort, Ipv4Address remote, ushort remotePort) =>
        _handedOver.Count > 0 && Quiet((localPort, remote.Value, remotePort));

    /// <summary>A segment for no connection and no listener on a port whose listeners were handed over lately: the
    /// kernel will listen there in a moment (a SYN is sent again).</summary>
    private bool HandedOverLately(ushort localPort) => _handedOver.Count > 0 && Quiet((localPort, 0, 0));

    private bool Quiet((ushort, uint, ushort) key)
    {
        if (!_handedOver.TryGetValue(key, out long until))
            return false;
        if (_now < until)
            return true;
        _handedOver.Remove(key);
        return false;
    }
}
