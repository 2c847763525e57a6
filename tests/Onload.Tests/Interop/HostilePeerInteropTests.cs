using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using Onload.Stack;
using Onload.Stack.Tcp;
using Onload.Stack.Wire;
using Onload.Tests.Netns;

namespace Onload.Tests.Interop;

/// <summary>
/// Hostile peers (issue 10), differential: scapy in the kernel's namespace (tests/Onload.Tests/Interop/scapy/
/// hostile_peer.py) plays one script against the stack over AF_XDP and the same script against a kernel socket in
/// the stack's namespace (an address of its own beside the stack's), and the test compares what each application
/// read or was told and what the peer saw. Linux is the reference: where the two differ, the stack is wrong.
/// </summary>
[TestFixture("af_xdp")]
[Category("netns")]
[Category("hostile")]
[NonParallelizable]
public class HostilePeerInteropTests(string kind)
{
    private const ushort TargetPort = 9430;
    private const ushort PeerPort = 9431;
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(40);
    private KernelPeer _peer = null!;
#pragma warning disable NUnit1032 // the KernelPeer disposes of the stack it opened, before the namespaces go
    private NetStack _stack = null!;
#pragma warning restore NUnit1032
    private string _kernelTarget = "";

    [OneTimeSetUp]
    public void RequireScapy() => InstallScapy();

    /// <summary>Root and scapy (python3-scapy, installed from Debian if missing), or the fixture is skipped saying so.</summary>
    internal static void InstallScapy()
    {
        Netns.Netns.RequireRoot();
        if (!HasScapy())
            Netns.Netns.Sh("DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-scapy", TimeSpan.FromMinutes(5));
        if (!HasScapy())
            Assert.Ignore("needs scapy (apt-get install python3-scapy; make deps installs it)");
    }

    private static bool HasScapy() =>
        Netns.Netns.Exec("/usr/bin/python3", ["-c", "import scapy.all"], TimeSpan.FromSeconds(30)).Succeeded;

    [SetUp]
    public void CreatePeer()
    {
        _peer = new KernelPeer(kind);
        _stack = _peer.OpenStack(o => o with { TcpSendBufferBytes = 16 * 1024, TcpRetries = 6 });
        _kernelTarget = _peer.AddKernelAddressBesideTheStack();
        string stackIf = _peer.VnicSpec[(_peer.VnicSpec.IndexOf(':') + 1)..];
        // The kernel beside the stack sends what a wire carries: no TSO/GSO super-frames, checksums done.
        _peer.StackNs.Exec($"ethtool -K {stackIf} tx off tso off gso off gro off");
        // The peer's kernel must not answer the targets itself (RSTs to segments it has no socket for): scapy is
        // the peer. Its sniffer reads the veth before netfilter does.
        _peer.KernelNs.Exec("nft add table ip hostile");
        _peer.KernelNs.Exec("nft add chain ip hostile in { type filter hook input priority 0 ; policy accept ; }");
        _peer.KernelNs.Exec($"nft add rule ip hostile in tcp dport {PeerPort} drop");
    }

    [TearDown]
    public void RemovePeer()
    {
        // A kernel application still blocked (the script failed) wakes with an error, rather than waiting for ever.
        foreach (var socket in _kernelSockets)
            socket.Dispose();
        _kernelSockets.Clear();
        _peer?.Dispose(); // kills scapy (started in the namespace) before the namespaces go
    }

    private readonly List<Socket> _kernelSockets = [];

    /// <summary>A kernel socket in the stack's namespace, closed at the end of the test whatever happens.</summary>
    private Socket KernelSocket(SocketType type, ProtocolType protocol)
    {
        var socket = _peer.StackNs.Run(() => new Socket(AddressFamily.InterNetwork, type, protocol));
        _kernelSockets.Add(socket);
        return socket;
    }

    private sealed record Segment(double T, long Seq, long Ack, string Flags, int Win, int Len, string Data);

