using System.Buffers.Binary;
using System.Diagnostics;
using System.Net.Sockets;
using System.Security.Cryptography;
using Onload.Stack;
using Onload.Stack.Wire;
using Onload.Tests.Netns;
using Onload.Vnic;

namespace Onload.Tests.Interop;

/// <summary>
/// TCP at scale against the Linux kernel over AF_XDP: many connections through one stack at once, and many in
/// sequence, with every byte checked and every table row and port accounted for afterwards. The kernel's side is a
/// server in this process (<see cref="KernelTcpServer"/>) inside the kernel's namespace.
/// </summary>
[TestFixture("af_xdp")]
[Category("netns")]
[NonParallelizable]
public class TcpScaleInteropTests(string kind)
{
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(60);
    private KernelPeer _peer = null!;

    [SetUp]
    public void CreatePeer() => _peer = new KernelPeer(kind);

    [TearDown]
    public void RemovePeer() => _peer?.Dispose();

    [Test]
    public void Five_hundred_concurrent_connections_each_get_their_own_bytes_echoed_and_every_row_is_freed()
    {
        const int Connections = 500;
        const ushort Port = 9400;
        using var server = new KernelTcpServer(_peer.KernelNs, _peer.KernelAddress, Port, KernelTcpServer.Echo);
        var stack = _peer.OpenStack(o => o with
        {
            TcpConnections = Connections + 16,
            TcpSendBufferBytes = 64 * 1024,
            TcpReceiveBufferBytes = 64 * 1024,
            TcpMslNs = 100_000_000,
        });
        int baseline = stack.TcpConnections.Open;
        var remote = new Ipv4Endpoint(Ipv4Address.Parse(_peer.KernelAddress), Port);
        var clock = Stopwatch.StartNew();

        // Each connection has its own bytes (its own seed and length), so a byte delivered on the wrong
        // connection, or at the wrong place in one, shows as a difference.
        var clients = new StackEchoClients(stack);
        for (int i = 0; i < Connections; i++)
        {
            int c = stack.TcpOpen();
            Assert.That(c, Is.GreaterThanOrEqualTo(0), $"socket {i}");
            Assert.That(stack.TcpConnect(c, remote), Is.EqualTo(-(int)Errno.EINPROGRESS), $"connect {i}");
            clients.Add(c, TestData.Random(1000 + i, 20_000 + 97 * i));
            if (i == 0) // the first resolves the kernel's MAC, so the other SYNs do not queue behind ARP
                KernelPeer.Drive(stack, () => stack.TcpIsConnected(c), Deadline, () => "the first connection");
        }
        clients.Pump(Deadline, () => $"kernel errors: {string.Join(" | ", server.Errors)}");
        var transferred = clock.Elapsed;

        Assert.That(clients.Damaged(), Is.Empty);
        Assert.That(server.Errors, Is.Empty);

        // Every connection is in TIME_WAIT now (the stack sent the first FIN): closed, they go after 2MSL.
        foreach (var s in clients.Streams)
            Assert.That(stack.TcpClose(s.Socket), Is.Zero);
        KernelPeer.Drive(stack, () => stack.TcpConnections.Open == baseline, TimeSpan.FromSeconds(10),
            () => $"every row to be freed ({stack.TcpConnections.Open - baseline} left)");
        Assert.That(server.Served, Is.EqualTo(Connections));
        Assert.That(stack.Counters.TcpActiveOpens, Is.EqualTo(Connections));
        Assert.That(stack.Counters.TcpCurrEstab, Is.Zero);
        TestContext.Out.WriteLine($"{Connections} connections, {clients.Bytes} bytes each way: " +
            $"echoed in {transferred.TotalSeconds:0.00} s, all rows free after {clock.Elapsed.TotalSeconds:0.00} s; " +
            $"TcpRetransSegs {stack.Counters.TcpRetransSegs}; {StackDump.Vnic(stack.Vnic)}");
    }

