using Onload.Stack;
using Onload.Stack.Wire;
using Onload.Vnic;

namespace Onload.Apps.Echo;

/// <summary>
/// The echo loop: poll the stack, answer every queued datagram, then spin for a while and sleep on the VNIC.
/// ICMP echo needs nothing here: the stack answers ping inside <see cref="NetStack.Poll"/>.
/// </summary>
internal sealed class EchoServer(NetStack stack, Settings settings)
{
    private readonly List<int> _sockets = [];
    private readonly byte[] _buffer = new byte[65536];
    private volatile bool _stop;

    public bool Stopped => _stop;

    public int AddUdpPort(ushort port)
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
        _sockets.Add(s);
        return 0;
    }

    private readonly List<(int Socket, TcpMode Mode)> _listeners = [];

    internal enum TcpMode
    {
        Echo,
        Sink,
        /// <summary>A minimal HTTP/1.1 responder: GET /bytes/N answers N bytes of a fixed pattern, then closes.</summary>
        Http,
    }
    private readonly List<TcpPeer> _connections = [];

    /// <summary>A TCP connection being served: echoed back, or (sink) read, counted and hashed.</summary>
    private sealed class TcpPeer(int socket, TcpMode mode)
    {
        public int Socket { get; } = socket;
        public TcpMode Mode { get; } = mode;
        public bool Sink => Mode == TcpMode.Sink;
        public string Request = "";
        public long BodyLeft = -1;
        public byte[] Pending { get; } = new byte[65536];
        public int PendingOffset;
        public int PendingLength;
        public long Bytes;
        public System.Security.Cryptography.IncrementalHash Hash { get; } =
            System.Security.Cryptography.IncrementalHash.CreateHash(System.Security.Cryptography.HashAlgorithmName.SHA256);
    }

    public int AddTcpPort(ushort port, TcpMode mode)
    {
        int s = stack.TcpOpen();
        if (s < 0)
            return s;
        int rc = stack.TcpBind(s, new Ipv4Endpoint(Ipv4Address.Any, port));
        if (rc == 0)
            rc = stack.TcpListen(s, 128);
        if (rc < 0)
        {
            stack.TcpClose(s);
            return rc;
        }
        stack.TcpSetNoDelay(s, true);
        _listeners.Add((s, mode));
        return 0;
    }

    private int ServeTcp()
    {
        int work = 0;
        foreach (var (listener, mode) in _listeners)
        {
            int c;
            while ((c = stack.TcpAccept(listener, out _)) >= 0)
            {
                _connections.Add(new TcpPeer(c, mode));
                work++;
            }
        }
        for (int i = _connections.Count - 1; i >= 0; i--)
        {
            var p = _connections[i];
            work += ServeConnection(p, out bool done);
            if (done)
            {
                stack.TcpClose(p.Socket);
                _connections.RemoveAt(i);
            }
        }
        return work;
    }

    private int ServeConnection(TcpPeer p, out bool done)
    {
        if (p.Mode == TcpMode.Http)
            return ServeHttp(p, out done);
        done = false;
        int work = 0;
        while (true)
        {
            if (p.PendingLength > 0)
            {
                int sent = stack.TcpSend(p.Socket, p.Pending.AsSpan(p.PendingOffset, p.PendingLength));
                if (sent < 0)
                {
                    done = sent != -(int)Errno.EAGAIN;
                    return work;
                }
                p.PendingOffset += sent;
                p.PendingLength -= sent;
                if (p.PendingLength > 0)
                    return work;
            }
            int n = stack.TcpReceive(p.Socket, p.Pending);
            if (n == -(int)Errno.EAGAIN)
                return work;
            if (n <= 0)
            {
                // End of stream (or an error): finish our side too.
                if (p.Sink)
                    Console.Out.WriteLine($"onload-echo: sink received {p.Bytes} bytes sha256 {Convert.ToHexStringLower(p.Hash.GetHashAndReset())}");
                done = true;
                return work + 1;
            }
            work++;
            p.Bytes += n;
            if (p.Sink)
            {
                p.Hash.AppendData(p.Pending, 0, n);
                continue;
            }
            p.PendingOffset = 0;
            p.PendingLength = n;
        }
    }

    /// <summary>The byte at <paramref name="offset"/> of an HTTP body: a pattern a client can check.</summary>
    internal static byte BodyByte(long offset) => (byte)('a' + offset % 26);

    private int ServeHttp(TcpPeer p, out bool done)
    {
        done = false;
        int work = 0;
        if (p.BodyLeft < 0)
        {
            int n = stack.TcpReceive(p.Socket, p.Pending);
            if (n == -(int)Errno.EAGAIN)
                return 0;
            if (n <= 0)
            {
                done = true;
                return 1;
            }
            p.Request += System.Text.Encoding.ASCII.GetString(p.Pending, 0, n);
            int end = p.Request.IndexOf("\r\n\r\n", StringComparison.Ordinal);
            if (end < 0)
                return 1;
            var first = p.Request[..p.Request.IndexOf("\r\n", StringComparison.Ordinal)].Split(' ');
            long length = first.Length >= 2 && first[1].StartsWith("/bytes/", StringComparison.Ordinal) &&
                long.TryParse(first[1].AsSpan(7), System.Globalization.CultureInfo.InvariantCulture, out long l) ? l : -1;
            string head = length >= 0
                ? $"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n"
                : "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
            p.PendingLength = System.Text.Encoding.ASCII.GetBytes(head, p.Pending);
            p.PendingOffset = 0;
            p.BodyLeft = Math.Max(0, length);
            work++;
        }
        while (true)
        {
            if (p.PendingLength == 0)
            {
                if (p.BodyLeft == 0)
                {
                    stack.TcpShutdown(p.Socket, read: false, write: true);
                    // Drain until the client closes; then done.
                    int r = stack.TcpReceive(p.Socket, p.Pending);
                    done = r != -(int)Errno.EAGAIN && r <= 0;
                    return work;
                }
                int chunk = (int)Math.Min(p.Pending.Length, p.BodyLeft);
                long offset = p.Bytes;
                for (int i = 0; i < chunk; i++)
                    p.Pending[i] = BodyByte(offset + i);
                p.PendingOffset = 0;
                p.PendingLength = chunk;
                p.BodyLeft -= chunk;
                p.Bytes += chunk;
            }
            int sent = stack.TcpSend(p.Socket, p.Pending.AsSpan(p.PendingOffset, p.PendingLength));
            if (sent < 0)
            {
                done = sent != -(int)Errno.EAGAIN;
                return work;
            }
            work++;
            p.PendingOffset += sent;
            p.PendingLength -= sent;
            if (p.PendingLength > 0)
                return work;
        }
    }

    public void Stop() => _stop = true;

    public void Run()
    {
        long spinNs = settings.SpinMicroseconds * 1000L;
        long idleSince = MonotonicClock.Instance.NowNanoseconds;
        while (!_stop)
        {
            int work = stack.Poll();
            foreach (int s in _sockets)
                work += EchoAll(s);
            work += ServeTcp();
            long now = MonotonicClock.Instance.NowNanoseconds;
            if (work > 0)
            {
                idleSince = now;
                continue;
            }
            if (now - idleSince < spinNs)
                continue;
            // Sleep until a frame arrives or the next timer, but wake at least every 100 ms to notice a signal.
            long untilTimer = stack.NextTimerNs == long.MaxValue ? long.MaxValue : stack.NextTimerNs - now;
            int timeoutMs = (int)Math.Clamp(untilTimer / 1_000_000, 0, 100);
            VnicWait.Wait(stack.Vnic, timeoutMs);
        }
    }

    private int EchoAll(int s)
    {
        int n = 0;
        while (true)
        {
            int len = stack.UdpReceiveFrom(s, _buffer, out var from);
            if (len == -(int)Errno.EAGAIN)
                return n;
            n++;
            if (len < 0)
                continue; // an error for this socket (e.g. ECONNREFUSED), reported once
            stack.UdpSendTo(s, _buffer.AsSpan(0, len), from);
        }
    }
}
