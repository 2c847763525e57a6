using Onload.Stack;
using Onload.Stack.Wire;
using Onload.Tests.Sim;
using static Onload.Tests.Tcp.TcpScript;

namespace Onload.Tests.Tcp;

/// <summary>
/// Buffer sizing as Linux does it: the receive window auto-tuned to what the application reads per round trip
/// (tcp_rcv_space_adjust), SO_RCVBUF pinning it, and the send buffer grown with cwnd (tcp_sndbuf_expand).
/// </summary>
[TestFixture]
public class TcpBufferTuningTests
{
    private const int Segment = 1448; // MSS 1460 less the timestamp option
    private const long Rtt = 2 * Ms;

    /// <summary>
    /// A peer that sends like a sender in slow start (its cwnd doubles each round, from 10 segments) but never past
    /// the window the stack offers; each round trip the application reads <paramref name="readPerRound"/> bytes (or
    /// everything). Returns the largest window offered, in bytes.
    /// </summary>
    private static long Stream(Conn c, int rounds, int readPerRound, int shift = 7)
    {
        var payload = new byte[Segment];
        var buf = new byte[1 << 20];
        long cwnd = 10 * Segment;
        uint rightEdge = c.PeerSeq + ushort.MaxValue; // the SYN-ACK's window, never scaled
        long largest = 0;
        for (int round = 0; round < rounds; round++)
        {
            var acks = new List<Seg>();
            for (long sent = 0; sent + Segment <= cwnd && Seq.Le(c.PeerSeq + Segment, rightEdge); sent += Segment)
            {
                c.Peer.Inject(c.Peer.TcpFrame(PeerPort, Port, c.PeerSeq, c.StackSeq, Ack, c.Window, c.Options(), payload), advanceNs: 1_000);
                c.PeerSeq += Segment;
                acks.AddRange(c.Received(advanceNs: 1_000));
            }
            acks.AddRange(c.Received(advanceNs: Rtt));
            int toRead = readPerRound;
            int r;
            while (toRead > 0 && (r = c.Stack.TcpReceive(c.Socket, buf.AsSpan(0, Math.Min(buf.Length, toRead)))) > 0)
                toRead -= r;
            acks.AddRange(c.Received(advanceNs: 1_000));
            foreach (var a in acks.Where(a => (a.Flags & Ack) != 0))
            {
                long offered = (long)a.Window << shift;
                largest = Math.Max(largest, offered);
                rightEdge = Seq.Max(rightEdge, a.AckNo + (uint)offered);
            }
            cwnd *= 2;
        }
        return largest;
    }

    [Test]
    public void The_window_grows_as_a_fast_reader_reads_and_stays_at_its_start_for_a_slow_one()
    {
        using var fast = Establish(rttNs: Rtt);
        long fastLargest = Stream(fast, rounds: 12, readPerRound: int.MaxValue);
        int ring = fast.Stack.TcpConnections.ReceiveBufferSize;
        Assert.That(fastLargest, Is.GreaterThan(1 << 20), "a reader that keeps up earns a window of megabytes");
        Assert.That(fastLargest, Is.LessThanOrEqualTo(ring), "never past the ring");
        Assert.That(fast.Stack.TcpGetReceiveBuffer(fast.Socket), Is.GreaterThan(1 << 20));

        using var slow = Establish(rttNs: Rtt);
        long slowLargest = Stream(slow, rounds: 12, readPerRound: 8 * 1024);
        Assert.That(slowLargest, Is.LessThanOrEqualTo(128 * 1024), "tcp_rmem's default, never grown");
        Assert.That(slow.Stack.TcpGetReceiveBuffer(slow.Socket), Is.EqualTo(128 * 1024));
    }

