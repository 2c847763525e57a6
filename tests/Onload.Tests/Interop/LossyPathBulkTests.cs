using System.Diagnostics;
using System.Net.Sockets;
using System.Security.Cryptography;
using Onload.Stack;
using Onload.Stack.Wire;
using Onload.Vnic;

namespace Onload.Tests.Interop;

/// <summary>
/// Bulk TCP between an in-process stack and the kernel through a router that drops 5% of the packets at random
/// each way (<see cref="LossyPath"/>): every byte arrives, checked by SHA-256 at both ends, with SACK negotiated;
/// and the stack's SACK saves the kernel retransmissions.
/// </summary>
[TestFixture("af_xdp")]
[Category("netns")]
[NonParallelizable]
public class LossyPathBulkTests(string kind)
{
    private const int LossPercent = 5;
    private const ushort Port = 9500;
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(120);

    // Measured on a 2-core VM: the kernel sends at 60-85 MB/s through this loss, the stack (with PRR) at about
    // 3-4 MB/s (100 MB in 32-36 s): the kernel receiver compresses its SACKs, and a lost cumulative ACK at the end of a small flight
    // still costs the stack an RTO now and then. Both directions carry 100 MB.
    private const int KernelToStackBytes = 100_000_000;
    private const int StackToKernelBytes = 100_000_000;

    // Without SACK the kernel resends whole windows after a timeout: 5 MB gave 900-1800 retransmitted segments
    // without SACK against 160-230 with it (12 runs each; at 2 MB, 220-1050 against 60-100).
    private const int SackComparisonBytes = 5_000_000;

    [Test]
    public void Stack_sends_a_hundred_megabytes_to_the_kernel_through_five_percent_loss_each_way_with_sack()
    {
        using var peer = KernelPeer.ThroughLossyPath(kind, LossPercent);
        var data = TestData.Random(7, StackToKernelBytes);
        var kernelHash = new TaskCompletionSource<(long Length, byte[] Hash)>(TaskCreationOptions.RunContinuationsAsynchronously);
        using var server = new KernelTcpServer(peer.KernelNs, peer.KernelAddress, Port, async s =>
        {
            using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
            var buffer = new byte[65536];
            long length = 0;
            int n;
            while ((n = await s.ReceiveAsync(buffer, SocketFlags.None).ConfigureAwait(false)) > 0)
            {
                hash.AppendData(buffer, 0, n);
                length += n;
            }
            kernelHash.SetResult((length, hash.GetHashAndReset()));
            s.Shutdown(SocketShutdown.Send);
        });
        var stack = peer.OpenStack();
        int c = Connect(peer, stack);
        var clock = Stopwatch.StartNew();

        int sent = 0;
        Drive(stack, () =>
        {
            int n = stack.TcpSend(c, data.AsSpan(sent));
            if (n > 0)
                sent += n;
            return sent == data.Length;
        }, () => $"the stack to take all {data.Length} bytes (took {sent}); {StackDump.Connection(stack, c)}");
        Assert.That(stack.TcpShutdown(c, read: false, write: true), Is.Zero);
        Drive(stack, () => kernelHash.Task.IsCompleted,
            () => $"the kernel to read to the end; {StackDump.Connection(stack, c)}; {StackDump.TcpCounters(stack)}");
        clock.Stop();

        var (length, hash) = kernelHash.Task.Result;
        Assert.That(length, Is.EqualTo(data.Length));
        Assert.That(hash, Is.EqualTo(SHA256.HashData(data)));
        Report(peer, stack, "stack -> kernel", data.Length, clock.Elapsed);
        Assert.That(stack.Counters.TcpRetransSegs, Is.GreaterThan(0), "the stack had to retransmit");
    }

    [Test]
    public void Kernel_sends_a_hundred_megabytes_to_the_stack_through_five_percent_loss_each_way_with_sack()
    {
        using var peer = KernelPeer.ThroughLossyPath(kind, LossPercent);
        var data = TestData.Random(8, KernelToStackBytes);
        var (received, hash, elapsed, stack) = KernelSendsToStack(peer, data, sack: true);

        Assert.That(received, Is.EqualTo(data.Length));
        Assert.That(hash, Is.EqualTo(SHA256.HashData(data)));
        Report(peer, stack, "kernel -> stack", data.Length, elapsed);
        Assert.That(stack.Counters.TcpExtTCPOFOQueue, Is.GreaterThan(0), "the stack queued out-of-order data");
    }

    [Test]
    public void With_sack_the_kernel_retransmits_fewer_segments_through_the_same_loss()
    {
        var data = TestData.Random(9, SackComparisonBytes);
        long with = KernelRetransmits(data, sack: true);
        long without = KernelRetransmits(data, sack: false);
        TestContext.Out.WriteLine($"kernel TcpRetransSegs: with SACK {with}, without {without}");
        Assert.That(with, Is.GreaterThan(0), "the kernel had losses to repair");
        Assert.That(with, Is.LessThan(without), "the stack's SACK blocks spare the kernel retransmissions");
    }

