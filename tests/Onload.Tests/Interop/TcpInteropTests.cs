using System.Diagnostics;
using System.Security.Cryptography;
using Onload.Stack;
using Onload.Stack.Wire;
using Onload.Tests.Netns;
using Onload.Vnic;

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
            "--tcp", "7", "--tcp-sink", "9");
        echo.WaitForOutput("ready", Deadline);
        return echo;
    }

    /// <summary>Runs a shell line in the kernel's namespace with <paramref name="input"/> on its standard input;
    /// returns its standard output.</summary>
    private byte[] KernelPipe(string shell, byte[] input)
    {
        var psi = new ProcessStartInfo("ip") { RedirectStandardInput = true, RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in new[] { "netns", "exec", _peer.KernelNs.Name, "sh", "-c", shell })
            psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var stdout = new MemoryStream();
        var copy = p.StandardOutput.BaseStream.CopyToAsync(stdout);
        var stderr = p.StandardError.ReadToEndAsync();
        p.StandardInput.BaseStream.Write(input);
        p.StandardInput.Close();
        if (!p.WaitForExit(Deadline))
        {
            p.Kill(entireProcessTree: true);
            Assert.Fail($"'{shell}' did not finish; stderr: {stderr.Result}");
        }
        copy.Wait(Deadline);
        Assert.That(p.ExitCode, Is.Zero, stderr.Result);
        return stdout.ToArray();
    }

    private static byte[] Random(int length, int seed)
    {
        var d = new byte[length];
        new Random(seed).NextBytes(d);
        return d;
    }

    [Test]
    public void Kernel_socat_gets_a_megabyte_echoed_intact_with_half_close()
    {
        StartEcho();
        var data = Random(1_000_000, 1);
        // socat shuts its sending side at the end of its input and reads on until the server closes: a half-close.
        var back = KernelPipe($"socat -b 65536 -t 30 - TCP:{_peer.StackAddress}:7", data);
        Assert.That(back.Length, Is.EqualTo(data.Length));
        Assert.That(SHA256.HashData(back), Is.EqualTo(SHA256.HashData(data)));
    }

    [Test]
    public void Kernel_sends_twenty_megabytes_to_the_stack_sink_intact()
    {
        var echo = StartEcho();
        var data = Random(20_000_000, 2);
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
    public void A_megabyte_echoed_through_five_percent_loss_each_way()
    {
        StartEcho();
        var nft = $"ip netns exec {_peer.KernelNs.Name} nft";
        string dev = _peer.KernelInterface;
        Netns.Netns.Sh($"{nft} add table netdev loss && " +
            $"{nft} 'add chain netdev loss in {{ type filter hook ingress device \"{dev}\" priority 0; policy accept; }}' && " +
            $"{nft} add rule netdev loss in numgen random mod 100 '<' 5 counter drop && " +
            $"{nft} 'add chain netdev loss out {{ type filter hook egress device \"{dev}\" priority 0; policy accept; }}' && " +
            $"{nft} add rule netdev loss out numgen random mod 100 '<' 5 counter drop");
        var data = Random(1_000_000, 3);
        var back = KernelPipe($"socat -b 65536 -t 60 - TCP:{_peer.StackAddress}:7", data);
        Assert.That(SHA256.HashData(back), Is.EqualTo(SHA256.HashData(data)));
        string counters = Netns.Netns.Run($"{nft} list table netdev loss");
        var dropped = System.Text.RegularExpressions.Regex.Matches(counters, @"counter packets (\d+)").Select(m => long.Parse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture)).ToList();
        Assert.That(dropped, Has.Count.EqualTo(2));
        Assert.That(dropped, Has.All.GreaterThan(0), $"both rules dropped frames: {counters}");
    }

    [Test]
    public void Stack_client_sends_to_a_kernel_server_and_reads_the_echo()
    {
        var address = Ipv4Cidr.Parse(_peer.StackCidr);
        using var vnic = _peer.StackNs.Run(() => VnicFactory.Open(_peer.VnicSpec, new VnicOptions { LocalIpv4 = address.Address.Value }));
        using var stack = new NetStack(vnic, new StackOptions { Address = address });
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
        var data = Random(2_000_000, 4);
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

    private static string Describe(NetStack stack, int c)
    {
        ref var t = ref stack.TcpConnections[c];
        return $"state {t.State} una {t.SndUna - t.Iss} nxt {t.SndNxt - t.Iss} max {t.SndMax - t.Iss} queued {t.SndQueued} " +
            $"wnd {t.SndWnd} cwnd {t.Cwnd} rto {t.Rto} backoff {t.Backoff} rcvnxt {t.RcvNxt - t.Irs} rcvread {t.RcvRead - t.Irs} " +
            $"rcvadv {t.RcvAdv - t.Irs} ooo {t.OooStart - t.Irs}-{t.OooEnd - t.Irs} timers {stack.NextTimerNs}; " +
            $"vnic rx {stack.Vnic.Counters.RxFrames} nobuf {stack.Vnic.Counters.RxDropNoBuffer} ring {stack.Vnic.Counters.RxDropRingFull} txring {stack.Vnic.Counters.TxDropRingFull} txerr {stack.Vnic.Counters.TxErrors}; trace {string.Join(" | ", Trace)}; " +
            string.Join(", ", stack.Counters.Snapshot().Where(kv => kv.Key.StartsWith("Tcp", StringComparison.Ordinal) || kv.Key.StartsWith("Drop", StringComparison.Ordinal)).Select(kv => $"{kv.Key}={kv.Value}"));
    }

    [Test]
    public void Stack_connect_to_a_closed_kernel_port_gets_ECONNREFUSED()
    {
        var address = Ipv4Cidr.Parse(_peer.StackCidr);
        using var vnic = _peer.StackNs.Run(() => VnicFactory.Open(_peer.VnicSpec, new VnicOptions { LocalIpv4 = address.Address.Value }));
        using var stack = new NetStack(vnic, new StackOptions { Address = address });
        int c = stack.TcpOpen();
        stack.TcpConnect(c, new Ipv4Endpoint(Ipv4Address.Parse(_peer.KernelAddress), 4444));
        Poll.Until(() => { stack.Poll(); return stack.TcpStateOf(c) == Onload.Stack.Tcp.TcpState.Closed; }, Deadline, "the kernel's RST");
        Assert.That(stack.TcpTakeError(c), Is.EqualTo((int)Errno.ECONNREFUSED));
    }
}
