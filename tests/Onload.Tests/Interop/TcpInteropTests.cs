using System.Diagnostics;
using System.Security.Cryptography;
using Onload.Stack;
using Onload.Stack.Wire;
using Onload.Tests.Netns;

namespace Onload.Tests.Interop;

/// <summary>TCP between the stack and the Linux kernel over a veth pair: kernel clients (socat) against
/// onload-echo, and the stack's own client against kernel servers; bytes checked by SHA-256 at both ends.</summary>
[TestFixture("af_packet")]
[TestFixture("af_xdp")]
[Category("netns")]
[NonParallelizable]
public class TcpInteropTests(string kind)
{
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(60);
    private KernelPeer _peer = null!;

    [SetUp]
    public void CreatePeer()
    {
        Trace.Clear();
        _peer = new KernelPeer(kind);
    }

    [TearDown]
    public void RemovePeer() => _peer?.Dispose();

    private NsProcess StartEcho()
    {
        var echo = _peer.StackNs.Start(Dist.Bin("onload-echo"), "--vnic", _peer.VnicSpec, "--addr", _peer.StackCidr,
            "--tcp", "7", "--tcp-sink", "9", "--http", "8080");
        echo.WaitForOutput("ready", Deadline);
        return echo;
    }

    private byte[] KernelPipe(string shell, byte[] input) => _peer.KernelNs.Pipe(shell, input, Deadline);

    [Test]
    public void Kernel_socat_gets_a_megabyte_echoed_intact_with_half_close()
    {
        StartEcho();
        var data = TestData.Random(1, 1_000_000);
        // socat shuts its sending side at the end of its input and reads on until the server closes: a half-close.
        var back = KernelPipe($"socat -b 65536 -t 30 - TCP:{_peer.StackAddress}:7", data);
        Assert.That(back.Length, Is.EqualTo(data.Length));
        Assert.That(SHA256.HashData(back), Is.EqualTo(SHA256.HashData(data)));
    }

    [Test]
    public void Curl_fetches_a_megabyte_over_http_from_the_stack()
    {
        StartEcho();
        var body = KernelPipe($"curl -sS --max-time 30 http://{_peer.StackAddress}:8080/bytes/1000000", []);
        Assert.That(body.Length, Is.EqualTo(1_000_000));
        var expected = new byte[body.Length];
        for (int i = 0; i < expected.Length; i++)
            expected[i] = (byte)('a' + i % 26);
        Assert.That(SHA256.HashData(body), Is.EqualTo(SHA256.HashData(expected)));
    }

    [Test]
    public void Kernel_sends_a_hundred_megabytes_to_the_stack_sink_intact()
    {
        var echo = StartEcho();
        var data = TestData.Random(2, 100_000_000);
        KernelPipe($"socat -u -b 65536 - TCP:{_peer.StackAddress}:9", data);
        string hash = Convert.ToHexStringLower(SHA256.HashData(data));
        echo.WaitForOutput($"sink received {data.Length} bytes sha256 {hash}", Deadline);
    }

    [Test]
    public void Connect_to_a_closed_stack_port_is_refused_for_the_kernel()
    {
        StartEcho();
        var r = Netns.Netns.Exec("ip", ["netns", "exec", _peer.KernelNs.Name, "socat", "-u", "-", $"TCP:{_peer.StackAddress}:4444"], Deadline);
        Assert.That(r.Stderr, Does.Contain("Connection refused"));
    }

