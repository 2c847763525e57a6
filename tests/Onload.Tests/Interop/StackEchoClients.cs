using Onload.Stack;

namespace Onload.Tests.Interop;

/// <summary>
/// Connections of a stack in this process, each sending its own bytes to a kernel echo server and reading them back:
/// <see cref="Pump"/> sends, shuts down its side once all is sent, and reads to the end of the echo on every one at
/// once; <see cref="Damaged"/> names any whose echo differs. Each stream's bytes are its own, so a byte delivered on
/// the wrong connection, or at the wrong place in one, shows.
/// </summary>
internal sealed class StackEchoClients(NetStack stack)
{
    private readonly List<Stream> _streams = [];

    public sealed class Stream(int socket, byte[] data)
    {
        public int Socket { get; } = socket;
        public byte[] Data { get; } = data;
        public byte[] Received { get; } = new byte[data.Length];
        public int Sent { get; set; }
        public int Got { get; set; }
        public bool Shut { get; set; }
        public bool Ended { get; set; }
    }

    public IReadOnlyList<Stream> Streams => _streams;

    public long Bytes => _streams.Sum(s => (long)s.Data.Length);

    public void Add(int socket, byte[] data) => _streams.Add(new Stream(socket, data));

    /// <summary>Moves every stream's bytes until every echo has ended; fails the test at a socket error or after
    /// <paramref name="deadline"/>, naming the first unfinished stream and <paramref name="context"/>.
    /// <paramref name="alongside"/>, if given, runs on every pass too (other traffic on the same stack).</summary>
    public void Pump(TimeSpan deadline, Func<string> context, Action? alongside = null)
    {
        var scratch = new byte[65536];
        int ended = _streams.Count(s => s.Ended);
        KernelPeer.Drive(stack, () =>
        {
            alongside?.Invoke();
            foreach (var s in _streams)
            {
                if (s.Ended)
                    continue;
                if (s.Sent < s.Data.Length)
                {
                    int n = stack.TcpSend(s.Socket, s.Data.AsSpan(s.Sent));
                    if (n > 0)
                        s.Sent += n;
                    else if (n != -(int)Errno.EAGAIN)
                        Assert.Fail($"send on {s.Socket}: {(Errno)(-n)}; {StackDump.Connection(stack, s.Socket)}");
                }
                else if (!s.Shut)
                {
                    Assert.That(stack.TcpShutdown(s.Socket, read: false, write: true), Is.Zero);
                    s.Shut = true;
                }
                int r;
                while ((r = stack.TcpReceive(s.Socket, scratch)) > 0)
                {
                    if (s.Got + r > s.Data.Length)
                        Assert.Fail($"connection {s.Socket} got {s.Got + r} bytes of {s.Data.Length}");
                    scratch.AsSpan(0, r).CopyTo(s.Received.AsSpan(s.Got));
                    s.Got += r;
                }
                if (r == 0)
                {
                    s.Ended = true;
                    ended++;
                }
                else if (r != -(int)Errno.EAGAIN)
                    Assert.Fail($"receive on {s.Socket}: {(Errno)(-r)}; {StackDump.Connection(stack, s.Socket)}");
            }
            return ended == _streams.Count;
        }, deadline, () =>
        {
            var stuck = _streams.First(s => !s.Ended);
            return $"every echo to end ({ended} of {_streams.Count} did); first unfinished: connection {stuck.Socket} sent " +
                $"{stuck.Sent} got {stuck.Got} of {stuck.Data.Length}, {StackDump.Connection(stack, stuck.Socket)}; " +
                $"{StackDump.Vnic(stack.Vnic)}; {StackDump.TcpCounters(stack)}; {context()}";
        });
    }

    /// <summary>One line per stream whose echo is not exactly its bytes.</summary>
    public List<string> Damaged() =>
        _streams.Where(s => s.Got != s.Data.Length || !s.Received.AsSpan().SequenceEqual(s.Data))
            .Select(s => $"connection {s.Socket}: got {s.Got} of {s.Data.Length}, first difference at " +
                s.Received.AsSpan().CommonPrefixLength(s.Data)).ToList();
}

/// <summary>
/// A stack's listener echoing to kernel clients: <see cref="Step"/>, called from a drive loop, accepts what is
/// waiting, moves each connection's echo on (a receive only once the last one is all sent), and closes a connection
/// at its client's FIN.
/// </summary>
internal sealed class StackEchoServer(NetStack stack, int listener)
{
    private readonly Dictionary<int, (byte[] Buffer, int Length, int Sent)> _echoes = [];

    public int Accepted { get; private set; }

    /// <summary>Connections closed after their client's FIN.</summary>
    public int Finished { get; private set; }

    /// <summary>One pass; <paramref name="accepted"/> is told of each connection accepted.</summary>
    public void Step(Action<int>? accepted = null)
    {
        int c;
        while ((c = stack.TcpAccept(listener, out _)) >= 0)
        {
            _echoes[c] = (new byte[16 * 1024], 0, 0);
            Accepted++;
            accepted?.Invoke(c);
        }
        Assert.That(c, Is.EqualTo(-(int)Errno.EAGAIN), "accept");
        foreach (int e in _echoes.Keys.ToList())
        {
            var (pending, length, sent) = _echoes[e];
            if (sent < length)
            {
                int n = stack.TcpSend(e, pending.AsSpan(sent, length - sent));
                if (n > 0)
                    sent += n;
                else if (n != -(int)Errno.EAGAIN)
                    Assert.Fail($"echo send on {e}: {(Errno)(-n)}; {StackDump.Connection(stack, e)}");
            }
            if (sent == length)
            {
                int r = stack.TcpReceive(e, pending);
                if (r == 0)
                {
                    Assert.That(stack.TcpClose(e), Is.Zero); // the client's FIN: close (LAST_ACK)
                    _echoes.Remove(e);
                    Finished++;
                    continue;
                }
                if (r < 0 && r != -(int)Errno.EAGAIN)
                    Assert.Fail($"echo receive on {e}: {(Errno)(-r)}; {StackDump.Connection(stack, e)}");
                (length, sent) = r > 0 ? (r, 0) : (0, 0);
            }
            _echoes[e] = (pending, length, sent);
        }
    }
}
