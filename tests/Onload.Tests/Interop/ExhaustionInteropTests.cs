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
}