    private sealed record Outcome(List<Segment> Seen, Dictionary<string, int> Marks, JsonElement Root, string App)
    {
        /// <summary>The segments captured after the script made <paramref name="mark"/> (and before <paramref name="until"/>).</summary>
        public IEnumerable<Segment> From(string mark, string? until = null) =>
            Seen.Where(s => s.T >= At(mark) && (until is null || s.T < At(until)));

        public byte[] Received => Convert.FromHexString(Root.GetProperty("received").GetString()!);

        /// <summary>When the script made <paramref name="mark"/>, in seconds from its start (as <see cref="Segment.T"/>).</summary>
        public double At(string mark) => Root.GetProperty("mark_times").GetProperty(mark).GetDouble();
    }

    /// <summary>Runs the scapy script against <paramref name="target"/> and waits, polling the stack (whose
    /// application is <paramref name="app"/>, called on each pass until it returns true), for both to finish.</summary>
    private Outcome RunScript(string scenario, string target, Func<bool> app, params string[] extra)
    {
        string script = Path.Combine(TestContext.CurrentContext.TestDirectory, "Interop", "scapy", "hostile_peer.py");
        using var scapy = _peer.KernelNs.Start("/usr/bin/python3", [script, scenario, "--iface", _peer.KernelInterface,
            "--me", _peer.KernelAddress, "--target", target, "--port", TargetPort.ToString(CultureInfo.InvariantCulture),
            "--sport", PeerPort.ToString(CultureInfo.InvariantCulture), .. extra]);
        // The application starts once the peer's sniffer runs (a connect's SYN would otherwise go unseen).
        bool appDone = false;
        KernelPeer.Drive(_stack, () => (appDone = appDone || (Ready(scapy) && app())) && scapy.HasExited ||
                                       scapy.HasExited && scapy.ExitCode != 0, Deadline,
            () => $"{scenario} against {target} (scapy exited: {scapy.HasExited}, app done: {appDone}); stderr: {scapy.Stderr.Trim()}; " +
                  $"{StackDump.TcpCounters(_stack)}");
        Assert.That(scapy.WaitForExit(TimeSpan.FromSeconds(5)), Is.True);
        Assert.That(scapy.ExitCode, Is.Zero, $"scapy: {scapy.Stderr.Trim()}");
        string line = scapy.Stdout.Trim().Split('\n')[^1];
        var root = JsonDocument.Parse(line).RootElement;
        var seen = root.GetProperty("seen").EnumerateArray().Select(s => new Segment(s.GetProperty("t").GetDouble(),
            s.GetProperty("seq").GetInt64(), s.GetProperty("ack").GetInt64(), s.GetProperty("flags").GetString()!,
            s.GetProperty("win").GetInt32(), s.GetProperty("len").GetInt32(), s.GetProperty("data").GetString()!)).ToList();
        var marks = root.GetProperty("marks").EnumerateObject().ToDictionary(p => p.Name, p => p.Value.GetInt32());
        return new Outcome(seen, marks, root, "");
    }

    private static bool Ready(NsProcess scapy) => scapy.Stderr.Contains("ready", StringComparison.Ordinal) || scapy.HasExited;

    // The applications: the same behaviour on the stack (polled) and on a kernel socket (a task).

    /// <summary>Accepts one connection, reads it to the end, closes it; the bytes read.</summary>
    private Func<bool> StackReader(StringBuilder read)
    {
        int l = _stack.TcpOpen();
        Assert.That(_stack.TcpBind(l, new Ipv4Endpoint(Ipv4Address.Any, TargetPort)), Is.Zero);
        Assert.That(_stack.TcpListen(l, 4), Is.Zero);
        int c = -1;
        var buffer = new byte[4096];
        return () =>
        {
            if (c < 0 && (c = _stack.TcpAccept(l, out _)) < 0)
                return false;
            int n;
            while ((n = _stack.TcpReceive(c, buffer)) > 0)
                read.Append(Encoding.Latin1.GetString(buffer, 0, n));
            if (n != 0)
                return false;
            Assert.That(_stack.TcpClose(c), Is.Zero);
            Assert.That(_stack.TcpClose(l), Is.Zero);
            return true;
        };
    }

