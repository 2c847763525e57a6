using System.Diagnostics;
using System.Globalization;
using System.Net.Sockets;
using Onload.Stack;
using Onload.Stack.Wire;
using Onload.Tests.Netns;

namespace Onload.Tests.Interop;

/// <summary>
/// Exhaustion (issue 10) against the Linux kernel over AF_XDP: tables, packet buffers and rings run out, the stack
/// gives back-pressure or Linux's error, loses no byte, and is whole again when the load goes; and ten thousand
/// connections at once through one stack, with what each costs in memory and what is left after they close.
/// </summary>
[TestFixture("af_xdp")]
[Category("netns")]
[Category("hostile")]
[NonParallelizable]
public class ExhaustionInteropTests(string kind)
{
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(120);
    private KernelPeer _peer = null!;

    [SetUp]
    public void CreatePeer() => _peer = new KernelPeer(kind);

    [TearDown]
    public void RemovePeer() => _peer?.Dispose();

    /// <summary>Echoes with a small buffer: ten thousand handlers of 16 KiB each would be this process's largest cost.</summary>
    private static async Task SmallEcho(Socket s)
    {
        var buffer = new byte[2048];
        int n;
        while ((n = await s.ReceiveAsync(buffer, SocketFlags.None).ConfigureAwait(false)) > 0)
            await s.SendAsync(buffer.AsMemory(0, n), SocketFlags.None).ConfigureAwait(false);
        s.Shutdown(SocketShutdown.Send);
    }

    private static string MiB(long bytes) => (bytes / 1048576.0).ToString("0.0", CultureInfo.InvariantCulture) + " MiB";

    [Test]
    public void Ten_thousand_concurrent_connections_each_move_their_own_bytes_and_closing_them_gives_their_memory_back()
    {
        const int Connections = 10_000;
        const int Batch = 1000; // SYNs a burst: within the kernel listener's backlog (somaxconn 4096)
        const ushort Port = 9430;
        using var server = new KernelTcpServer(_peer.KernelNs, _peer.KernelAddress, Port, SmallEcho);
        // Linux's default buffers (4 MiB at most each way, 16 KiB and 128 KiB to start): 80 GiB of address space for
        // the table, of which only what the connections use becomes memory.
        var stack = _peer.OpenStack(o => o with { TcpConnections = Connections + 16, TcpMslNs = 100_000_000 }, ringSize: 2048);
        int baselineRows = stack.TcpConnections.Open;
        int baselineBuffers = stack.Vnic.Buffers.Available;
        long baselineResident = stack.TcpConnections.ArenaResidentBytes();
        var remote = new Ipv4Endpoint(Ipv4Address.Parse(_peer.KernelAddress), Port);
        var report = new List<string>
        {
            $"{Connections} connections; TCP table {MiB(stack.TcpConnections.RowBytes)} of rows, " +
            $"{stack.TcpConnections.ArenaBytes / (1L << 30)} GiB of ring address space reserved",
        };
        long[] residentAfterClose = new long[2];

        for (int round = 0; round < 2; round++)
        {
            var clock = Stopwatch.StartNew();
            var clients = new StackEchoClients(stack);
            for (int first = 0; first < Connections; first += Batch)
            {
                var batch = new List<int>(Batch);
                for (int i = first; i < first + Batch; i++)
                {
                    int c = stack.TcpOpen();
                    Assert.That(c, Is.GreaterThanOrEqualTo(0), $"socket {i}");
                    Assert.That(stack.TcpConnect(c, remote), Is.EqualTo(-(int)Errno.EINPROGRESS), $"connect {i}");
                    clients.Add(c, TestData.Random(round * Connections + i, 1000 + 37 * i % 3000));
                    batch.Add(c);
                }
                KernelPeer.Drive(stack, () => batch.TrueForAll(stack.TcpIsConnected), Deadline,
                    () => $"connections {first}..{first + Batch - 1} to be established ({batch.Count(stack.TcpIsConnected)} are); " +
                        $"{StackDump.TcpCounters(stack)}");
            }
            var established = clock.Elapsed;
            Assert.That(stack.Counters.TcpCurrEstab, Is.EqualTo(Connections), "all established at once");
            long residentEstablished = stack.TcpConnections.ArenaResidentBytes();

            clients.Pump(Deadline, () => $"kernel errors: {string.Join(" | ", server.Errors.Take(5))}");
            var moved = clock.Elapsed;
            Assert.That(clients.Damaged(), Is.Empty);
            Assert.That(server.Errors, Is.Empty);
            long residentPeak = stack.TcpConnections.ArenaResidentBytes();

            foreach (var s in clients.Streams)
                Assert.That(stack.TcpClose(s.Socket), Is.Zero);
            KernelPeer.Drive(stack, () => stack.TcpConnections.Open == baselineRows, Deadline,
                () => $"every row to be freed ({stack.TcpConnections.Open - baselineRows} left)");
            // At least as many as when the stack had just opened (its first frames, an ARP, were out then).
            KernelPeer.Drive(stack, () => stack.Vnic.Buffers.Available >= baselineBuffers, TimeSpan.FromSeconds(10),
                () => $"every packet buffer back ({baselineBuffers - stack.Vnic.Buffers.Available} out)");
            residentAfterClose[round] = stack.TcpConnections.ArenaResidentBytes();

            report.Add($"round {round + 1}: established in {established.TotalSeconds:0.0} s, {clients.Bytes} bytes echoed by " +
                $"{moved.TotalSeconds:0.0} s, all closed by {clock.Elapsed.TotalSeconds:0.0} s; ring memory " +
                $"{MiB(residentEstablished - baselineResident)} established ({(residentEstablished - baselineResident) / Connections} B " +
                $"a connection), {MiB(residentPeak - baselineResident)} after the echo ({(residentPeak - baselineResident) / Connections} B " +
                $"a connection), {MiB(residentAfterClose[round] - baselineResident)} kept after close");
        }
        Assert.That(server.Served, Is.EqualTo(2 * Connections));
        Assert.That(stack.Counters.TcpCurrEstab, Is.Zero);
        // The second round reuses what the first left; nothing grows.
        Assert.That(residentAfterClose[1], Is.LessThanOrEqualTo(residentAfterClose[0] + (1 << 20)),
            $"ring memory after the second round's close, against the first's: {string.Join("; ", report)}");
        TestContext.Out.WriteLine(string.Join("; ", report) + $"; TcpRetransSegs {stack.Counters.TcpRetransSegs}");
    }

