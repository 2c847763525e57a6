using Onload.Stack.Wire;
using Onload.Stack.Tcp;
using Onload.Vnic;

namespace Onload.Stack;

// The link as the control plane reports it (driverlink mode, though usable in both): its MTU, whether it is up,
// and whether the stack may touch the VNIC at all (suspended while the daemon moves or resets it).
public sealed partial class NetStack
{
    /// <summary>The least MTU an IPv4 link may have (RFC 791: every host must take a 68-byte datagram).</summary>
    public const int MinMtu = 68;

    private int _mtu;
    private bool _linkDown;
    private bool _suspended;
    /// <summary>Link down or suspended: one test in <see cref="Flush"/> covers both.</summary>
    private bool _txBlocked;

    /// <summary>The largest IP packet the stack sends: the VNIC's MTU until <see cref="SetMtu"/> changes it.</summary>
    public int Mtu => _mtu;

    /// <summary>False after <see cref="SetLinkUp"/>(false): frames sent meanwhile are dropped
    /// (<see cref="DropReason.TxLinkDown"/>) and TCP sends them again once it is back.</summary>
    public bool LinkUp => !_linkDown;

    /// <summary>Between <see cref="Suspend"/> and <see cref="Resume"/>.</summary>
    public bool Suspended => _suspended;

    /// <summary>
    /// The link's MTU changed (the kernel reports it after the fact). From now on no frame larger than
    /// <paramref name="mtu"/> + 14 is sent: new connections offer an MSS that fits it, established ones lower the
    /// MSS they send with (never above the peer's), segments already in flight go again in pieces that fit
    /// (as Linux's tcp_fragment on retransmit), and UDP datagrams that no longer fit are fragmented. Clamped to what
    /// a VNIC buffer holds; on the stack's thread.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="mtu"/> is below <see cref="MinMtu"/>.</exception>
    public void SetMtu(int mtu)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(mtu, MinMtu);
        mtu = Math.Min(mtu, _pool.BufferSize - EthernetFrame.HeaderLength);
        if (mtu == _mtu)
            return;
        _mtu = mtu;
        for (int c = 0; c < _tcp.Capacity; c++)
            if (_tcp.IsValid(c))
                TcpSyncMss(c);
    }

    /// <summary>
    /// The link went down or came back (the kernel's carrier). While down, frames the stack sends are dropped and
    /// counted (<see cref="DropReason.TxLinkDown"/>); receiving goes on. TCP does nothing special: its retransmission
    /// timer sends again, as Linux's does over a link that lost its carrier. On the stack's thread.
    /// </summary>
    public void SetLinkUp(bool up)
    {
        _linkDown = !up;
        _txBlocked = _linkDown || _suspended;
    }

    /// <summary>
    /// The VNIC is gone for good (driverlink: the daemon died and none took the client back in time): every TCP
    /// connection and listener fails with <paramref name="errno"/> (a negated or positive errno), so that a call
    /// blocked on one returns instead of waiting for a peer that can no longer reach it. Nothing is sent. Returns how
    /// many failed. On the stack's thread.
    /// </summary>
    public int FailTcp(int errno)
    {
        errno = Math.Abs(errno);
        int failed = 0;
        for (int c = 0; c < _tcp.Capacity; c++)
        {
            if (!_tcp.IsValid(c) || _tcp[c].Dead || _tcp[c].State is TcpState.Closed or TcpState.TimeWait)
                continue;
            TcpFail(c, errno);
            failed++;
        }
        return failed;
    }

    /// <summary>
    /// Stops the stack touching the VNIC: until <see cref="Resume"/>, <see cref="Poll"/> and <see cref="Flush"/>
    /// never call its Receive or Transmit. Timers still run; what the stack sends meanwhile waits in the transmit
    /// batch (a full batch drops the newest, counted as <see cref="DropReason.TxSuspended"/>, which TCP sends
    /// again). On the stack's thread.
    /// </summary>
    public void Suspend()
    {
        Counters.VnicSuspends++;
        _suspended = true;
        _txBlocked = true;
    }

    /// <summary>Ends <see cref="Suspend"/> and sends what waited.</summary>
    public void Resume()
    {
        _suspended = false;
        _txBlocked = _linkDown;
        Flush();
    }

    /// <summary><see cref="Flush"/> with the link down (the batch is dropped) or suspended (it stays).</summary>
    private void FlushBlocked()
    {
        if (_linkDown)
            DropQueuedTransmits(DropReason.TxLinkDown);
    }

    private void DropQueuedTransmits(DropReason reason)
    {
        for (int i = 0; i < _txCount; i++)
        {
            Counters.Count(reason);
            _pool.Release(_txBatch[i].Buffer);
        }
        _txCount = 0;
    }
}
