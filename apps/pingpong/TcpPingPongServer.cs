using Onload.Stack;
using Onload.Stack.Wire;

namespace Onload.Apps.PingPong;

/// <summary>
/// The busy-polling TCP answering side, any number of connections: with <c>sockperf</c> it answers as
/// <c>sockperf server --tcp</c> does (messages framed by the length in their header; a client's pong request comes
/// back with the client flag cleared, anything else gets no reply), without it it echoes the stream as it comes,
/// or with <c>sink</c> reads and discards it (the far end of <c>--stream</c>, counting bytes as received).
/// </summary>
internal sealed class TcpPingPongServer(NetStack stack, ushort port, bool sockperf, bool sink) : BusyPollServer(stack)
{
    private const int MaxMessage = 65536;
    private readonly List<Peer> _peers = [];
    private int _listener = -1;

    public long Accepted { get; private set; }
    public override string Tally => $"accepted {Accepted} {base.Tally}";

    private sealed class Peer(int socket)
    {
        public int Socket { get; } = socket;
        /// <summary>Received bytes not yet a whole message.</summary>
        public byte[] In { get; } = new byte[MaxMessage];
        public int InLength;
        /// <summary>A reply the send ring had no room for yet: nothing more is read until it has gone.</summary>
        public byte[] Out { get; } = new byte[MaxMessage];
        public int OutOffset;
        public int OutLength;
    }

    public override int Open()
    {
        int s = Stack.TcpOpen();
        if (s < 0)
            return s;
        int rc = Stack.TcpBind(s, new Ipv4Endpoint(Ipv4Address.Any, port));
        if (rc == 0)
            rc = Stack.TcpSetNoDelay(s, true); // accepted connections inherit it, as on Linux
        if (rc == 0)
            rc = Stack.TcpListen(s, 128);
        if (rc < 0)
        {
            Stack.TcpClose(s);
            return rc;
        }
        _listener = s;
        return 0;
    }

    protected override void AnswerArrivals()
    {
        int c;
        while ((c = Stack.TcpAccept(_listener, out _)) >= 0)
        {
            _peers.Add(new Peer(c));
            Accepted++;
        }
        for (int i = _peers.Count - 1; i >= 0; i--)
        {
            if (Serve(_peers[i]))
                continue;
            Stack.TcpClose(_peers[i].Socket);
            _peers.RemoveAt(i);
        }
    }

    protected override void Closing()
    {
        foreach (var p in _peers)
            Stack.TcpClose(p.Socket);
        Stack.TcpClose(_listener);
    }

    /// <summary>Reads and answers what has arrived. False when the connection ended (or failed).</summary>
    private bool Serve(Peer p)
    {
        while (true)
        {
            if (p.OutLength > 0)
            {
                int sent = Stack.TcpSend(p.Socket, p.Out.AsSpan(p.OutOffset, p.OutLength));
                if (sent == -(int)Errno.EAGAIN)
                    return true;
                if (sent < 0)
                {
                    Errors++;
                    return false;
                }
                p.OutOffset += sent;
                p.OutLength -= sent;
                if (p.OutLength > 0)
                    return true;
            }
            int n = Stack.TcpReceive(p.Socket, p.In.AsSpan(p.InLength));
            if (n == -(int)Errno.EAGAIN)
                return true;
            if (n <= 0)
            {
                if (n < 0)
                    Errors++;
                return false;
            }
            p.InLength += n;
            if (!sockperf)
            {
                Received += n;
                if (!sink)
                    Reply(p, p.In.AsSpan(0, p.InLength));
                p.InLength = 0;
                continue;
            }
            if (!AnswerWholeMessages(p))
            {
                Errors++;
                return false;
            }
        }
    }

    /// <summary>Answers every whole sockperf message at the front of <c>p.In</c> and keeps the rest. False when a
    /// header is malformed: the stream cannot be framed any more.</summary>
    private bool AnswerWholeMessages(Peer p)
    {
        int offset = 0;
        while (p.InLength - offset >= SockperfHeader.Length)
        {
            var rest = p.In.AsSpan(offset, p.InLength - offset);
            var h = new SockperfHeader(rest);
            uint length = h.MessageLength;
            if (length < SockperfHeader.Length || length > MaxMessage)
                return false;
            if (rest.Length < length)
                break;
            Received++;
            if (h.IsClient && h.IsPongRequest && !h.IsWarmup)
            {
                h.Flags = (ushort)(h.Flags & ~SockperfHeader.FlagClient);
                Reply(p, rest[..(int)length]);
            }
            else
                Ignored++;
            offset += (int)length;
        }
        p.In.AsSpan(offset, p.InLength - offset).CopyTo(p.In);
        p.InLength -= offset;
        return true;
    }

    /// <summary>Sends what the send ring takes now and keeps the rest in <c>p.Out</c>.</summary>
    private void Reply(Peer p, ReadOnlySpan<byte> message)
    {
        int sent = p.OutLength > 0 ? 0 : Stack.TcpSend(p.Socket, message);
        if (sent < 0 && sent != -(int)Errno.EAGAIN)
        {
            Errors++;
            return;
        }
        sent = Math.Max(sent, 0);
        if (p.OutLength == 0)
            p.OutOffset = 0;
        // Replies held back never exceed what one read brought in (nothing is read while some are held): 64 KiB.
        if (sent < message.Length)
        {
            message[sent..].CopyTo(p.Out.AsSpan(p.OutOffset + p.OutLength));
            p.OutLength += message.Length - sent;
        }
        Replied++;
    }
}
