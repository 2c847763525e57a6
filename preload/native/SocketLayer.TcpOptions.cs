using Onload.Stack;
using Onload.Stack.Tcp;

namespace Onload.Native;

/// <summary>The TCP socket options the stack keeps, as the shim names them (ONLOAD_TCP_OPT_* in onload_stack.h).</summary>
internal enum TcpOption
{
    NoDelay = 1,
    Cork = 2,
    KeepAlive = 3,
    KeepIdleSeconds = 4,
    KeepIntervalSeconds = 5,
    KeepCount = 6,
    LingerZero = 7,
    UserTimeoutMs = 8,
    ReceiveBuffer = 9,
    SendBuffer = 10,
    /// <summary>TCP_CONGESTION: 1 for cubic, 2 for reno.</summary>
    Congestion = 11,
    ReuseAddress = 12,
    ReusePort = 13,
}

// setsockopt and getsockopt of TCP connections: the shim has already given the option to the placeholder (which
// checked it as Linux does and reads it back); the stack gets the ones that change what it does.
internal sealed partial class SocketLayer
{
    private const long NsPerSecond = 1_000_000_000, NsPerMs = 1_000_000;

    public int TcpSetOption(int c, TcpOption option, long value)
    {
        lock (_lock)
        {
            var table = _stack.TcpConnections;
            if (!table.IsValid(c))
                return -(int)Errno.EBADF;
            bool keepAlive = table[c].KeepAlive;
            return option switch
            {
                TcpOption.NoDelay => _stack.TcpSetNoDelay(c, value != 0),
                TcpOption.Cork => _stack.TcpSetCork(c, value != 0),
                TcpOption.KeepAlive => _stack.TcpSetKeepalive(c, value != 0),
                TcpOption.KeepIdleSeconds => _stack.TcpSetKeepalive(c, keepAlive, idleNs: value * NsPerSecond),
                TcpOption.KeepIntervalSeconds => _stack.TcpSetKeepalive(c, keepAlive, intervalNs: value * NsPerSecond),
                TcpOption.KeepCount => _stack.TcpSetKeepalive(c, keepAlive, count: (int)Math.Min(value, int.MaxValue)),
                TcpOption.LingerZero => _stack.TcpSetLingerZero(c, value != 0),
                TcpOption.UserTimeoutMs => _stack.TcpSetUserTimeout(c, value * NsPerMs),
                TcpOption.ReceiveBuffer => _stack.TcpSetReceiveBuffer(c, (int)Math.Clamp(value, 0, int.MaxValue)),
                TcpOption.SendBuffer => _stack.TcpSetSendBuffer(c, (int)Math.Clamp(value, 0, int.MaxValue)),
                TcpOption.ReuseAddress => _stack.TcpSetReuseAddress(c, value != 0),
                TcpOption.ReusePort => _stack.TcpSetReusePort(c, value != 0),
                TcpOption.Congestion => value switch
                {
                    1 => _stack.TcpSetCongestionControl(c, "cubic"),
                    2 => _stack.TcpSetCongestionControl(c, "reno"),
                    _ => -(int)Errno.ENOENT, // as Linux for an algorithm it does not have
                },
                _ => -(int)Errno.ENOPROTOOPT,
            };
        }
    }

    /// <summary>The options whose value is the stack's own (the buffers, which auto-tuning moves); -ENOPROTOOPT for the
    /// others, which the placeholder reads back.</summary>
    public int TcpGetOption(int c, TcpOption option)
    {
        lock (_lock)
        {
            return option switch
            {
                TcpOption.ReceiveBuffer => _stack.TcpGetReceiveBuffer(c),
                TcpOption.SendBuffer => _stack.TcpGetSendBuffer(c),
                TcpOption.Congestion => _stack.TcpConnections.IsValid(c)
                    ? _stack.TcpConnections[c].Congestion == CongestionControl.NewReno ? 2 : 1
                    : -(int)Errno.EBADF,
                _ => -(int)Errno.ENOPROTOOPT,
            };
        }
    }
}
