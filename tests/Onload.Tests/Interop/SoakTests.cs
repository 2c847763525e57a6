using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using Onload.Stack;
using Onload.Stack.Wire;

namespace Onload.Tests.Interop;

/// <summary>
/// The soak (issue 10): mixed traffic through a router that drops packets at random both ways, for
/// ONLOAD_SOAK_SECONDS (20 in the test run; <c>perf/soak.sh</c> runs an hour, outside CI). Rounds of TCP connections
/// of every size from a few bytes to half a megabyte, each echoed by the kernel and checked byte for byte, beside
/// UDP requests whose answers are checked; after every round every row and packet buffer is back, and the process's
/// memory after the last round is no more than after the first.
/// </summary>
[TestFixture("af_xdp")]
[Category("netns")]
[Category("hostile")]
[NonParallelizable]
public class SoakTests(string kind)
{
    private const int LossPercent = 2;
    private const ushort TcpPort = 9520, UdpPort = 9521;
    private const int ConnectionsPerRound = 40;
    private const int WarmUpRounds = 4;
    private const long MemorySlack = 48L << 20;

    private static int Seconds =>
        int.TryParse(Environment.GetEnvironmentVariable("ONLOAD_SOAK_SECONDS"), NumberStyles.None, CultureInfo.InvariantCulture, out int s) && s > 0 ? s : 20;

    private static long ResidentBytes() =>
        long.Parse(File.ReadLines("/proc/self/status").First(l => l.StartsWith("VmRSS:", StringComparison.Ordinal))
            .Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture) * 1024;