    [Test]
    public void Five_hundred_concurrent_kernel_clients_are_accepted_and_each_gets_its_own_bytes_echoed_by_the_stack()
    {
        const int Connections = 500;
        const ushort Port = 9402;
        var stack = _peer.OpenStack(o => o with
        {
            TcpConnections = Connections + 16,
            TcpSendBufferBytes = 64 * 1024,
            TcpReceiveBufferBytes = 64 * 1024,
        });
        int listener = stack.TcpOpen();
        Assert.That(stack.TcpBind(listener, new Ipv4Endpoint(Ipv4Address.Any, Port)), Is.Zero);
        Assert.That(stack.TcpListen(listener, Connections), Is.Zero);
        int baseline = stack.TcpConnections.Open;
        var server = new System.Net.IPEndPoint(System.Net.IPAddress.Parse(_peer.StackAddress), Port);
        var sockets = _peer.KernelNs.Run(() => Enumerable.Range(0, Connections)
            .Select(_ => new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp)).ToArray());
        try
        {
            var clock = Stopwatch.StartNew();
            var data = Enumerable.Range(0, Connections).Select(i => TestData.Random(5000 + i, 20_000 + 97 * i)).ToArray();
            // The first client alone resolves the stack's MAC for the kernel, so the other SYNs do not queue behind ARP.
            var first = Task.Run(() => KernelClient(sockets[0], server, data[0]));
            var clients = new Task<string?>[Connections];
            clients[0] = first;
            var echo = new StackEchoServer(stack, listener);
            bool othersStarted = false;
            KernelPeer.Drive(stack, () =>
            {
                echo.Step(_ =>
                {
                    if (othersStarted)
                        return;
                    othersStarted = true;
                    for (int i = 1; i < Connections; i++)
                    {
                        int k = i;
                        clients[k] = Task.Run(() => KernelClient(sockets[k], server, data[k]));
                    }
                });
                return echo.Finished == Connections && clients.All(t => t is { IsCompleted: true });
            }, Deadline, () => $"every kernel client to finish ({echo.Finished} of {Connections} closed by the stack, " +
                $"{clients.Count(t => t is { IsCompleted: true })} clients done); {StackDump.Vnic(stack.Vnic)}; {StackDump.TcpCounters(stack)}");
            var echoed = clock.Elapsed;

            var damaged = clients.Select(t => t.Result).Where(r => r is not null).ToList();
            Assert.That(damaged, Is.Empty);
            KernelPeer.Drive(stack, () => stack.TcpConnections.Open == baseline, TimeSpan.FromSeconds(10),
                () => $"every accepted row to be freed: {StackDump.Connections(stack)}; {StackDump.TcpCounters(stack)}");
            Assert.That(stack.Counters.TcpPassiveOpens, Is.EqualTo(Connections));
            Assert.That(stack.Counters.TcpCurrEstab, Is.Zero);
            TestContext.Out.WriteLine($"{Connections} kernel clients, {data.Sum(d => (long)d.Length)} bytes each way: echoed " +
                $"in {echoed.TotalSeconds:0.00} s; TcpRetransSegs {stack.Counters.TcpRetransSegs}; {StackDump.Vnic(stack.Vnic)}");
        }
        finally
        {
            foreach (var s in sockets)
                s.Dispose();
        }
    }

    /// <summary>A kernel client: connects, sends <paramref name="data"/> while reading the echo, shuts down its
    /// side, reads to the end. Returns null if the echo was exactly <paramref name="data"/>, else what differed.</summary>
    internal static async Task<string?> KernelClient(Socket s, System.Net.IPEndPoint server, byte[] data)
    {
        await s.ConnectAsync(server).ConfigureAwait(false);
        string who = s.LocalEndPoint?.ToString() ?? "?";
        var send = Task.Run(async () =>
        {
            await s.SendAsync(data, SocketFlags.None).ConfigureAwait(false);
            s.Shutdown(SocketShutdown.Send);
        });
        var back = new byte[data.Length + 1];
        int got = 0, n;
        while ((n = await s.ReceiveAsync(back.AsMemory(got), SocketFlags.None).ConfigureAwait(false)) > 0)
        {
            got += n;
            if (got > data.Length)
                break;
        }
        await send.ConfigureAwait(false);
        if (got != data.Length)
            return $"{who}: {got} bytes back of {data.Length}";
        int same = back.AsSpan(0, got).CommonPrefixLength(data);
        return same == got ? null : $"{who}: first difference at byte {same}";
    }

    [Test]
    public void Twenty_thousand_connections_in_sequence_leak_no_table_row_and_no_ephemeral_port()
    {
        const int Connections = 20_000;
        const ushort Port = 9401;
        const ushort FirstPort = 40000;
        const int Ports = 1000; // each port serves 20 connections: a port or a row kept by mistake runs them out
        using var server = new KernelTcpServer(_peer.KernelNs, _peer.KernelAddress, Port, AnswerOneRequest);
        var stack = _peer.OpenStack(o => o with
        {
            TcpConnections = Ports + 24,
            TcpSendBufferBytes = 16 * 1024,
            TcpReceiveBufferBytes = 16 * 1024,
            TcpMslNs = 50_000_000, // TIME_WAIT of 100 ms
            EphemeralPortFirst = FirstPort,
            EphemeralPortLast = FirstPort + Ports - 1,
        });
        int baseline = stack.TcpConnections.Open;
        var remote = new Ipv4Endpoint(Ipv4Address.Parse(_peer.KernelAddress), Port);
        var request = new byte[Request];
        var reply = new byte[64];
        var clock = Stopwatch.StartNew();
        int peakOpen = 0;

        for (int i = 0; i < Connections; i++)
        {
            // Even: the stack closes first (FIN_WAIT_1, FIN_WAIT_2, TIME_WAIT for 2MSL). Odd: the kernel closes
            // first (CLOSE_WAIT, LAST_ACK).
            bool kernelClosesFirst = i % 2 == 1;
            int c = stack.TcpOpen();
            if (c < 0)
                Assert.Fail($"no socket for connection {i}: {(Errno)(-c)}; {stack.TcpConnections.Open} rows in use");
            int rc = stack.TcpConnect(c, remote);
            if (rc != -(int)Errno.EINPROGRESS)
                Assert.Fail($"connect {i}: {(Errno)(-rc)} (ports {FirstPort}-{FirstPort + Ports - 1} ran out?); " +
                    $"{stack.TcpConnections.Open} rows in use");
            peakOpen = Math.Max(peakOpen, stack.TcpConnections.Open);
            KernelPeer.Drive(stack, () => stack.TcpIsConnected(c) || stack.TcpStateOf(c) == Onload.Stack.Tcp.TcpState.Closed, Deadline,
                () => $"connection {i} to be established; {StackDump.Connection(stack, c)}");
            Assert.That(stack.TcpIsConnected(c), Is.True, () => $"connection {i}: {(Errno)stack.TcpTakeError(c)}");

            BinaryPrimitives.WriteInt32BigEndian(request, i);
            BinaryPrimitives.WriteInt32BigEndian(request.AsSpan(4), kernelClosesFirst ? 1 : 0);
            Assert.That(stack.TcpSend(c, request), Is.EqualTo(Request));
            int got = 0;
            KernelPeer.Drive(stack, () =>
            {
                int r = stack.TcpReceive(c, reply.AsSpan(got));
                if (r > 0)
                    got += r;
                else if (r != -(int)Errno.EAGAIN)
                    Assert.Fail($"connection {i}: {(r == 0 ? "end of stream" : (Errno)(-r))} after {got} bytes of the reply");
                return got >= Reply;
            }, Deadline, () => $"the reply on connection {i}; {StackDump.Connection(stack, c)}");
            Assert.That(reply.AsSpan(0, got).SequenceEqual(SHA256.HashData(request)), Is.True, $"reply {i}");

            if (kernelClosesFirst)
            {
                int end = -1;
                KernelPeer.Drive(stack, () => (end = stack.TcpReceive(c, reply)) != -(int)Errno.EAGAIN, Deadline,
                    () => $"the kernel's FIN on connection {i}; {StackDump.Connection(stack, c)}");
                Assert.That(end, Is.Zero, $"connection {i}: end of stream");
            }
            Assert.That(stack.TcpClose(c), Is.Zero);
        }
        var opened = clock.Elapsed;

        KernelPeer.Drive(stack, () => stack.TcpConnections.Open == baseline, TimeSpan.FromSeconds(10),
            () => $"every row to be freed ({stack.TcpConnections.Open - baseline} left)");
        Assert.That(stack.Counters.TcpActiveOpens, Is.EqualTo(Connections));
        Assert.That(stack.Counters.TcpAttemptFails, Is.Zero);
        Assert.That(stack.Counters.TcpCurrEstab, Is.Zero);
        Poll.Until(() => server.Served == Connections || server.Errors.Count > 0, Deadline, "the kernel to finish every connection");
        Assert.That(server.Errors, Is.Empty);
        Assert.That(server.Served, Is.EqualTo(Connections), "the kernel served every connection");

        // Every port of the range can be bound again: none is still held by a connection that is gone.
        var held = new List<int>();
        for (int p = FirstPort; p < FirstPort + Ports; p++)
        {
            int c = stack.TcpOpen();
            Assert.That(c, Is.GreaterThanOrEqualTo(0));
            Assert.That(stack.TcpBind(c, new Ipv4Endpoint(Ipv4Address.Any, (ushort)p)), Is.Zero, $"port {p}");
            held.Add(c);
        }
        foreach (int c in held)
            Assert.That(stack.TcpClose(c), Is.Zero);
        Assert.That(stack.TcpConnections.Open, Is.EqualTo(baseline));
        TestContext.Out.WriteLine($"{Connections} connections in {opened.TotalSeconds:0.00} s " +
            $"({Connections / opened.TotalSeconds:0} per second), at most {peakOpen - baseline} rows in use at once; " +
            $"TcpRetransSegs {stack.Counters.TcpRetransSegs}; {StackDump.Vnic(stack.Vnic)}");
    }

    private const int Request = 8;
    private const int Reply = 32;

    /// <summary>Reads one request (connection number, who closes first) and answers with its SHA-256; then closes
    /// at once, or after the client's FIN, as the request asks.</summary>
    private static async Task AnswerOneRequest(Socket s)
    {
        var request = new byte[Request];
        await KernelTcpServer.ReceiveExactly(s, request).ConfigureAwait(false);
        await s.SendAsync(SHA256.HashData(request), SocketFlags.None).ConfigureAwait(false);
        if (BinaryPrimitives.ReadInt32BigEndian(request.AsSpan(4)) == 1)
            return; // the server closes first: Dispose sends the FIN
        var rest = new byte[16];
        int n = await s.ReceiveAsync(rest, SocketFlags.None).ConfigureAwait(false);
        if (n != 0)
            throw new InvalidDataException($"{n} bytes after the request");
    }
}
