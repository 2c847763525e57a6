using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using Onload.Stack;
using Onload.Stack.Wire;
using Onload.Tests.Netns;

namespace Onload.Tests.Interop;

/// <summary>
/// Hostile peers (issue 10): blind injection per RFC 5961 into an established connection over AF_XDP. A kernel
/// client and a stack server stream checked bytes both ways while three hping3s in the kernel's namespace, knowing
/// the four-tuple but not the sequence numbers, send RSTs, SYNs and data with random sequence and acknowledgement
/// numbers at it. The stream must arrive intact both ways and end normally, and the stack's challenge ACKs stay
/// within their limit (net.ipv4.tcp_challenge_ack_limit's 1000 a second).
/// </summary>
[TestFixture("af_xdp")]
[Category("netns")]
[Category("hostile")]
[NonParallelizable]
public class BlindInjectionInteropTests(string kind)
{
    private const ushort Port = 9420;
    private static readonly TimeSpan BarrageTime = TimeSpan.FromSeconds(5);
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(90);
    /// <summary>Buffers, and so windows, of 128 KiB at both ends: a random guess lands in a window with odds of
    /// 2^-15, and must also guess an acceptable ACK (2^-15 again) for its data to be taken, as RFC 5961 intends.</summary>
    private const int Buffer = 128 * 1024;
    private KernelPeer _peer = null!;

    [OneTimeSetUp]
    public void RequireHping3() => SynFloodInteropTests.InstallHping3();

    [SetUp]
    public void CreatePeer() => _peer = new KernelPeer(kind);

    [TearDown]
    public void RemovePeer() => _peer?.Dispose();

    /// <summary>Byte <paramref name="i"/> of a stream: no byte from elsewhere in it, nor a forged one, fits by chance
    /// for long.</summary>
    private static byte Pattern(long i, int seed) => (byte)((ulong)(i + seed) * 0x9E3779B97F4A7C15UL >> 56);

    private static void Fill(Span<byte> to, long at, int seed)
    {
        for (int k = 0; k < to.Length; k++)
            to[k] = Pattern(at + k, seed);
    }

    /// <summary>Where <paramref name="got"/>, read at <paramref name="at"/>, differs from the stream; -1 if nowhere.</summary>
    private static long Mismatch(ReadOnlySpan<byte> got, long at, int seed)
    {
        for (int k = 0; k < got.Length; k++)
            if (got[k] != Pattern(at + k, seed))
                return at + k;
        return -1;
    }

