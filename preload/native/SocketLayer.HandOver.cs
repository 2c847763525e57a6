using Onload.Stack;
using Onload.Stack.Tcp;
using Onload.Stack.Wire;
using Onload.Vnic;

namespace Onload.Native;

/// <summary>
/// Handing sockets to the kernel at fork and exec (docs/PRELOAD-NOTES.md, "fork and exec"): the stack lives in this
/// process's memory, so a socket another process will use (a forked child, the program an exec starts) must be one
/// the kernel carries. The shim calls these with the program's placeholder fd for each such socket.
/// </summary>
internal sealed partial class SocketLayer
{
    /// <summary>How long each wait of a hand-over may take before it goes on anyway: a listener's handshakes and its
    /// closing connections' last data (unacknowledged bytes are then lost, as after SO_LINGER's timeout), a port's
    /// release, a UDP socket's last datagrams.</summary>
    private const int HandOverWaitMs = 1000;

    /// <summary>Connection <paramref name="c"/> becomes kernel socket <paramref name="socketFd"/> (see
    /// <see cref="NetStack.TcpHandOver"/>); 0 or a negated errno, with the connection left on the stack.</summary>
    public int HandOver(int c, int socketFd)
    {
        lock (_lock)
        {
            PollStack();
            int rc = _stack.TcpHandOver(c, socketFd);
            PollStack(); // a connection with its own port gives it back: its frames go to the kernel from here
            return rc;
        }
    }

    /// <summary>
    /// Listener <paramref name="c"/> leaves the stack so that the kernel can listen on its port: handshakes under way
    /// finish and the closed connections on the port finish sending (for up to <see cref="HandOverWaitMs"/>), then
    /// the stack lets go of the port and this waits until its filter and kernel socket are gone, so that the caller
    /// can bind it (once the last listener of an SO_REUSEPORT group is handed over). Returns the port, or a negated
    /// errno with the listener left on the stack (EAGAIN: connections wait to be accepted, accept and hand them over,
    /// then call again; EBUSY: the program holds one on the port).
    /// </summary>
    public int HandOverListener(int c)
    {
        ushort port;
        lock (_lock)
        {
            var table = _stack.TcpConnections;
            if (!table.IsValid(c) || table[c].State != TcpState.Listen)
                return -(int)Errno.EINVAL;
            port = table[c].LocalPort;
        }
        RunStackUntil(() => !_stack.TcpListenerSettling(c), HandOverWaitMs);
        lock (_lock)
        {
            int rc = _stack.TcpHandOverListener(c);
            if (rc != 0)
                return rc;
            if (_stack.TcpPortListened(port))
                return port; // the rest of its SO_REUSEPORT group goes next, and the port with the last of them
        }
        // The port's release waits for frames sent from it to leave the VNIC (DriverlinkSession.ReleasePort). The
        // listener is gone either way: the caller's bind says whether the port is free.
        RunStackUntil(() => !_session.Holds((byte)IpProtocol.Tcp, port), HandOverWaitMs);
        return port;
    }

    /// <summary>
    /// Before listener <paramref name="c"/> is handed over: its port, still the stack's, may be bound and listened on
    /// by a kernel socket setting SO_REUSEADDR (<see cref="DriverlinkSession.SharePort"/>), so the program's
    /// placeholder can listen before <see cref="HandOverListener"/> lets the port's frames go to the kernel. 0, or a
    /// negated errno (the caller then binds after the hand-over, as before).
    /// </summary>
    public int ShareListenerPort(int c)
    {
        lock (_lock)
        {
            var table = _stack.TcpConnections;
            if (!table.IsValid(c) || table[c].State != TcpState.Listen)
                return -(int)Errno.EINVAL;
            return _session.SharePort((byte)IpProtocol.Tcp, table[c].LocalPort);
        }
    }

    /// <summary>
    /// UDP socket <paramref name="s"/> leaves the stack for the kernel socket that has held its port all along
    /// (<see cref="DriverlinkSession.TakePortSocket"/>): bound, a member of the groups the socket joined, and from here
    /// on the one the port's datagrams reach. Returns that socket for the caller to put in the program's fd, or a
    /// negated errno with the socket left on the stack; <paramref name="dropped"/> says how many datagrams were
    /// queued on the stack (they are lost).
    /// </summary>
    public int UdpHandOver(int s, out int dropped)
    {
        dropped = 0;
        // Its last datagrams leave first, those waiting for a neighbour's MAC included (the answer the program sent
        // just before it forked): the daemon forwards a frame only from a port the VNIC holds.
        RunStackUntil(() => _stack.Vnic.TxPending() == 0 && _stack.Neighbours.PendingCount == 0, HandOverWaitMs);
        lock (_lock)
        {
            var table = _stack.UdpSockets;
            if (!table.IsValid(s) || !table[s].PortReserved)
                return -(int)Errno.EINVAL;
            dropped = table[s].QueueCount;
            int fd = _session.TakePortSocket((byte)IpProtocol.Udp, table[s].LocalPort);
            if (fd >= 0)
                _stack.UdpClose(s);
            return fd;
        }
    }

    /// <summary>Runs the stack (sleeping on the VNIC between looks) until <paramref name="done"/>, checked under the
    /// lock after each poll, or <paramref name="timeoutMs"/> passes. A cold path: the hand-overs only.</summary>
    private void RunStackUntil(Func<bool> done, int timeoutMs)
    {
        long deadline = MonotonicClock.Instance.NowNanoseconds + timeoutMs * 1_000_000L;
        while (true)
        {
            int waitFd;
            lock (_lock)
            {
                PollStack();
                if (done())
                    return;
                waitFd = _stack.Vnic.PrepareToSleep() ? _stack.Vnic.WaitHandle : -1;
            }
            if (MonotonicClock.Instance.NowNanoseconds >= deadline)
                return;
            WaitReadable(waitFd, 1);
        }
    }
}