    [Test]
    public void Mixed_traffic_through_loss_loses_no_byte_and_leaks_nothing()
    {
        using var peer = KernelPeer.ThroughLossyPath(kind, LossPercent);
        using var tcpServer = new KernelTcpServer(peer.KernelNs, peer.KernelAddress, TcpPort, KernelTcpServer.Echo);
        using var udpServer = peer.KernelNs.Run(() =>
        {
            var s = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
            s.Bind(new IPEndPoint(IPAddress.Parse(peer.KernelAddress), UdpPort));
            return s;
        });
        var udpEcho = Task.Run(() =>
        {
            var buffer = new byte[65536];
            EndPoint from = new IPEndPoint(IPAddress.Any, 0);
            try
            {
                while (true)
                {
                    int n = udpServer.ReceiveFrom(buffer, ref from);
                    udpServer.SendTo(buffer.AsSpan(0, n), from);
                }
            }
            catch (Exception e) when (e is SocketException or ObjectDisposedException)
            {
            }
        });
        var stack = peer.OpenStack(o => o with { TcpConnections = 2 * ConnectionsPerRound, TcpMslNs = 100_000_000 });
        int baselineRows = stack.TcpConnections.Open;
        // Taken as the stack opened, with the fill ring full: later it may be short a batch, never over.
        int baselineBuffers = stack.Vnic.Buffers.Available;
        var tcpServerEnd = new Ipv4Endpoint(Ipv4Address.Parse(peer.KernelAddress), TcpPort);
        var udpServerEnd = new Ipv4Endpoint(Ipv4Address.Parse(peer.KernelAddress), UdpPort);
        int udp = stack.UdpOpen();
        Assert.That(udp, Is.GreaterThanOrEqualTo(0));
        var random = new Random(10);
        var request = new byte[1400];
        var reply = new byte[2048];
        long udpSent = 0, udpAnswered = 0, tcpBytes = 0, connections = 0;
        int rounds = 0;
        long firstRoundResident = 0;
        var clock = Stopwatch.StartNew();

        while (clock.Elapsed.TotalSeconds < Seconds || rounds <= WarmUpRounds)
        {
            var clients = new StackEchoClients(stack);
            for (int i = 0; i < ConnectionsPerRound; i++)
            {
                int c = stack.TcpOpen();
                Assert.That(c, Is.GreaterThanOrEqualTo(0), $"round {rounds}: socket {i}");
                Assert.That(stack.TcpConnect(c, tcpServerEnd), Is.EqualTo(-(int)Errno.EINPROGRESS));
                // Sizes spread over four orders of magnitude: a few bytes, a segment, a window, half a megabyte.
                int size = (int)Math.Pow(10, 1 + 4.7 * random.NextDouble());
                clients.Add(c, TestData.Random(rounds * ConnectionsPerRound + i, size));
            }
            // UDP alongside: a numbered request now and then, its answer checked when it comes (or lost, as UDP may).
            clients.Pump(TimeSpan.FromSeconds(120), () => $"round {rounds}; {StackDump.Vnic(stack.Vnic)}", () =>
            {
                if (udpSent - udpAnswered < 16)
                {
                    BitConverter.TryWriteBytes(request, udpSent);
                    request.AsSpan(8).Fill((byte)udpSent);
                    int rc = stack.UdpSendTo(udp, request.AsSpan(0, 8 + (int)(udpSent % 1392)), udpServerEnd);
                    Assert.That(rc, Is.GreaterThan(0).Or.EqualTo(-(int)Errno.ENOBUFS), "UDP send");
                    if (rc > 0)
                        udpSent++;
                }
                int r;
                while ((r = stack.UdpReceiveFrom(udp, reply, out _)) > 0)
                {
                    long n = BitConverter.ToInt64(reply, 0);
                    Assert.That(r, Is.EqualTo(8 + (int)(n % 1392)), $"datagram {n}'s length");
                    Assert.That(reply.AsSpan(8, r - 8).IndexOfAnyExcept((byte)n), Is.EqualTo(-1), $"datagram {n}'s bytes");
                    udpAnswered++;
                }
                // A lost request or answer is not waited for: the next ones go.
                if (udpSent - udpAnswered >= 16)
                    udpAnswered = udpSent - 8;
            });
            Assert.That(clients.Damaged(), Is.Empty, $"round {rounds}");
            tcpBytes += clients.Bytes;
            connections += ConnectionsPerRound;
            foreach (var s in clients.Streams)
                Assert.That(stack.TcpClose(s.Socket), Is.Zero);
            KernelPeer.Drive(stack, () => stack.TcpConnections.Open == baselineRows, TimeSpan.FromSeconds(30),
                () => $"round {rounds}: every row freed ({stack.TcpConnections.Open - baselineRows} left)");
            // Answers still on their way hold buffers in the UDP socket's queue until read.
            bool Drained()
            {
                while (stack.UdpReceiveFrom(udp, reply, out _) > 0)
                    udpAnswered++;
                return stack.Vnic.Buffers.Available >= baselineBuffers;
            }
            KernelPeer.Drive(stack, Drained, TimeSpan.FromSeconds(10),
                () => $"round {rounds}: every packet buffer back ({baselineBuffers - stack.Vnic.Buffers.Available} out)");
            rounds++;
            // Memory after the warm-up rounds (the JIT's tiers, the GC's and thread pool's first growth, every row's
            // first ring extents touched once) is the mark the end is held to.
            if (rounds == WarmUpRounds)
            {
                GC.Collect();
                firstRoundResident = ResidentBytes();
            }
            if (Environment.GetEnvironmentVariable("ONLOAD_SOAK_TRACE") is not null)
            {
                GC.Collect();
                TestContext.Out.WriteLine($"round {rounds}: resident {ResidentBytes() >> 20} MiB, GC heap {GC.GetTotalMemory(true) >> 20} MiB, " +
                    $"TCP rings {stack.TcpConnections.ArenaResidentBytes() >> 20} MiB");
            }
        }
        GC.Collect();
        long lastResident = ResidentBytes();
        // The rings never hold more than each row's first extents and records once its connection is gone.
        Assert.That(stack.TcpConnections.ArenaResidentBytes(), Is.LessThanOrEqualTo(stack.TcpConnections.Capacity * stack.TcpConnections.MostKeptPerRow),
            "TCP ring memory with every connection closed");
        Assert.That(tcpServer.Errors, Is.Empty);
        Assert.That(udpAnswered, Is.GreaterThan(0));
        Assert.That(lastResident, Is.LessThanOrEqualTo(firstRoundResident + MemorySlack),
            $"resident memory after round {WarmUpRounds} {firstRoundResident >> 20} MiB, after round {rounds} {lastResident >> 20} MiB");
        var (toKernel, toStack) = peer.LossyPath.Dropped();
        TestContext.Out.WriteLine($"{clock.Elapsed.TotalSeconds:0} s through {LossPercent}% loss each way: {rounds} rounds, " +
            $"{connections} TCP connections echoing {tcpBytes} bytes intact, {udpSent} UDP requests ({udpAnswered} answers checked); " +
            $"router dropped {toKernel} packets to the kernel and {toStack} to the stack; TcpRetransSegs " +
            $"{stack.Counters.TcpRetransSegs}; every row and buffer back after each round; resident memory " +
            $"{firstRoundResident >> 20} MiB after round {WarmUpRounds}, {lastResident >> 20} MiB at the end");
        udpServer.Dispose();
        udpEcho.Wait(TimeSpan.FromSeconds(5));
    }
}