    [Test]
    public void A_connection_under_a_barrage_of_blind_rsts_syns_and_data_keeps_its_stream_intact_both_ways()
    {
        var stack = _peer.OpenStack(o => o with { TcpReceiveBufferBytes = Buffer, TcpSendBufferBytes = Buffer }, ringSize: 4096);
        int listener = stack.TcpOpen();
        Assert.That(stack.TcpBind(listener, new Ipv4Endpoint(Ipv4Address.Any, Port)), Is.Zero);
        Assert.That(stack.TcpListen(listener, 4), Is.Zero);
        var client = _peer.KernelNs.Run(() =>
        {
            var s = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            s.ReceiveBufferSize = Buffer / 2; // the kernel doubles it
            s.SendBufferSize = Buffer / 2;
            return s;
        });
        using var clientSocket = client;
        var connect = client.ConnectAsync(new IPEndPoint(IPAddress.Parse(_peer.StackAddress), Port));
        int c = -1;
        KernelPeer.Drive(stack, () => (c >= 0 || (c = stack.TcpAccept(listener, out _)) >= 0) && connect.IsCompleted, Deadline,
            () => "the client's connection");
        connect.GetAwaiter().GetResult();
        int clientPort = ((IPEndPoint)client.LocalEndPoint!).Port;

        // The injectors know the tuple: the client's address and port, the stack's address and port.
        string[] tuple = ["-a", _peer.KernelAddress, "-s", clientPort.ToString(CultureInfo.InvariantCulture), "-k",
            "-p", Port.ToString(CultureInfo.InvariantCulture), "-i", "u50", _peer.StackAddress];
        using var rsts = _peer.KernelNs.Start("hping3", ["-R", .. tuple]);
        using var syns = _peer.KernelNs.Start("hping3", ["-S", .. tuple]);
        using var data = _peer.KernelNs.Start("hping3", ["-A", "-P", "-d", "100", .. tuple]);
        KernelPeer.Drive(stack, () => stack.Counters.Drop(DropReason.TcpOutOfWindow) > 100, TimeSpan.FromSeconds(30),
            () => $"the barrage to reach the stack; {StackDump.TcpCounters(stack)}");
        long challengesBefore = stack.Counters.TcpExtTCPChallengeACK;

        // The kernel client: sends its stream until told to stop, reads the stack's to the end, checks every byte.
        var stop = new CancellationTokenSource();
        long clientSent = 0, clientGot = 0;
        var clientSends = Task.Run(async () =>
        {
            var chunk = new byte[64 * 1024];
            while (!stop.IsCancellationRequested)
            {
                Fill(chunk, clientSent, 1);
                await client.SendAsync(chunk, SocketFlags.None).ConfigureAwait(false);
                clientSent += chunk.Length;
            }
            client.Shutdown(SocketShutdown.Send);
        });
        var clientReads = Task.Run(async () =>
        {
            var chunk = new byte[64 * 1024];
            int n;
            while ((n = await client.ReceiveAsync(chunk, SocketFlags.None).ConfigureAwait(false)) > 0)
            {
                long bad = Mismatch(chunk.AsSpan(0, n), clientGot, 2);
                if (bad >= 0)
                    return $"the client read a wrong byte at {bad}";
                clientGot += n;
            }
            return null;
        });

        // The stack: the same, the other way.
        var clock = Stopwatch.StartNew();
        var send = new byte[64 * 1024];
        var receive = new byte[64 * 1024];
        long stackSent = 0, stackGot = 0, stackBad = -1;
        bool shut = false, ended = false;
        KernelPeer.Drive(stack, () =>
        {
            if (clock.Elapsed >= BarrageTime && !stop.IsCancellationRequested)
                stop.Cancel();
            if (!stop.IsCancellationRequested)
            {
                Fill(send, stackSent, 2);
                int n = stack.TcpSend(c, send);
                if (n > 0)
                    stackSent += n;
                else if (n != -(int)Errno.EAGAIN)
                    Assert.Fail($"stack send: {(Errno)(-n)}; {StackDump.Connection(stack, c)}; {StackDump.TcpCounters(stack)}");
            }
            else if (!shut)
            {
                Assert.That(stack.TcpShutdown(c, read: false, write: true), Is.Zero);
                shut = true;
            }
            int r;
            while (!ended && (r = stack.TcpReceive(c, receive)) != -(int)Errno.EAGAIN)
            {
                if (r < 0)
                    Assert.Fail($"stack receive: {(Errno)(-r)}; {StackDump.Connection(stack, c)}; {StackDump.TcpCounters(stack)}");
                if (r == 0)
                {
                    ended = true;
                    break;
                }
                long bad = Mismatch(receive.AsSpan(0, r), stackGot, 1);
                if (bad >= 0 && stackBad < 0)
                    stackBad = bad;
                stackGot += r;
            }
            return ended && shut && clientSends.IsCompleted && clientReads.IsCompleted;
        }, Deadline, () => $"both streams to end (stack sent {stackSent} got {stackGot}, client sent {clientSent} got " +
            $"{clientGot}); {StackDump.Connection(stack, c)}; {StackDump.TcpCounters(stack)}");
        var elapsed = clock.Elapsed;
        long challenges = stack.Counters.TcpExtTCPChallengeACK - challengesBefore;
        long limited = stack.Counters.Drop(DropReason.TcpChallengeAckLimited);
        Assert.That(stack.TcpClose(c), Is.Zero);
        foreach (var injector in (NsProcess[])[rsts, syns, data])
        {
            Assert.That(injector.HasExited, Is.False, $"the barrage lasted: {injector.Stderr}");
            injector.Kill();
        }

        clientSends.GetAwaiter().GetResult();
        Assert.Multiple(() =>
        {
            Assert.That(clientReads.Result, Is.Null);
            Assert.That(stackBad, Is.EqualTo(-1), $"the stack read a wrong byte at {stackBad}");
            Assert.That(stackGot, Is.EqualTo(clientSent), "the client's stream, whole");
            Assert.That(clientGot, Is.EqualTo(stackSent), "the stack's stream, whole");
            Assert.That(stack.Counters.TcpEstabResets, Is.Zero, "no RST got through");
            Assert.That(challenges, Is.GreaterThan(0), "the SYNs got challenge ACKs (RFC 5961 §4.2)");
            Assert.That(challenges, Is.LessThanOrEqualTo(1000 * (elapsed.TotalSeconds + 2)), "at most 1000 a second");
            Assert.That(limited, Is.GreaterThan(0), "the rest were held back");
        });
        TestContext.Out.WriteLine($"{elapsed.TotalSeconds:0.0} s under the barrage: stack sent {stackSent} and got {stackGot} bytes, " +
            $"intact; challenge ACKs {challenges} ({limited} more held back by the limit), " +
            $"out of window {stack.Counters.Drop(DropReason.TcpOutOfWindow)}, too old ACK {stack.Counters.Drop(DropReason.TcpTooOldAck)}, " +
            $"bad ACK {stack.Counters.Drop(DropReason.TcpBadAck)}; {StackDump.Vnic(stack.Vnic)}");
    }
}
