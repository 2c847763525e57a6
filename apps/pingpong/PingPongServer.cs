using Onload.Stack;
using Onload.Stack.Wire;

namespace Onload.Apps.PingPong;

/// <summary>
/// The busy-polling answering side, for stack-to-stack rows: with <c>sockperf</c> it answers as
/// <c>sockperf server</c> does (pong requests from a client come back with the client flag cleared; warm-up
/// messages and anything else get no reply), without it it echoes every datagram as it came.
/// </summary>
internal sealed class PingPongServer(NetStack stack, ushort port, bool sockperf)
{
    private readonly byte[] _buffer = new byte[65536];
    private int _socket = -1;
    private volatile bool _stop;

    public long Received { get; private set; }
    public long Replied { get; private set; }
    public long Ignored { get; private set; }
    public long Errors { get; private set; }

    public void Stop() => _stop = true;

    public int Open()
    {
        int s = stack.UdpOpen();
        if (s < 0)
            return s;
        int rc = stack.UdpBind(s, new Ipv4Endpoint(Ipv4Address.Any, port));
        if (rc < 0)
        {
            stack.UdpClose(s);
            return rc;
        }
        _socket = s;
        return 0;
    }

    /// <summary>Polls until <see cref="Stop"/>; never sleeps.</summary>
    public void Run()
    {
        while (!_stop)
        {
            stack.Poll();
            int n;
            while ((n = stack.UdpReceiveFrom(_socket, _buffer, out var from)) != -(int)Errno.EAGAIN)
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
                if (stack.UdpSendTo(_socket, message, from) < 0)
                    Errors++;
                else
                    Replied++;
            }
        }
    }
}