    [Test]
    public void A_listener_whose_table_is_full_drops_syns_until_rows_free_then_serves_every_client_intact()
    {
        const int Rows = 24; // the listener and 23 connections
        const int Clients = 64;
        const ushort Port = 9431;
        var stack = _peer.OpenStack(o => o with { TcpConnections = Rows, TcpSendBufferBytes = 64 * 1024, TcpReceiveBufferBytes = 64 * 1024 });
        int listener = stack.TcpOpen();
        Assert.That(stack.TcpBind(listener, new Ipv4Endpoint(Ipv4Address.Any, Port)), Is.Zero);
        Assert.That(stack.TcpListen(listener, 2 * Clients), Is.Zero); // the table, not the backlog, is what runs out
        var server = new System.Net.IPEndPoint(System.Net.IPAddress.Parse(_peer.StackAddress), Port);
        var sockets = _peer.KernelNs.Run(() => Enumerable.Range(0, Clients)
            .Select(_ => new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp)).ToArray());
        try
        {
            var clock = Stopwatch.StartNew();
            var data = Enumerable.Range(0, Clients).Select(i => TestData.Random(7000 + i, 20_000 + 331 * i)).ToArray();
            var clients = Enumerable.Range(0, Clients)
                .Select(i => Task.Run(() => TcpScaleInteropTests.KernelClient(sockets[i], server, data[i]))).ToArray();
            var echo = new StackEchoServer(stack, listener);
            int emfile = 0, mostRows = 0;
            KernelPeer.Drive(stack, () =>
            {
                echo.Step();
                mostRows = Math.Max(mostRows, stack.TcpConnections.Open);
                if (stack.TcpConnections.Open == Rows)
                {
                    // The application's socket() meets the same full table.
                    int c = stack.TcpOpen();
                    Assert.That(c, Is.EqualTo(-(int)Errno.EMFILE), "socket() on a full table");
                    emfile++;
                }
                return echo.Finished == Clients && clients.All(t => t.IsCompleted);
            }, Deadline, () => $"every client to be served ({echo.Finished} of {Clients}); {StackDump.TcpCounters(stack)}");
            var served = clock.Elapsed;
            Assert.That(clients.Select(t => t.Result).Where(r => r is not null), Is.Empty, "every echo intact");
            Assert.That(stack.Counters.TcpExtListenOverflows, Is.GreaterThan(0), "SYNs found the table full");
            Assert.That(emfile, Is.GreaterThan(0), "the table was seen full");
            Assert.That(stack.Counters.TcpAttemptFails + stack.Counters.TcpEstabResets, Is.Zero, "no connection reset");

            KernelPeer.Drive(stack, () => stack.TcpConnections.Open == 1, TimeSpan.FromSeconds(10),
                () => $"every accepted row freed: {StackDump.Connections(stack)}");
            int again = stack.TcpOpen();
            Assert.That(again, Is.GreaterThanOrEqualTo(0), "socket() once rows are free");
            Assert.That(stack.TcpClose(again), Is.Zero);
            TestContext.Out.WriteLine($"{Clients} kernel clients at a listener with {Rows - 1} rows for connections: all served " +
                $"intact in {served.TotalSeconds:0.0} s (SYNs retransmitted); {stack.Counters.TcpExtListenOverflows} SYNs dropped " +
                $"(ListenOverflows), socket() gave EMFILE {emfile} times while full, at most {mostRows} rows in use, all free after");
        }
        finally
        {
            foreach (var s in sockets)
                s.Dispose();
        }
    }

    /// <summary>Rings of 512 slots (the default), and of 64, which overflow under the same load.</summary>
    [TestCase(512)]
    [TestCase(64)]
    public void Packet_buffers_run_out_under_bulk_tcp_a_udp_flood_and_sockets_that_never_read_and_nothing_is_lost(int ring)
    {
        const ushort EchoPort = 9432, Sink = 9433, FirstHoarder = 9434;
        const int Hoarders = 8, Buffers = 1024;
        using var server = new KernelTcpServer(_peer.KernelNs, _peer.KernelAddress, EchoPort, KernelTcpServer.Echo);
        var stack = _peer.OpenStack(bufferCount: Buffers, ringSize: ring);
        // Taken as the stack opened, with the fill ring full: later it may be short a batch, never over.
        int baselineBuffers = stack.Vnic.Buffers.Available;
        var kernel = new Ipv4Endpoint(Ipv4Address.Parse(_peer.KernelAddress), EchoPort);
        var sink = new Ipv4Endpoint(Ipv4Address.Parse(_peer.KernelAddress), Sink);

        // Sockets that never read while the kernel floods them: each queue holds its receive buffer's worth of
        // packet buffers, together more than the pool can spare once the fill ring has its half.
        var hoarders = new int[Hoarders];
        for (int h = 0; h < Hoarders; h++)
        {
            hoarders[h] = stack.UdpOpen();
            Assert.That(stack.UdpBind(hoarders[h], new Ipv4Endpoint(Ipv4Address.Any, (ushort)(FirstHoarder + h))), Is.Zero);
        }
        using var flood = _peer.KernelNs.Run(() => new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp));
        using var sinkSocket = _peer.KernelNs.Run(() =>
        {
            var s = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
            s.Bind(new System.Net.IPEndPoint(System.Net.IPAddress.Parse(_peer.KernelAddress), Sink));
            return s;
        });
        // A burst, not a siege: a flood that never stops starves a one-thread poller of everything else (as it would
        // a kernel's softirq); what matters is what holds during it and what is left once it stops.
        const int FloodDatagrams = 40_000;
        var flooding = Task.Run(() =>
        {
            var datagram = new byte[1000];
            for (uint n = 0; n < FloodDatagrams; n++)
            {
                System.Buffers.Binary.BinaryPrimitives.WriteUInt32BigEndian(datagram, n);
                flood.SendTo(datagram, new System.Net.IPEndPoint(System.Net.IPAddress.Parse(_peer.StackAddress), FirstHoarder + (int)(n % Hoarders)));
            }
        });

        // Bulk TCP both ways at once on the same pool.
        var clients = new StackEchoClients(stack);
        for (int i = 0; i < 4; i++)
        {
            int c = stack.TcpOpen();
            Assert.That(stack.TcpConnect(c, kernel), Is.EqualTo(-(int)Errno.EINPROGRESS));
            clients.Add(c, TestData.Random(9000 + i, 2_000_000 + 1001 * i));
        }
        // And this stack's own UDP flood at the kernel, as fast as sendto() takes it, 100,000 datagrams.
        const int OwnDatagrams = 100_000;
        int sender = stack.UdpOpen();
        var payload = new byte[1200];
        long sent = 0, noBuffer = 0, fewestFree = long.MaxValue;
        var other = new Dictionary<int, int>();
        var clock = Stopwatch.StartNew();
        clients.Pump(Deadline, () => $"{StackDump.Vnic(stack.Vnic)}; UDP sent {sent}, ENOBUFS {noBuffer}", () =>
        {
            for (int k = 0; k < 32 && sent + noBuffer < OwnDatagrams; k++)
            {
                int rc = stack.UdpSendTo(sender, payload, sink);
                if (rc == payload.Length)
                    sent++;
                else if (rc == -(int)Errno.ENOBUFS)
                    noBuffer++;
                else
                    other[rc] = other.GetValueOrDefault(rc) + 1;
            }
            fewestFree = Math.Min(fewestFree, stack.Vnic.Buffers.Available);
        });
        var moved = clock.Elapsed;
        flooding.Wait();
        Assert.That(clients.Damaged(), Is.Empty, "the TCP streams");
        Assert.That(server.Errors, Is.Empty);
        Assert.That(other, Is.Empty, "sendto() gave only the length or ENOBUFS");
        // The queues stopped taking buffers while an eighth of the pool was left (sending may still empty it: that
        // is sendto()'s ENOBUFS).
        Assert.That(stack.Counters.Drop(DropReason.PacketBuffersLow), Is.GreaterThan(0), "the hoarders met the pool's reserve");

        // What the hoarders hold is whole, each datagram once, on its own port (UDP promises no order, and the
        // kernel's veth may reorder under back-pressure).
        long queued = 0;
        var buffer = new byte[2048];
        var seen = new HashSet<uint>();
        foreach (int h in hoarders)
        {
            int r;
            while ((r = stack.UdpReceiveFrom(h, buffer, out _)) > 0)
            {
                Assert.That(r, Is.EqualTo(1000));
                uint n = System.Buffers.Binary.BinaryPrimitives.ReadUInt32BigEndian(buffer);
                Assert.That(seen.Add(n), Is.True, $"datagram {n} once");
                Assert.That(n % Hoarders, Is.EqualTo((uint)(h - hoarders[0])), "on its own port");
                queued++;
            }
            Assert.That(r, Is.EqualTo(-(int)Errno.EAGAIN));
            Assert.That(stack.UdpClose(h), Is.Zero);
        }
        Assert.That(stack.UdpClose(sender), Is.Zero);
        foreach (var s in clients.Streams)
            Assert.That(stack.TcpClose(s.Socket), Is.Zero);

        // Load gone: every buffer back, and the stack serves as before.
        KernelPeer.Drive(stack, () => stack.Vnic.Buffers.Available >= baselineBuffers, TimeSpan.FromSeconds(10),
            () => $"every packet buffer back ({baselineBuffers - stack.Vnic.Buffers.Available} out); {StackDump.Vnic(stack.Vnic)}");
        var after = new StackEchoClients(stack);
        int fresh = stack.TcpOpen();
        Assert.That(stack.TcpConnect(fresh, kernel), Is.EqualTo(-(int)Errno.EINPROGRESS));
        after.Add(fresh, TestData.Random(9999, 100_000));
        after.Pump(Deadline, () => "the echo after the load");
        Assert.That(after.Damaged(), Is.Empty);
        TestContext.Out.WriteLine($"4 TCP echoes of {clients.Bytes} bytes with {Buffers} packet buffers and {ring}-slot rings intact in " +
            $"{moved.TotalSeconds:0.0} s while this stack sent {sent} UDP datagrams (ENOBUFS {noBuffer} times) and {Hoarders} " +
            $"sockets that never read were flooded with {FloodDatagrams} datagrams (they held {queued}; " +
            $"{stack.Counters.Drop(DropReason.PacketBuffersLow)} dropped to keep the pool's reserve, UdpRcvbufErrors " +
            $"{stack.Counters.UdpRcvbufErrors}); fewest free buffers {fewestFree}; TcpRetransSegs {stack.Counters.TcpRetransSegs}; " +
            $"{StackDump.Vnic(stack.Vnic)}; every buffer back after, a new echo intact");
    }
}