    [Test]
    public void Stack_client_sends_to_a_kernel_server_and_reads_the_echo()
    {
        var stack = _peer.OpenStack();
        stack.Trace = (tx, frame) =>
        {
            Trace.Enqueue((tx ? "> " : "< ") + PacketPrinter.Format(frame) + " " + Tcp(frame));
            if (Trace.Count > 12)
                Trace.Dequeue();
        };
        // socat's PIPE loops its own pipe: blocks of at most PIPE_BUF (4096) keep it from blocking on itself.
        _peer.KernelNs.Start("socat", "-b", "4096", "TCP-LISTEN:9200,reuseaddr", "PIPE");
        Poll.Until(() => _peer.KernelNs.Exec("ss -tln").Contains(":9200", StringComparison.Ordinal), Deadline, "socat listening");
        int c = stack.TcpOpen();
        Assert.That(stack.TcpConnect(c, new Ipv4Endpoint(Ipv4Address.Parse(_peer.KernelAddress), 9200)), Is.EqualTo(-(int)Errno.EINPROGRESS));
        Poll.Until(() => { stack.Poll(); return stack.TcpIsConnected(c) || stack.TcpStateOf(c) == Onload.Stack.Tcp.TcpState.Closed; }, Deadline, "connected");
        Assert.That(stack.TcpIsConnected(c), Is.True);
        var data = TestData.Random(4, 2_000_000);
        var received = new MemoryStream();
        var buf = new byte[65536];
        int sent = 0;
        Poll.TryUntil(() =>
        {
            stack.Poll();
            if (sent < data.Length)
            {
                int n = stack.TcpSend(c, data.AsSpan(sent));
                if (n > 0)
                    sent += n;
            }
            int r;
            while ((r = stack.TcpReceive(c, buf)) > 0)
                received.Write(buf, 0, r);
            return received.Length == data.Length;
        }, Deadline);
        if (received.Length != data.Length)
            Assert.Fail(Describe(stack, c) + $" sent {sent} received {received.Length}");
        Assert.That(SHA256.HashData(received.ToArray()), Is.EqualTo(SHA256.HashData(data)));
        Assert.That(stack.TcpShutdown(c, read: false, write: true), Is.Zero);
        int end = -1;
        Poll.Until(() => { stack.Poll(); end = stack.TcpReceive(c, buf); return end != -(int)Errno.EAGAIN; }, Deadline, "the kernel's FIN");
        Assert.That(end, Is.Zero, "end of stream after the kernel closed its side");
        Assert.That(stack.TcpClose(c), Is.Zero);
    }

    private static readonly Queue<string> Trace = new();

    private static string Tcp(ReadOnlySpan<byte> f)
    {
        if (f.Length < 54 || f[23] != 6)
            return "";
        var seg = new TcpSegment(f[34..].ToArray());
        return $"[{seg.Flags} seq {seg.SequenceNumber} ack {seg.AcknowledgmentNumber} win {seg.Window} len {f.Length - 34 - seg.HeaderLength}]";
    }

    private static string Describe(NetStack stack, int c) =>
        $"{StackDump.Connection(stack, c)}; {StackDump.Vnic(stack.Vnic)}; trace {string.Join(" | ", Trace)}; {StackDump.TcpCounters(stack)}";

    /// <summary>An in-process stack on the stack side of the pair, connected to a kernel server on <paramref name="port"/>.</summary>
    private (NetStack Stack, int Socket) ConnectedStack(ushort port)
    {
        var stack = _peer.OpenStack();
        Poll.Until(() => _peer.KernelNs.Exec("ss -tln").Contains($":{port}", StringComparison.Ordinal), Deadline, "the kernel server");
        int c = stack.TcpOpen();
        Assert.That(stack.TcpConnect(c, new Ipv4Endpoint(Ipv4Address.Parse(_peer.KernelAddress), port)), Is.EqualTo(-(int)Errno.EINPROGRESS));
        Poll.Until(() => { stack.Poll(); return stack.TcpIsConnected(c); }, Deadline, "connected");
        return (stack, c);
    }

    /// <summary>The stack's client sends <paramref name="length"/> random bytes to a kernel socat that hashes what it
    /// reads, shuts down, and checks the kernel saw exactly those bytes.</summary>
    private void SendToKernelReader(ushort port, int length, int seed, string socatOptions = "")
    {
        var sink = _peer.KernelNs.Start("sh", "-c", $"socat -u TCP-LISTEN:{port},reuseaddr{socatOptions} - | sha256sum");
        var (stack, c) = ConnectedStack(port);
        var data = TestData.Random(seed, length);
        int sent = 0;
        Poll.Until(() =>
        {
            stack.Poll();
            int n = sent < data.Length ? stack.TcpSend(c, data.AsSpan(sent)) : 0;
            if (n > 0)
                sent += n;
            return sent == data.Length;
        }, Deadline, $"{length} bytes accepted by the stack");
        Assert.That(stack.TcpShutdown(c, read: false, write: true), Is.Zero);
        Poll.Until(() => { stack.Poll(); return sink.HasExited; }, Deadline, "the kernel reader to finish");
        Assert.That(sink.Stdout, Does.Contain(Convert.ToHexStringLower(SHA256.HashData(data))));
    }

    [Test]
    public void Stack_sends_two_megabytes_to_a_kernel_reader_with_a_tiny_receive_buffer() =>
        // The kernel's receive buffer pinned at 4 KiB (SO_RCVBUF, which stops auto-tuning): its window closes and
        // opens all the time, so the stack's persist and window-update paths carry the stream.
        SendToKernelReader(9300, 2_000_000, seed: 5, ",rcvbuf=4096");

    [Test]
    public void Stack_sends_a_hundred_megabytes_to_a_kernel_reader_intact() =>
        SendToKernelReader(9304, 100_000_000, seed: 6);

