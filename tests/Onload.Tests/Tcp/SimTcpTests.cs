using System.Security.Cryptography;
using Onload.Stack;
using Onload.Stack.Tcp;
using Onload.Stack.Wire;
using Onload.Tests.Sim;
using Onload.Vnic.Sim;

namespace Onload.Tests.Tcp;

/// <summary>TCP between two stacks over the simulated link: handshake, bulk both ways, close, under faults.</summary>
[TestFixture]
public class SimTcpTests
{
    private const long Ms = 1_000_000;

    /// <summary>Connects A (client) to B (server on port 80); returns (client, accepted).</summary>
    internal static (int Client, int Server) Connect(SimPair pair)
    {
        int l = pair.B.TcpOpen();
        Assert.That(pair.B.TcpBind(l, new(Ipv4Address.Any, 80)), Is.Zero);
        Assert.That(pair.B.TcpListen(l, 16), Is.Zero);
        int c = pair.A.TcpOpen();
        Assert.That(pair.A.TcpConnect(c, new(SimPair.AddressB.Address, 80)), Is.EqualTo(-(int)Errno.EINPROGRESS));
        int s = -1;
        for (int i = 0; i < 10_000 && (s < 0 || !pair.A.TcpIsConnected(c)); i++)
        {
            pair.RunFor(Ms);
            if (s < 0)
                s = pair.B.TcpAccept(l, out _);
        }
        Assert.That(pair.A.TcpIsConnected(c), Is.True, "handshake");
        Assert.That(s, Is.GreaterThanOrEqualTo(0), "accepted");
        return (c, s);
    }

    /// <summary>Moves <paramref name="data"/> from one end to the other and returns what arrived, until EOF
    /// after the sender shuts down (or the deadline in virtual time).</summary>
    private static byte[] Transfer(SimPair pair, NetStack from, int fromSocket, NetStack to, int toSocket, byte[] data, long deadlineNs)
    {
        var received = new MemoryStream();
        var buf = new byte[65536];
        int sent = 0;
        bool shut = false;
        long end = pair.Clock.NowNanoseconds + deadlineNs;
        while (pair.Clock.NowNanoseconds < end)
        {
            if (sent < data.Length)
            {
                int n = from.TcpSend(fromSocket, data.AsSpan(sent));
                if (n > 0)
                    sent += n;
                else
                    Assert.That(n, Is.EqualTo(-(int)Errno.EAGAIN), "send");
            }
            else if (!shut)
            {
                Assert.That(from.TcpShutdown(fromSocket, read: false, write: true), Is.Zero);
                shut = true;
            }
            pair.RunFor(Ms / 10);
            int r;
            while ((r = to.TcpReceive(toSocket, buf)) > 0)
                received.Write(buf, 0, r);
            if (r == 0)
                return received.ToArray();
            Assert.That(r, Is.EqualTo(-(int)Errno.EAGAIN), "receive");
        }
        Assert.Fail($"transfer did not finish: sent {sent} of {data.Length}, received {received.Length}; " +
            $"sender {StackDump.Connection(from, fromSocket)}; {StackDump.TcpCounters(from)}; " +
            $"receiver {StackDump.Connection(to, toSocket)}; {StackDump.TcpCounters(to)}");
        return [];
    }

    [Test]
    public void Handshake_bulk_both_ways_and_orderly_close()
    {
        using var pair = new SimPair(seed: 30);
        var (c, s) = Connect(pair);
        var up = TestData.Random(1, 2_000_000);
        var down = TestData.Random(2, 1_500_000);
        Assert.That(SHA256.HashData(Transfer(pair, pair.A, c, pair.B, s, up, 60_000 * Ms)), Is.EqualTo(SHA256.HashData(up)));
        Assert.That(pair.A.TcpStateOf(c), Is.EqualTo(TcpState.FinWait2));
        Assert.That(pair.B.TcpStateOf(s), Is.EqualTo(TcpState.CloseWait));
        Assert.That(SHA256.HashData(Transfer(pair, pair.B, s, pair.A, c, down, 60_000 * Ms)), Is.EqualTo(SHA256.HashData(down)));
        Assert.That(pair.A.TcpStateOf(c), Is.EqualTo(TcpState.TimeWait));
        Assert.That(pair.B.TcpStateOf(s), Is.EqualTo(TcpState.Closed));
        Assert.That(pair.A.TcpClose(c), Is.Zero);
        Assert.That(pair.B.TcpClose(s), Is.Zero);
        pair.RunFor(61_000 * Ms);
        Assert.That(pair.A.TcpConnections.Open, Is.Zero, "TIME_WAIT ends after 2MSL");
        Assert.That(pair.B.TcpConnections.Open, Is.EqualTo(1), "only the listener is left");
        Assert.That(pair.A.Counters.TcpRetransSegs + pair.B.Counters.TcpRetransSegs, Is.Zero, "a clean link needs no retransmission: " +
            $"A {StackDump.TcpCounters(pair.A)}; B {StackDump.TcpCounters(pair.B)}");
    }

