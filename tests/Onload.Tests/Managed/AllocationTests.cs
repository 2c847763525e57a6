using System.Net;
using NUnit.Framework;
using Onload.Sockets;

namespace Onload.Tests.Managed;

/// <summary>
/// Steady-state ping-pong allocates no more per message over the Onload stack than over kernel sockets through
/// Pipelines.Sockets.Unofficial, and the stack thread allocates nothing at all. Allocation is counted over every
/// thread of the process (GC.GetTotalAllocatedBytes(precise: true)), so what Pipelines, the thread pool and the
/// socket engine allocate for the kernel transport is in its figure, as what Pipelines allocates is in Onload's.
/// </summary>
[NonParallelizable]
public sealed class AllocationTests
{
    private const int Warmup = 2000;
    private const int Messages = 5000;
    private const int Rounds = 3;
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(60);

    [Test]
    public async Task Tcp_ping_pong_allocates_no_more_per_message_over_onload_than_over_kernel_sockets()
    {
        var kernel = await TcpPingPong(TransportPair.Kernel);
        var onload = await TcpPingPong(TransportPair.Onload);
        Report("TCP 64 B", kernel, onload);
        Assert.That(onload.StackThread, Is.LessThan(1.0), "bytes per message allocated by the stack thread");
        Assert.That(onload.PerMessage, Is.LessThanOrEqualTo(kernel.PerMessage + 1.0), "bytes per message, all threads");
    }

    [Test]
    public async Task Udp_ping_pong_allocates_no_more_per_datagram_over_onload_than_over_kernel_sockets()
    {
        var kernel = await UdpPingPong(TransportPair.Kernel);
        var onload = await UdpPingPong(TransportPair.Onload);
        Report("UDP 64 B", kernel, onload);
        Assert.That(onload.StackThread, Is.LessThan(1.0), "bytes per datagram allocated by the stack thread");
        Assert.That(onload.PerMessage, Is.LessThanOrEqualTo(kernel.PerMessage + 1.0), "bytes per datagram, all threads");
    }

    private readonly record struct Figures(double PerMessage, double StackThread, double MicrosecondsPerRoundTrip);

    private static void Report(string what, Figures kernel, Figures onload) =>
        TestContext.Out.WriteLine($"{what}: kernel {kernel.PerMessage:0.##} B/message, {kernel.MicrosecondsPerRoundTrip:0.#} µs/round trip; " +
            $"onload {onload.PerMessage:0.##} B/message (stack thread {onload.StackThread:0.##}), {onload.MicrosecondsPerRoundTrip:0.#} µs/round trip");

    private static async Task<Figures> TcpPingPong(string kind)
    {
        await using var t = TransportPair.Create(kind);
        t.StartPeerServer("tcp", 9420, "socat", "-b", "4096", "TCP-LISTEN:9420,reuseaddr", "PIPE");
        using var timeout = new CancellationTokenSource(Deadline);
        await using var c = await t.Transport.ConnectAsync(t.PeerEndPoint(9420), timeout.Token);
        var message = new byte[64];

        async Task RoundTrips(int count)
        {
            for (int i = 0; i < count; i++)
            {
                message[0] = (byte)i;
                await c.Output.WriteAsync(message, timeout.Token);
                long got = 0;
                while (got < message.Length)
                {
                    var result = await c.Input.ReadAsync(timeout.Token);
                    got += result.Buffer.Length;
                    c.Input.AdvanceTo(result.Buffer.End);
                    if (result.IsCompleted)
                        throw new InvalidOperationException("the echo ended");
                }
            }
        }

        return await Measure(t, () => RoundTrips(Warmup), () => RoundTrips(Messages));
    }

    private static async Task<Figures> UdpPingPong(string kind)
    {
        await using var t = TransportPair.Create(kind);
        t.StartPeerServer("udp", 9421, "python3", "-c", PeerScripts.UdpEcho, "9421");
        using var timeout = new CancellationTokenSource(Deadline);
        await using var u = await t.Transport.BindUdpAsync(new IPEndPoint(IPAddress.Any, 0), timeout.Token);
        var peer = t.PeerEndPoint(9421);
        var message = new byte[64];
        var buffer = new byte[2048];

        async Task RoundTrips(int count)
        {
            for (int i = 0; i < count; i++)
            {
                message[0] = (byte)i;
                await u.SendToAsync(message, peer, timeout.Token);
                var received = await u.ReceiveFromAsync(buffer, timeout.Token);
                if (received.Length != message.Length || buffer[0] != message[0])
                    throw new InvalidOperationException($"datagram {i}: {received.Length} bytes, first {buffer[0]}");
            }
        }

        return await Measure(t, () => RoundTrips(Warmup), () => RoundTrips(Messages));
    }

    private static async Task<Figures> Measure(TransportPair t, Func<Task> warmup, Func<Task> measured)
    {
        await warmup();
        // The steady state is the least of a few rounds: the first can still carry the JIT's tiering and the
        // thread pool's growth, which are not per message.
        var best = new Figures(double.MaxValue, double.MaxValue, double.MaxValue);
        using var sampler = new AllocationSampler();
        for (int round = 0; round < Rounds; round++)
        {
            long stackBefore = t.Stack is null ? 0 : await t.Stack.InspectAsync(_ => GC.GetAllocatedBytesForCurrentThread());
            long before = GC.GetTotalAllocatedBytes(precise: true);
            var clock = System.Diagnostics.Stopwatch.StartNew();
            await measured();
            double micros = clock.Elapsed.TotalMicroseconds / Messages;
            long after = GC.GetTotalAllocatedBytes(precise: true);
            long stackAfter = t.Stack is null ? 0 : await t.Stack.InspectAsync(_ => GC.GetAllocatedBytesForCurrentThread());
            best = new Figures(Math.Min(best.PerMessage, (after - before) / (double)Messages),
                Math.Min(best.StackThread, (stackAfter - stackBefore) / (double)Messages), Math.Min(best.MicrosecondsPerRoundTrip, micros));
        }
        TestContext.Out.WriteLine($"{t.Kind}: allocations sampled: {sampler.Summary}");
        return best;
    }
}