    /// <summary>The kernel's retransmitted segments (its namespace's TcpRetransSegs) while it sends
    /// <paramref name="data"/> to a fresh stack through a fresh lossy path.</summary>
    private long KernelRetransmits(byte[] data, bool sack)
    {
        using var peer = KernelPeer.ThroughLossyPath(kind, LossPercent);
        long before = peer.KernelCounter("TcpRetransSegs");
        var (received, hash, elapsed, stack) = KernelSendsToStack(peer, data, sack);
        Assert.That(received, Is.EqualTo(data.Length));
        Assert.That(hash, Is.EqualTo(SHA256.HashData(data)));
        long after = peer.KernelCounter("TcpRetransSegs");
        Report(peer, stack, sack ? "kernel -> stack, SACK" : "kernel -> stack, no SACK", data.Length, elapsed);
        return after - before;
    }

    /// <summary>The kernel sends <paramref name="data"/> to an in-process stack that connects to it and reads to the
    /// end of the stream, hashing as it goes; the stack's SACK on or off.</summary>
    private static (long Received, byte[] Hash, TimeSpan Elapsed, NetStack Stack) KernelSendsToStack(KernelPeer peer, byte[] data, bool sack)
    {
        using var server = new KernelTcpServer(peer.KernelNs, peer.KernelAddress, Port, async s =>
        {
            await s.SendAsync(data, SocketFlags.None).ConfigureAwait(false);
            s.Shutdown(SocketShutdown.Send);
            // Until the stack's FIN: every byte acknowledged by then, the kernel's retransmissions all counted.
            while (await s.ReceiveAsync(new byte[1], SocketFlags.None).ConfigureAwait(false) > 0)
            {
            }
        });
        var stack = peer.OpenStack(o => o with { TcpSack = sack });
        int c = Connect(peer, stack, sack);
        var clock = Stopwatch.StartNew();

        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        var buffer = new byte[65536];
        long received = 0;
        int r = 0;
        Drive(stack, () =>
        {
            while ((r = stack.TcpReceive(c, buffer)) > 0)
            {
                hash.AppendData(buffer, 0, r);
                received += r;
            }
            Assert.That(r, Is.EqualTo(0).Or.EqualTo(-(int)Errno.EAGAIN), "TcpReceive");
            return r == 0;
        }, () => $"the end of the kernel's stream (received {received}); {StackDump.Connection(stack, c)}; {StackDump.TcpCounters(stack)}");
        clock.Stop();
        Assert.That(stack.TcpClose(c), Is.Zero);
        Drive(stack, () => server.Served == 1, () => $"the kernel to see the stack's FIN; {StackDump.Connection(stack, c)}");
        return (received, hash.GetHashAndReset(), clock.Elapsed, stack);
    }

    /// <summary>Connects the stack to the kernel server and checks SACK was negotiated as asked.</summary>
    private static int Connect(KernelPeer peer, NetStack stack, bool sack = true)
    {
        int c = stack.TcpOpen();
        Assert.That(stack.TcpConnect(c, new Ipv4Endpoint(Ipv4Address.Parse(peer.KernelAddress), Port)), Is.EqualTo(-(int)Errno.EINPROGRESS));
        Drive(stack, () => stack.TcpIsConnected(c), () => "connected; " + StackDump.Connection(stack, c));
        Assert.That(stack.TcpConnections[c].SackPermitted, Is.EqualTo(sack), "SACK negotiated");
        return c;
    }

    /// <summary><see cref="KernelPeer.Drive"/> with this fixture's <see cref="Deadline"/>.</summary>
    private static void Drive(NetStack stack, Func<bool> condition, Func<string> what) =>
        KernelPeer.Drive(stack, condition, Deadline, what);

    private static void Report(KernelPeer peer, NetStack stack, string direction, long bytes, TimeSpan elapsed)
    {
        var (toKernel, toStack) = peer.LossyPath.Dropped();
        TestContext.Out.WriteLine($"{direction}: {bytes / 1e6:0.#} MB in {elapsed.TotalSeconds:0.00} s = " +
            $"{bytes / 1e6 / elapsed.TotalSeconds:0.0} MB/s; router dropped {toKernel} to the kernel, {toStack} to the stack; " +
            $"stack retrans {stack.Counters.TcpRetransSegs} ofo {stack.Counters.TcpExtTCPOFOQueue}; " +
            $"kernel TcpRetransSegs {peer.KernelCounter("TcpRetransSegs")}; stack {StackDump.TcpCounters(stack)}");
    }
}