    private Task<string> KernelReader()
    {
        var listener = KernelListener(); // listening before the peer's SYN comes
        return Task.Run(() => ReadToEnd(listener));
    }

    private static string ReadToEnd(Socket listener)
    {
        using var _ = listener;
        using var s = listener.Accept();
        s.ReceiveTimeout = (int)Deadline.TotalMilliseconds;
        var read = new StringBuilder();
        var buffer = new byte[4096];
        int n;
        while ((n = s.Receive(buffer)) > 0)
            read.Append(Encoding.Latin1.GetString(buffer, 0, n));
        return read.ToString();
    }

    private Socket KernelListener()
    {
        var listener = KernelSocket(SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Parse(_kernelTarget), TargetPort));
        listener.Listen(4);
        return listener;
    }

    private static byte Pattern(int i) => (byte)(i * 7 + (i >> 8));

    private static byte[] PatternBytes(int length) => Enumerable.Range(0, length).Select(Pattern).ToArray();

    /// <summary>Accepts one connection, sends <paramref name="length"/> bytes of the pattern (noting whether send()
    /// ever said EAGAIN), shuts down its side and closes once the peer's FIN came.</summary>
    private Func<bool> StackSender(int length, Action? onEagain = null)
    {
        int l = _stack.TcpOpen();
        Assert.That(_stack.TcpBind(l, new Ipv4Endpoint(Ipv4Address.Any, TargetPort)), Is.Zero);
        Assert.That(_stack.TcpListen(l, 4), Is.Zero);
        int c = -1, sent = 0;
        bool shut = false;
        var data = PatternBytes(length);
        var buffer = new byte[4096];
        return () =>
        {
            if (c < 0 && (c = _stack.TcpAccept(l, out _)) < 0)
                return false;
            while (sent < length)
            {
                int n = _stack.TcpSend(c, data.AsSpan(sent));
                if (n == -(int)Errno.EAGAIN)
                {
                    onEagain?.Invoke();
                    return false;
                }
                Assert.That(n, Is.GreaterThan(0), $"send: {(Errno)(-n)}; {StackDump.Connection(_stack, c)}");
                sent += n;
            }
            if (!shut)
            {
                Assert.That(_stack.TcpShutdown(c, read: false, write: true), Is.Zero);
                shut = true;
            }
            int r = _stack.TcpReceive(c, buffer);
            if (r != 0)
                return false;
            Assert.That(_stack.TcpClose(c), Is.Zero);
            Assert.That(_stack.TcpClose(l), Is.Zero);
            return true;
        };
    }

    private Task KernelSender(int length)
    {
        var listener = KernelListener();
        return Task.Run(() => SendAll(listener, length));
    }

    private static void SendAll(Socket listener, int length)
    {
        using var _ = listener;
        using var s = listener.Accept();
        s.SendBufferSize = 8 * 1024; // doubled by the kernel: 16 KiB, as the stack's
        s.ReceiveTimeout = (int)Deadline.TotalMilliseconds;
        s.SendTimeout = (int)Deadline.TotalMilliseconds;
        s.Send(PatternBytes(length));
        s.Shutdown(SocketShutdown.Send);
        var buffer = new byte[16];
        while (s.Receive(buffer) > 0)
        {
        }
    }

    private static Func<bool> Done(Task t) => () => t.IsCompleted;

    private static string Acks(Outcome o) =>
        string.Join(" ", o.Seen.Where(s => s.Flags.Contains('A', StringComparison.Ordinal) && s.Len == 0).Select(s => s.Ack));

    [Test]
    public void Overlapping_retransmissions_with_other_bytes_read_as_on_linux_and_get_the_same_acks()
    {
        var read = new StringBuilder();
        var onStack = RunScript("overlap", _peer.StackAddress, StackReader(read));
        var kernelApp = KernelReader();
        var onKernel = RunScript("overlap", _kernelTarget, Done(kernelApp));
        string kernelRead = kernelApp.GetAwaiter().GetResult();

        TestContext.Out.WriteLine($"kernel read {kernelRead.Length} bytes: {Runs(kernelRead)}; ACKs {Acks(onKernel)}");
        TestContext.Out.WriteLine($"stack read {read.Length} bytes: {Runs(read.ToString())}; ACKs {Acks(onStack)}; " +
            $"D-SACK old {_stack.Counters.TcpExtTCPDSACKOldSent} ofo {_stack.Counters.TcpExtTCPDSACKOfoSent}, ofo queued {_stack.Counters.TcpExtTCPOFOQueue}");
        Assert.Multiple(() =>
        {
            Assert.That(kernelRead, Has.Length.EqualTo(480), "the kernel read the whole stream (the script is sound)");
            Assert.That(read.ToString(), Is.EqualTo(kernelRead), "the stack's application read what Linux's did");
            Assert.That(onStack.Seen.Max(s => s.Ack), Is.EqualTo(onKernel.Seen.Max(s => s.Ack)), "the same final ACK");
            Assert.That(DistinctAcks(onStack), Is.EqualTo(DistinctAcks(onKernel)), "the cumulative ACK moved through the same values");
        });
    }

    /// <summary>One of the SNMP counters of the stack namespace's kernel (where the kernel target's socket lives).</summary>
    private long StackNamespaceCounter(string name)
    {
        string line = _peer.StackNs.Exec($"nstat -az {name}");
        var m = System.Text.RegularExpressions.Regex.Match(line, name + @"\s+(\d+)");
        Assert.That(m.Success, Is.True, $"no {name} in nstat's output: {line}");
        return long.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture);
    }

    private static List<long> DistinctAcks(Outcome o)
    {
        var acks = new List<long>();
        foreach (var s in o.Seen.Where(s => s.Flags.Contains('A', StringComparison.Ordinal)))
            if (acks.Count == 0 || acks[^1] != s.Ack)
                acks.Add(s.Ack);
        return acks;
    }

    /// <summary>"A100 B50 ..." of a string of runs.</summary>
    private static string Runs(string s)
    {
        var b = new StringBuilder();
        for (int i = 0; i < s.Length;)
        {
            int j = i;
            while (j < s.Length && s[j] == s[i])
                j++;
            b.Append(CultureInfo.InvariantCulture, $"{s[i]}{j - i} ");
            i = j;
        }
        return b.ToString().TrimEnd();
    }

    [Test]
    public void Data_acknowledging_what_was_never_sent_is_dropped_and_the_connection_goes_on_as_on_linux()
    {
        var read = new StringBuilder();
        var onStack = RunScript("ack-unsent", _peer.StackAddress, StackReader(read));
        var kernelApp = KernelReader();
        long challengesBefore = StackNamespaceCounter("TcpExtTCPChallengeACK");
        var onKernel = RunScript("ack-unsent", _kernelTarget, Done(kernelApp));
        string kernelRead = kernelApp.GetAwaiter().GetResult();
        long kernelChallenges = StackNamespaceCounter("TcpExtTCPChallengeACK") - challengesBefore;

        var stackAnswer = onStack.From("bad", "good").ToList();
        var kernelAnswer = onKernel.From("bad", "good").ToList();
        TestContext.Out.WriteLine($"kernel read '{kernelRead}', answered the bad ACK with {kernelAnswer.Count} segment(s); " +
            $"stack read '{read}', answered with {stackAnswer.Count} (ACK {string.Join(",", stackAnswer.Select(s => s.Ack))}), " +
            $"Drop.TcpBadAck {_stack.Counters.Drop(DropReason.TcpBadAck)}; challenge ACKs: kernel {kernelChallenges}, stack " +
            $"{_stack.Counters.TcpExtTCPChallengeACK}");
        Assert.Multiple(() =>
        {
            Assert.That(kernelRead, Is.EqualTo(new string('Y', 10)), "Linux dropped the data with the bad ACK");
            Assert.That(read.ToString(), Is.EqualTo(kernelRead));
            Assert.That(_stack.Counters.Drop(DropReason.TcpBadAck), Is.EqualTo(1), "counted");
            Assert.That(stackAnswer.Count, Is.EqualTo(kernelAnswer.Count), "answered as Linux answers");
            Assert.That(stackAnswer.All(s => s.Ack == 1), Is.True, "any answer acknowledges only the SYN (SND.UNA unmoved)");
            Assert.That(_stack.Counters.TcpExtTCPChallengeACK, Is.EqualTo(kernelChallenges), "counted as Linux counts the answer");
        });
    }

    [TestCase(1)]
    [TestCase(64)]
    public void A_peer_offering_a_tiny_mss_gets_linuxs_segment_sizes_and_every_byte(int mss)
    {
        const int Length = 6000;
        var onStack = RunScript("tiny-mss", _peer.StackAddress, StackSender(Length), "--mss", mss.ToString(CultureInfo.InvariantCulture));
        var kernelApp = KernelSender(Length);
        var onKernel = RunScript("tiny-mss", _kernelTarget, Done(kernelApp), "--mss", mss.ToString(CultureInfo.InvariantCulture));
        kernelApp.GetAwaiter().GetResult();

        int stackMax = onStack.Seen.Max(s => s.Len), kernelMax = onKernel.Seen.Max(s => s.Len);
        int stackSegments = onStack.Seen.Count(s => s.Len > 0), kernelSegments = onKernel.Seen.Count(s => s.Len > 0);
        TestContext.Out.WriteLine($"MSS {mss}: kernel sent {kernelSegments} data segments of at most {kernelMax} bytes, " +
            $"stack {stackSegments} of at most {stackMax}; both delivered {Length} bytes intact");
        Assert.Multiple(() =>
        {
            Assert.That(onKernel.Received, Is.EqualTo(PatternBytes(Length)), "the kernel's bytes (the script is sound)");
            Assert.That(onStack.Received, Is.EqualTo(PatternBytes(Length)), "every byte, in order");
            Assert.That(stackMax, Is.EqualTo(kernelMax), "the segment size Linux uses (tcp_min_snd_mss 48)");
            Assert.That(stackMax, Is.EqualTo(Math.Max(mss, NetStack.TcpMinSndMss)));
        });
    }

    [TestCase(3, 4, 1000 - 40, TestName = "Fragmentation needed quoting the connection resends in pieces and other quotes are ignored as on Linux")]
    [TestCase(3, 3, 1460, TestName = "Port unreachable quoting an established connection changes nothing as on Linux")]
    [TestCase(11, 0, 1460, TestName = "Time exceeded quoting an established connection changes nothing as on Linux")]
    public void An_icmp_error_quoting_the_connection_is_taken_as_linux_takes_it(int type, int code, int mss)
    {
        const int Length = 20000;
        string[] args = ["--type", type.ToString(CultureInfo.InvariantCulture), "--code", code.ToString(CultureInfo.InvariantCulture), "--mtu", "1000"];
        var onStack = RunScript("icmp-quote", _peer.StackAddress, StackSender(Length), args);
        var kernelApp = KernelSender(Length);
        var onKernel = RunScript("icmp-quote", _kernelTarget, Done(kernelApp), args);
        kernelApp.GetAwaiter().GetResult();

        foreach (var (who, o) in new[] { ("kernel", onKernel), ("stack", onStack) })
        {
            var before = o.From("other", "valid").Where(s => s.Len > 0).ToList();
            var after = o.From("valid").Where(s => s.Len > 0).ToList();
            var firstAfter = after.FirstOrDefault();
            TestContext.Out.WriteLine($"ICMP {type}/{code}, {who}: {before.Count} data segments between the bad quotes and the good one, " +
                $"then {after.Count} of at most {after.Select(s => s.Len).DefaultIfEmpty().Max()} bytes, the first (seq {firstAfter?.Seq}) at +" +
                $"{(firstAfter is null ? -1 : (firstAfter.T - o.At("valid")) * 1000):0} ms");
            Assert.Multiple(() =>
            {
                Assert.That(o.Received, Is.EqualTo(PatternBytes(Length)), $"{who}: every byte, the connection alive");
                Assert.That(before, Is.Empty, $"{who}: the bad quotes made it send nothing");
                Assert.That(after.Max(s => s.Len), Is.EqualTo(mss), $"{who}: segments of the MSS the error leaves");
                if (mss < 1460)
                    Assert.That(after[0], Has.Property("Seq").EqualTo(1).And.Property("Len").EqualTo(mss),
                        $"{who}: the flight went again from its start, in pieces");
            });
        }
        TestContext.Out.WriteLine($"stack: IcmpErrorNoSocket {_stack.Counters.Drop(DropReason.IcmpErrorNoSocket)}, " +
            $"TcpExtOutOfWindowIcmps {_stack.Counters.TcpExtOutOfWindowIcmps}, TcpPathMtuReductions {_stack.Counters.TcpPathMtuReductions}, " +
            $"TcpIcmpSoftErrors {_stack.Counters.TcpIcmpSoftErrors}");
        Assert.Multiple(() =>
        {
            Assert.That(_stack.Counters.Drop(DropReason.IcmpErrorNoSocket), Is.EqualTo(1), "the other connection's quote");
            Assert.That(_stack.Counters.TcpExtOutOfWindowIcmps, Is.EqualTo(1), "the sequence never sent");
            Assert.That(_stack.Counters.TcpPathMtuReductions, Is.EqualTo(mss < 1460 ? 1 : 0));
            Assert.That(_stack.Counters.TcpIcmpSoftErrors, Is.EqualTo(mss < 1460 ? 0 : 1));
        });
    }

    [TestCase(3, 3, SocketError.ConnectionRefused, Errno.ECONNREFUSED, TestName = "A connect answered by port unreachable fails with ECONNREFUSED as on Linux")]
    [TestCase(3, 1, SocketError.HostUnreachable, Errno.EHOSTUNREACH, TestName = "A connect answered by host unreachable fails with EHOSTUNREACH as on Linux")]
    public void A_connect_answered_by_an_icmp_error_fails_with_linuxs_errno(int type, int code, SocketError kernelError, Errno errno)
    {
        int c = _stack.TcpOpen();
        Assert.That(_stack.TcpBind(c, new Ipv4Endpoint(Ipv4Address.Any, TargetPort)), Is.Zero);
        bool stillConnectingAfterOutside = false, connecting = false;
        var args = new[] { "--type", type.ToString(CultureInfo.InvariantCulture), "--code", code.ToString(CultureInfo.InvariantCulture) };
        var clock = Stopwatch.StartNew();
        RunScript("refuse-connect", _peer.StackAddress, () =>
        {
            if (!connecting)
            {
                Assert.That(_stack.TcpConnect(c, new Ipv4Endpoint(Ipv4Address.Parse(_peer.KernelAddress), PeerPort)),
                    Is.EqualTo(-(int)Errno.EINPROGRESS));
                connecting = true;
                clock.Restart();
            }
            if (_stack.TcpStateOf(c) == TcpState.SynSent && _stack.Counters.TcpExtOutOfWindowIcmps == 1)
                stillConnectingAfterOutside = true;
            return _stack.TcpStateOf(c) == TcpState.Closed;
        }, args);
        var stackTook = clock.Elapsed;
        int stackErrno = _stack.TcpTakeError(c);

        var kernelSocket = KernelSocket(SocketType.Stream, ProtocolType.Tcp);
        kernelSocket.Bind(new IPEndPoint(IPAddress.Parse(_kernelTarget), TargetPort));
        Task? connect = null;
        RunScript("refuse-connect", _kernelTarget, () =>
            (connect ??= kernelSocket.ConnectAsync(new IPEndPoint(IPAddress.Parse(_peer.KernelAddress), PeerPort))).IsCompleted, args);
        var failure = Assert.ThrowsAsync<SocketException>(async () => await connect!.ConfigureAwait(false));

        TestContext.Out.WriteLine($"ICMP {type}/{code}: kernel connect failed {failure!.SocketErrorCode}; stack {(Errno)stackErrno} " +
            $"in {stackTook.TotalMilliseconds:0} ms; TcpExtOutOfWindowIcmps {_stack.Counters.TcpExtOutOfWindowIcmps}, TcpAttemptFails {_stack.Counters.TcpAttemptFails}");
        Assert.Multiple(() =>
        {
            Assert.That(failure.SocketErrorCode, Is.EqualTo(kernelError), "Linux's errno (the script is sound)");
            Assert.That((Errno)stackErrno, Is.EqualTo(errno));
            Assert.That(stillConnectingAfterOutside, Is.True, "the quote with a sequence never sent changed nothing");
            Assert.That(_stack.Counters.TcpAttemptFails, Is.EqualTo(1));
        });
    }

    [Test]
    public void Tiny_overlapping_and_duplicate_fragments_give_the_application_the_datagrams_linux_gives()
    {
        int u = _stack.UdpOpen();
        Assert.That(_stack.UdpBind(u, new Ipv4Endpoint(Ipv4Address.Any, TargetPort)), Is.Zero);
        var stackGot = new List<string>();
        var buffer = new byte[2048];
        var onStack = RunScript("fragments", _peer.StackAddress, () =>
        {
            int n;
            while ((n = _stack.UdpReceiveFrom(u, buffer, out _)) >= 0)
                stackGot.Add(Encoding.Latin1.GetString(buffer, 0, n));
            return stackGot.Contains("end");
        });

        var kernelSocket = KernelSocket(SocketType.Dgram, ProtocolType.Udp);
        kernelSocket.Bind(new IPEndPoint(IPAddress.Parse(_kernelTarget), TargetPort));
        kernelSocket.ReceiveTimeout = (int)Deadline.TotalMilliseconds;
        var kernelApp = Task.Run(() =>
        {
            var got = new List<string>();
            var b = new byte[2048];
            while (!got.Contains("end"))
                got.Add(Encoding.Latin1.GetString(b, 0, kernelSocket.Receive(b)));
            return got;
        });
        RunScript("fragments", _kernelTarget, Done(kernelApp));
        var kernelGot = kernelApp.GetAwaiter().GetResult();

        static string Names(List<string> got) => string.Join(", ", got.Select(d => d.Length > 8 ? $"{d[..5]}({Runs(d[5..])})" : d));
        TestContext.Out.WriteLine($"kernel delivered {Names(kernelGot)}");
        TestContext.Out.WriteLine($"stack delivered {Names(stackGot)}; IpReasmOKs {_stack.Counters.IpReasmOKs}, IpReasmFails " +
            $"{_stack.Counters.IpReasmFails}, Drop.IpReassemblyOverlap {_stack.Counters.Drop(DropReason.IpReassemblyOverlap)}, " +
            $"Drop.IpFragmentDuplicate {_stack.Counters.Drop(DropReason.IpFragmentDuplicate)}");
        Assert.Multiple(() =>
        {
            Assert.That(kernelGot, Has.None.StartsWith("ovl1-"), "Linux drops a datagram with overlapping fragments (the script is sound)");
            Assert.That(stackGot, Is.EqualTo(kernelGot), "the same datagrams with the same bytes");
            Assert.That(_stack.Counters.Drop(DropReason.IpReassemblyOverlap), Is.EqualTo(1), "the overlap counted");
        });
    }

    [Test]
    public void A_window_held_at_zero_is_probed_with_backoff_as_on_linux_and_the_stream_survives_it()
    {
        const int Length = 50_000;
        bool eagain = false;
        var onStack = RunScript("zero-window", _peer.StackAddress, StackSender(Length, () => eagain = true), "--hold", "4");
        var kernelApp = KernelSender(Length);
        var onKernel = RunScript("zero-window", _kernelTarget, Done(kernelApp), "--hold", "4");
        kernelApp.GetAwaiter().GetResult();

        static double[] Probes(Outcome o) => o.Root.GetProperty("probes").EnumerateArray().Select(p => p.GetDouble()).ToArray();
        static string Gaps(double[] p) => string.Join(" ", p.Zip(p.Skip(1), (a, b) => $"{(b - a) * 1000:0}"));
        var stackProbes = Probes(onStack);
        var kernelProbes = Probes(onKernel);
        TestContext.Out.WriteLine($"4 s at zero window: kernel {kernelProbes.Length} probes, the first after " +
            $"{(kernelProbes.FirstOrDefault() - onKernel.At("zero")) * 1000:0} ms, then gaps (ms) {Gaps(kernelProbes)}; stack {stackProbes.Length} probes, " +
            $"the first after {(stackProbes.FirstOrDefault() - onStack.At("zero")) * 1000:0} ms, then gaps {Gaps(stackProbes)}; stack send() said EAGAIN: {eagain}; " +
            $"both delivered {Length} bytes; TcpExtTCPAbortOnTimeout {_stack.Counters.TcpExtTCPAbortOnTimeout}");
        Assert.Multiple(() =>
        {
            Assert.That(onKernel.Received, Is.EqualTo(PatternBytes(Length)), "the kernel's stream (the script is sound)");
            Assert.That(onStack.Received, Is.EqualTo(PatternBytes(Length)), "every byte once the window opened");
            Assert.That(kernelProbes, Has.Length.GreaterThanOrEqualTo(3), "Linux probed (the script is sound)");
            Assert.That(stackProbes.Length, Is.InRange(kernelProbes.Length - 1, kernelProbes.Length + 1), "as often as Linux");
            Assert.That(stackProbes.Zip(stackProbes.Skip(1), (a, b) => b - a).Zip(stackProbes.Skip(1).Zip(stackProbes.Skip(2), (a, b) => b - a),
                (g1, g2) => g2 >= g1 * 0.8).All(x => x), Is.True, "the gaps grow (backoff), no spinning");
            Assert.That(eagain, Is.True, "send() said EAGAIN once the send buffer filled");
            Assert.That(_stack.Counters.TcpExtTCPAbortOnTimeout, Is.Zero, "answered probes keep the connection alive");
        });
    }

    [Test]
    public void A_window_whose_right_edge_is_pulled_back_gets_no_new_data_beyond_it_and_the_stream_survives_as_on_linux()
    {
        const int Length = 30_000;
        var onStack = RunScript("shrink", _peer.StackAddress, StackSender(Length));
        var kernelApp = KernelSender(Length);
        var onKernel = RunScript("shrink", _kernelTarget, Done(kernelApp));
        kernelApp.GetAwaiter().GetResult();

        foreach (var (who, o) in new[] { ("kernel", onKernel), ("stack", onStack) })
        {
            long sentBefore = o.Seen.Where(s => s.T < o.At("shrunk") && s.Len > 0).Max(s => s.Seq + s.Len);
            var during = o.From("shrunk", "open").Where(s => s.Len > 0).ToList();
            TestContext.Out.WriteLine($"{who}: sent up to {sentBefore - 1} before the edge went back from 8000 to 3000; " +
                $"{during.Count} data segments while it stayed there ({string.Join(" ", during.Select(s => $"{s.Seq - 1}+{s.Len}"))}); " +
                $"{o.Received.Length} bytes delivered");
            Assert.Multiple(() =>
            {
                Assert.That(o.Received, Is.EqualTo(PatternBytes(Length)), $"{who}: every byte");
                Assert.That(during.Where(s => s.Seq >= sentBefore), Is.Empty, $"{who}: no new data beyond the new edge");
            });
        }
        Assert.That(_stack.Counters.TcpEstabResets + _stack.Counters.TcpOutRsts, Is.Zero, "no reset either way");
    }
}
