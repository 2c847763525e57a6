using Onload.Stack;
using Onload.Stack.Wire;

namespace Onload.Apps.PingPong;

/// <summary>
/// The busy-polling answering side, for stack-to-stack rows: with <c>sockperf</c> it answers as
/// <c>sockperf server</c> does (pong requests from a client come back with the client flag cleared; warm-up
/// messages and anything else get no reply), without it it echoes every datagram as it came.
/// </summary>
internal sealed class PingPongServer(NetStack stack, ushort port, bool sockperf) : BusyPollServer(stack)
{
    private readonly byte[] _buffer = new byte[65536];
    private int _socket = -1;

    public override int Open()
    {
        int s = Stack.UdpOpen();
        if (s < 0)
            return s;
        int rc = Stack.UdpBind(s, new Ipv4Endpoint(Ipv4Address.Any, port));
        if (rc < 0)
        {
            Stack.UdpClose(s);
            return rc;
        }
        _socket = s;
        return 0;
    }

    protected override void AnswerArrivals()
    {
        int n;
        while ((n = Stack.UdpReceiveFrom(_socket, _buffer, out var from)) != -(int)Errno.EAGAIN)
        {
            if (n < 0)
            {
                Errors++;
                continue;
            }
            Received++;
            var message = _buffer.AsSpan(0, n);
            if (sockperf)
            {
                if (!SockperfHeader.IsValid(message))
                {
                    Ignored++;
                    continue;
                }
                var h = new SockperfHeader(message);
                if (!h.IsClient || h.IsWarmup || !h.IsPongRequest)
                {
                    Ignored++;
                    continue;
                }
                h.Flags = (ushort)(h.Flags & ~SockperfHeader.FlagClient);
                message = message[..(int)h.MessageLength];
            }
            if (Stack.UdpSendTo(_socket, message, from) < 0)
                Errors++;
            else
                Replied++;
        }
    }
}
