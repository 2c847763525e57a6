using Onload.Stack;
using Onload.Stack.Wire;

namespace Onload.Native;

/// <summary>One buffer of a gather or scatter list: C's <c>struct iovec</c>.</summary>
public unsafe struct IoVec
{
    public byte* Base;
    public nuint Length;
}

/// <summary>The UDP options the shim hands the stack (<c>ONLOAD_UDP_OPT_*</c> in onload_stack.h).</summary>
internal enum UdpOption
{
    ReceiveBuffer = 1,
    Broadcast = 2,
    MulticastTtl = 3,
    MulticastLoop = 4,
    AddMembership = 5,
    DropMembership = 6,
    ReuseAddress = 7,
    ReusePort = 8,
}

// UDP sockets for the shim: the stack's UDP calls (stack/Udp/NetStack.Udp.cs) under the layer's lock. A datagram is
// one unit, so a gather or scatter list of more than one buffer goes through one preallocated datagram-sized
// buffer (used under the lock): nothing is allocated per datagram.
internal sealed partial class SocketLayer
{
    private const int MaxDatagram = 65_535;
    private readonly byte[] _datagram = new byte[MaxDatagram];

    public int UdpOpen()
    {
        lock (_lock)
            return _stack.UdpOpen();
    }

    public int UdpBind(int s, Ipv4Endpoint local)
    {
        lock (_lock)
            return _stack.UdpBind(s, local);
    }

    public int UdpConnect(int s, Ipv4Endpoint remote)
    {
        lock (_lock)
            return _stack.UdpConnect(s, remote);
    }

    public int UdpDisconnect(int s)
    {
        lock (_lock)
            return _stack.UdpDisconnect(s);
    }

    /// <summary>
    /// Sends one datagram gathered from <paramref name="iov"/>: to <paramref name="destination"/>, or to the connected
    /// peer when it is null (EDESTADDRREQ when there is none). EMSGSIZE above the largest IPv4 datagram.
    /// </summary>
    public unsafe int UdpSend(int s, ReadOnlySpan<IoVec> iov, Ipv4Endpoint? destination)
    {
        long total = 0;
        foreach (var v in iov)
            total += (long)v.Length;
        lock (_lock)
        {
            PollStack();
            if (total > MaxDatagram)
                return -(int)Errno.EMSGSIZE;
            ReadOnlySpan<byte> payload;
            if (iov.Length == 1)
                payload = new ReadOnlySpan<byte>(iov[0].Base, (int)total);
            else
            {
                int at = 0;
                foreach (var v in iov)
                {
                    new ReadOnlySpan<byte>(v.Base, (int)v.Length).CopyTo(_datagram.AsSpan(at));
                    at += (int)v.Length;
                }
                payload = _datagram.AsSpan(0, at);
            }
            return destination is { } to ? _stack.UdpSendTo(s, payload, to) : _stack.UdpSend(s, payload);
        }
    }

    /// <summary>
    /// Receives (or with <paramref name="peek"/> copies, leaving it queued) the next datagram, scattered over
    /// <paramref name="iov"/>: the bytes copied, with the sender and the datagram's full length (for MSG_TRUNC).
    /// -EAGAIN when none is queued; a pending error first.
    /// </summary>
    public unsafe int UdpReceive(int s, ReadOnlySpan<IoVec> iov, bool peek, out Ipv4Endpoint from, out int datagramLength)
    {
        lock (_lock)
        {
            PollStack();
            if (iov.Length == 1)
                return _stack.UdpReceiveFrom(s, new Span<byte>(iov[0].Base, (int)Math.Min(iov[0].Length, int.MaxValue)),
                    out from, out datagramLength, peek);
            int n = _stack.UdpReceiveFrom(s, _datagram, out from, out datagramLength, peek);
            int at = 0;
            foreach (var v in iov)
            {
                if (at >= n)
                    break;
                int part = (int)Math.Min(v.Length, (nuint)(n - at));
                _datagram.AsSpan(at, part).CopyTo(new Span<byte>(v.Base, part));
                at += part;
            }
            return n < 0 ? n : at;
        }
    }

    /// <summary>FIONREAD: the next datagram's length, 0 when none (as Linux's udp_ioctl).</summary>
    public int UdpNextLength(int s)
    {
        lock (_lock)
        {
            PollStack();
            return _stack.UdpSockets.IsValid(s) ? _stack.UdpNextDatagramLength(s) : -(int)Errno.EBADF;
        }
    }

    public int UdpClose(int s)
    {
        lock (_lock)
            return _stack.UdpClose(s);
    }

    /// <summary>getsockname (peer false: 0.0.0.0:0 until bound, as Linux) or getpeername (ENOTCONN unless connected).</summary>
    public int UdpName(int s, bool peer, out Ipv4Endpoint endpoint)
    {
        endpoint = default;
        lock (_lock)
        {
            var table = _stack.UdpSockets;
            if (!table.IsValid(s))
                return -(int)Errno.EBADF;
            ref var u = ref table[s];
            if (!peer)
            {
                // A connected socket has chosen its source address: Linux reports it from then on.
                endpoint = _stack.UdpLocalEndpoint(s);
                if (u.Connected && endpoint.Address.IsAny)
                    endpoint = new Ipv4Endpoint(_stack.Address, endpoint.Port);
                return 0;
            }
            if (!u.Connected)
                return -(int)Errno.ENOTCONN;
            endpoint = new Ipv4Endpoint(u.RemoteAddress, u.RemotePort);
            return 0;
        }
    }

    public int UdpTakeError(int s)
    {
        lock (_lock)
            return _stack.UdpTakeError(s);
    }

    public int UdpSetOption(int s, UdpOption option, uint value)
    {
        lock (_lock)
        {
            return option switch
            {
                UdpOption.ReceiveBuffer => _stack.UdpSetReceiveBuffer(s, (int)Math.Min(value, int.MaxValue)),
                UdpOption.Broadcast => _stack.UdpSetBroadcast(s, value != 0),
                UdpOption.MulticastTtl => _stack.UdpSetMulticastTtl(s, (int)value),
                UdpOption.MulticastLoop => _stack.UdpSetMulticastLoop(s, value != 0),
                UdpOption.AddMembership => _stack.UdpJoinGroup(s, new Ipv4Address(value)),
                UdpOption.DropMembership => _stack.UdpLeaveGroup(s, new Ipv4Address(value)),
                UdpOption.ReuseAddress => _stack.UdpSetReuseAddress(s, value != 0),
                UdpOption.ReusePort => _stack.UdpSetReusePort(s, value != 0),
                _ => -(int)Errno.ENOPROTOOPT,
            };
        }
    }

    /// <summary>poll bits of a UDP socket, as Linux's udp_poll: POLLIN with a datagram queued, POLLOUT always (a
    /// send never waits for room here: it goes to the ring or fails), POLLERR with an error pending.</summary>
    private short UdpPollBits(int s)
    {
        const short PollIn = 0x001, PollOut = 0x004, PollErr = 0x008, PollNval = 0x020;
        var table = _stack.UdpSockets;
        if (!table.IsValid(s))
            return PollNval;
        ref var u = ref table[s];
        short r = PollOut;
        if (u.QueueCount > 0)
            r |= PollIn;
        if (u.Error != 0)
            r |= PollErr;
        return r;
    }
}