    [Test]
    public void So_rcvbuf_doubles_the_value_pins_the_window_and_sizes_the_window_scale()
    {
        using var peer = Listening(out int l);
        Assert.That(peer.Stack.TcpSetReceiveBuffer(l, 64 * 1024), Is.Zero);
        Assert.That(peer.Stack.TcpGetReceiveBuffer(l), Is.EqualTo(128 * 1024), "doubled, as Linux");
        var c = new Conn { Peer = peer, Listener = l, Ts = true, PeerSeq = PeerIsn };
        var synAck = Expect(c.Send(TcpFlags.Syn, ack: 0, options: SynOptions(1460, true, (c.PeerTs, 0), 7)), TcpFlags.Syn | Ack, ack: PeerIsn + 1);
        Assert.That(synAck.WScale, Is.EqualTo(2), "chosen for 128 KiB (ilog2 - 15, as Linux), not for the ring");
        c.PeerSeq = PeerIsn + 1;
        c.StackSeq = synAck.Seq + 1;
        peer.Clock.Advance(Rtt);
        Assert.That(c.Send(Ack), Is.Empty);
        c.Socket = peer.Stack.TcpAccept(l, out _);
        Assert.That(c.Socket, Is.GreaterThanOrEqualTo(0));
        Assert.That(peer.Stack.TcpGetReceiveBuffer(c.Socket), Is.EqualTo(128 * 1024), "inherited from the listener");

        long largest = Stream(c, rounds: 10, readPerRound: int.MaxValue, shift: 2);
        Assert.That(largest, Is.LessThanOrEqualTo(128 * 1024), "no auto-tuning once set");
        Assert.That(peer.Stack.TcpGetReceiveBuffer(c.Socket), Is.EqualTo(128 * 1024));
    }

    [Test]
    public void So_rcvbuf_set_on_an_open_connection_stops_auto_tuning_without_taking_back_the_window()
    {
        using var c = Establish(rttNs: Rtt);
        long before = Stream(c, rounds: 8, readPerRound: int.MaxValue);
        Assert.That(before, Is.GreaterThan(128 * 1024), "grown first");
        Assert.That(c.Stack.TcpSetReceiveBuffer(c.Socket, 16 * 1024), Is.Zero);
        long after = Stream(c, rounds: 4, readPerRound: int.MaxValue);
        Assert.That(c.Stack.TcpGetReceiveBuffer(c.Socket), Is.EqualTo(32 * 1024));
        Assert.That(after, Is.LessThanOrEqualTo(before), "offered no more than before");
        Assert.That(c.Stack.Counters.TcpExtTCPOFODrop, Is.Zero);
    }

    [Test]
    public void The_send_buffer_starts_as_linux_sizes_it_and_grows_with_cwnd_unless_so_sndbuf_is_set()
    {
        using var pair = new SimPair(seed: 5);
        var (client, server) = SimTcpTests.Connect(pair);
        Assert.That(pair.A.TcpGetSendBuffer(client), Is.EqualTo(87_040), "tcp_init_buffer_space: 2 × 10 segments of 4,352, as Linux shows");

        int pinned = pair.A.TcpOpen();
        Assert.That(pair.A.TcpSetSendBuffer(pinned, 16 * 1024), Is.Zero);
        Assert.That(pair.A.TcpGetSendBuffer(pinned), Is.EqualTo(32 * 1024), "SO_SNDBUF doubled, as Linux");

        var data = TestData.Random(3, 4_000_000);
        var buf = new byte[1 << 20];
        var received = new MemoryStream();
        int sent = 0;
        int largest = 0;
        uint largestCwnd = 0;
        for (int i = 0; i < 20_000 && received.Length < data.Length; i++)
        {
            int n = sent < data.Length ? pair.A.TcpSend(client, data.AsSpan(sent)) : 0;
            if (n > 0)
                sent += n;
            pair.RunFor(Ms / 10);
            int r;
            while ((r = pair.B.TcpReceive(server, buf)) > 0)
                received.Write(buf, 0, r);
            largest = Math.Max(largest, pair.A.TcpGetSendBuffer(client));
            largestCwnd = Math.Max(largestCwnd, pair.A.TcpConnections[client].Cwnd);
        }
        Assert.That(sent, Is.EqualTo(data.Length));
        Assert.That(received.ToArray(), Is.EqualTo(data), "every byte arrived, in order");
        Assert.That(largest, Is.GreaterThan(256 * 1024), "grown with cwnd");
        Assert.That(largest, Is.LessThanOrEqualTo(2 * (largestCwnd / 1448 + 1) * 4352), "twice cwnd, in Linux's segment memory, at most");
        Assert.That(pair.A.TcpGetSendBuffer(pinned), Is.EqualTo(32 * 1024));
        Assert.That(largest, Is.LessThanOrEqualTo(pair.A.TcpConnections.SendBufferSize));
    }
}