    [TestCase(40UL, 0.05)]
    [TestCase(41UL, 0.10)]
    [TestCase(42UL, 0.20)]
    public void Bulk_transfer_survives_loss_duplication_reordering_and_corruption(ulong seed, double loss)
    {
        var faults = new LinkFaults { Loss = loss, Duplicate = 0.02, Reorder = 0.05, Corrupt = 0.02, MinDelayNs = 50_000, MaxDelayNs = 500_000 };
        using var pair = new SimPair(seed, faults, faults);
        var (c, s) = Connect(pair);
        var up = TestData.Random((int)seed, 300_000);
        var got = Transfer(pair, pair.A, c, pair.B, s, up, 600_000 * Ms);
        Assert.That(got.Length, Is.EqualTo(up.Length));
        Assert.That(SHA256.HashData(got), Is.EqualTo(SHA256.HashData(up)));
        Assert.That(pair.A.Counters.TcpRetransSegs, Is.GreaterThan(0));
        Assert.That(pair.A.TcpConnections[c].TotalRetrans, Is.EqualTo(pair.A.Counters.TcpRetransSegs),
            "A's one connection counts every segment its stack sent again (what onload-stackdump shows)");
    }

    /// <summary>The sweep: each seed its own mix of loss (up to 30%), duplication, reordering, corruption and delay.</summary>
    public static IEnumerable<TestCaseData> Seeds() =>
        Enumerable.Range(100, 24).Select(seed => new TestCaseData((ulong)seed).SetName($"Seed sweep: seed {seed}"));

    [TestCaseSource(nameof(Seeds))]
    public void Seed_sweep_every_transfer_is_intact_or_fails_as_linux_would(ulong seed)
    {
        var result = SimTransfer.Run(seed, new SimTransfer.Options { Bytes = 100_000 });
        Assert.That(result.Acceptable, Is.True, result.ToString());
    }

    [Test]
    public void Connections_to_one_server_take_the_ephemeral_ports_in_turn()
    {
        // RFC 6056 algorithm 3: a port comes back to the same server only after the others, so the server's
        // TIME_WAIT for the last use is long gone (a random pick soon repeats one, and that connect stalls).
        using var pair = new SimPair(5);
        int l = pair.B.TcpOpen();
        Assert.That(pair.B.TcpBind(l, new(Ipv4Address.Any, 80)), Is.Zero);
        Assert.That(pair.B.TcpListen(l, 64), Is.Zero);
        var ports = new List<int>();
        for (int i = 0; i < 40; i++)
        {
            int c = pair.A.TcpOpen();
            Assert.That(pair.A.TcpConnect(c, new(SimPair.AddressB.Address, 80)), Is.EqualTo(-(int)Errno.EINPROGRESS));
            ports.Add(pair.A.TcpLocalEndpoint(c).Port);
            Assert.That(pair.A.TcpClose(c), Is.Zero); // the port is free again at once
        }
        int first = pair.A.Options.EphemeralPortFirst, range = pair.A.Options.EphemeralPortLast - first + 1;
        for (int i = 1; i < ports.Count; i++)
            Assert.That(ports[i] - first, Is.EqualTo((ports[i - 1] - first + 1) % range), $"connection {i}: {string.Join(' ', ports)}");
    }

    [Test]
    public void Connect_to_a_closed_port_is_refused()
    {
        using var pair = new SimPair(seed: 31);
        int c = pair.A.TcpOpen();
        Assert.That(pair.A.TcpConnect(c, new(SimPair.AddressB.Address, 81)), Is.EqualTo(-(int)Errno.EINPROGRESS));
        pair.RunFor(100 * Ms);
        Assert.That(pair.A.TcpTakeError(c), Is.EqualTo((int)Errno.ECONNREFUSED));
        Assert.That(pair.A.TcpStateOf(c), Is.EqualTo(TcpState.Closed));
        Assert.That(pair.B.Counters.TcpOutRsts, Is.EqualTo(1));
    }

    [Test]
    public void Close_with_unread_data_resets_the_peer()
    {
        using var pair = new SimPair(seed: 32);
        var (c, s) = Connect(pair);
        Assert.That(pair.A.TcpSend(c, "unread"u8), Is.EqualTo(6));
        pair.RunFor(100 * Ms);
        Assert.That(pair.B.TcpClose(s), Is.Zero);
        pair.RunFor(100 * Ms);
        Assert.That(pair.A.TcpReceive(c, new byte[16]), Is.EqualTo(-(int)Errno.ECONNRESET));
        Assert.That(pair.A.TcpSend(c, "more"u8), Is.EqualTo(-(int)Errno.EPIPE));
    }
}
