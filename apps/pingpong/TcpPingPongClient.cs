using System.Buffers.Binary;
using System.Diagnostics;
using Onload.Stack;
using Onload.Stack.Wire;

namespace Onload.Apps.PingPong;

/// <summary>
/// TCP ping-pong over one connection with TCP_NODELAY, as <c>sockperf ping-pong --tcp</c> measures it: one message
/// of <see cref="ClientSettings.Size"/> bytes in flight, the reply read whole, half the round trip recorded. A TCP
/// stream has no message boundaries, so messages are framed by their size (sockperf's header carries it; the server
/// answers each with a message as long). Busy-polls, never sleeps, never allocates in the loop.
/// </summary>
/// <remarks>TCP loses nothing, so a message "lost" here is one whose reply took longer than the timeout; that reply
/// is read later and counted stale, and the stream stays in step because every reply has the same size.</remarks>
internal sealed class TcpPingPongClient(NetStack stack, ClientSettings settings) : LatencyClient(stack, settings)
{
    private static readonly long CloseTicks = Stopwatch.Frequency;
    private readonly byte[] _tx = Message(settings.Size);
    private readonly byte[] _rx = new byte[settings.Size];
    private int _socket = -1;
    private int _filled; // bytes of the reply in progress already in _rx
    private ulong _sequence;

    public long Sent { get; private set; }
    /// <summary>The connection failed (reset, closed by the peer): the run ended early.</summary>
    public bool Broken { get; private set; }

    protected override bool Ended => Broken;

    /// <summary>Connects, waiting for the handshake (at least 3 s: the first SYN may wait for ARP). Returns 0 or a
    /// negated errno.</summary>
    public int Open()
    {
        int c = TcpDial.Connect(Stack, Settings.Server, Settings.LocalPort, Math.Max(TimeoutTicks, 3 * Stopwatch.Frequency));
        if (c < 0)
            return c;
        _socket = c;
        return 0;
    }

    public Ipv4Endpoint LocalEndpoint => Stack.TcpLocalEndpoint(_socket);

    /// <summary>Closes the connection, waiting briefly for the peer to acknowledge our FIN.</summary>
    public void Close()
    {
        if (_socket >= 0)
            TcpDial.Close(Stack, _socket, CloseTicks);
        _socket = -1;
    }

    private void Fail(int errno)
    {
        Count(errno);
        Broken = true;
    }

    /// <summary>One message and its reply. True with half the round trip, false when late or the connection failed.</summary>
    protected override bool Step(out long halfRttNs)
    {
        halfRttNs = 0;
        ulong seq = ++_sequence;
        WriteRequest(_tx, seq);

        long t0 = Stopwatch.GetTimestamp();
        long deadline = t0 + TimeoutTicks;
        Sent++;
        // The whole message goes into the send ring (a message larger than the room left waits for ACKs).
        for (int off = 0; off < _tx.Length;)
        {
            int rc = Stack.TcpSend(_socket, _tx.AsSpan(off));
            if (rc >= 0)
                off += rc;
            else if (rc != -(int)Errno.EAGAIN)
            {
                Fail(rc);
                return false;
            }
            else
                Stack.Poll();
        }
        while (true)
        {
            Stack.Poll();
            while (true)
            {
                int n = Stack.TcpReceive(_socket, _rx.AsSpan(_filled));
                if (n == -(int)Errno.EAGAIN)
                    break;
                if (n <= 0)
                {
                    Fail(n == 0 ? -(int)Errno.ECONNRESET : n); // end of stream mid-run: the server went away
                    return false;
                }
                _filled += n;
                if (_filled < _rx.Length)
                    continue;
                _filled = 0;
                if (IsReplyTo(_rx, seq))
                {
                    halfRttNs = Nanoseconds(Stopwatch.GetTimestamp() - t0) / 2;
                    return true;
                }
                Stale++;
            }
            if (Stopwatch.GetTimestamp() >= deadline)
            {
                Lost++;
                return false;
            }
        }
    }

    private bool IsReplyTo(Span<byte> reply, ulong seq)
    {
        if (!Settings.Sockperf)
            return BinaryPrimitives.ReadUInt64BigEndian(reply) == seq;
        if (!SockperfHeader.IsValid(reply))
            return false;
        var h = new SockperfHeader(reply);
        return h.Sequence == seq && !h.IsClient && h.MessageLength == (uint)reply.Length;
    }
}