    [Test]
    public void Linger_zero_close_resets_the_kernel_peer_and_a_killed_kernel_peer_resets_the_stack()
    {
        // Stack side RST: the kernel counts an established connection reset (nstat's TcpEstabResets).
        var reader = _peer.KernelNs.Start("socat", "-u", "TCP-LISTEN:9301,reuseaddr", "-");
        var (stack, c) = ConnectedStack(9301);
        long before = _peer.KernelCounter("TcpEstabResets");
        Assert.That(stack.TcpSetLingerZero(c, true), Is.Zero);
        Assert.That(stack.TcpClose(c), Is.Zero);
        Poll.Until(() => reader.HasExited, Deadline, "socat to see the connection end");
        Assert.That(_peer.KernelCounter("TcpEstabResets"), Is.EqualTo(before + 1), "the kernel took it as a reset, not a close");

        // Kernel side RST: kill -9 of a server that never reads leaves unread data, so the kernel resets the
        // connection (a plain close would send a FIN).
        var victim = _peer.KernelNs.Start("sh", "-c", "socat -u SYSTEM:'sleep 37' TCP-LISTEN:9302,reuseaddr");
        Poll.Until(() => _peer.KernelNs.Exec("ss -tln").Contains(":9302", StringComparison.Ordinal), Deadline, "the second server");
        int d = stack.TcpOpen();
        Assert.That(stack.TcpConnect(d, new Ipv4Endpoint(Ipv4Address.Parse(_peer.KernelAddress), 9302)), Is.EqualTo(-(int)Errno.EINPROGRESS));
        Poll.Until(() => { stack.Poll(); return stack.TcpIsConnected(d); }, Deadline, "connected to the second server");
        Assert.That(stack.TcpSend(d, "never read"u8), Is.EqualTo(10));
        Poll.Until(() => { stack.Poll(); return stack.TcpConnections[d].SndUna == stack.TcpConnections[d].SndMax; }, Deadline, "the data acknowledged");
        victim.Kill(); // SIGKILL to the shell, socat and its sleep: only what this test started
        int r = 0;
        Poll.Until(() => { stack.Poll(); r = stack.TcpReceive(d, new byte[16]); return r != -(int)Errno.EAGAIN; }, Deadline, "the kernel's RST");
        Assert.That(r, Is.EqualTo(-(int)Errno.ECONNRESET));
    }

    [Test]
    public void Keepalive_notices_when_the_path_starts_dropping_everything()
    {
        var reader = _peer.KernelNs.Start("socat", "-u", "TCP-LISTEN:9303,reuseaddr", "-");
        var (stack, c) = ConnectedStack(9303);
        Assert.That(stack.TcpSetKeepalive(c, true, idleNs: 1_000_000_000, intervalNs: 500_000_000, count: 3), Is.Zero);
        // A blackhole on the kernel's side: every frame in and out dropped.
        string nft = $"ip netns exec {_peer.KernelNs.Name} nft";
        string dev = _peer.KernelInterface;
        Netns.Netns.Sh($"{nft} add table netdev hole && " +
            $"{nft} 'add chain netdev hole in {{ type filter hook ingress device \"{dev}\" priority 0; policy drop; }}' && " +
            $"{nft} 'add chain netdev hole out {{ type filter hook egress device \"{dev}\" priority 0; policy drop; }}'");
        var started = Stopwatch.StartNew();
        int r = 0;
        Poll.Until(() => { stack.Poll(); r = stack.TcpReceive(c, new byte[16]); return r != -(int)Errno.EAGAIN; }, Deadline, "keepalive to give up");
        Assert.That(r, Is.EqualTo(-(int)Errno.ETIMEDOUT));
        // Idle 1 s from the last segment, then 3 unanswered probes 0.5 s apart: about 2.5 s after it; a stack that
        // gave up without probing would stop at about 1 s.
        Assert.That(started.Elapsed, Is.InRange(TimeSpan.FromSeconds(1.5), TimeSpan.FromSeconds(10)));
        reader.Kill();
    }

    [Test]
    public void Stack_connect_to_a_closed_kernel_port_gets_ECONNREFUSED()
    {
        var stack = _peer.OpenStack();
        int c = stack.TcpOpen();
        Assert.That(stack.TcpConnect(c, new Ipv4Endpoint(Ipv4Address.Parse(_peer.KernelAddress), 4444)), Is.EqualTo(-(int)Errno.EINPROGRESS));
        Poll.Until(() => { stack.Poll(); return stack.TcpStateOf(c) == Onload.Stack.Tcp.TcpState.Closed; }, Deadline, "the kernel's RST");
        Assert.That(stack.TcpTakeError(c), Is.EqualTo((int)Errno.ECONNREFUSED));
    }
}
