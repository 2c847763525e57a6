using System.Text;
using Onload.Stack;
using Onload.Stack.Wire;
using static Onload.Tests.Tcp.TcpScript;

namespace Onload.Tests.Tcp;

/// <summary>
/// Retransmissions that overlap what came before and disagree with it, as Linux's tcp_data_queue and
/// tcp_data_queue_ofo settle them: bytes already in order stay; out of order, a segment wholly inside one held is
/// dropped, one starting at or before a held one replaces what it covers, and where a held segment starts earlier
/// its bytes stay (Linux keeps both and reads the lower first).
/// </summary>
[TestFixture]
[Category("hostile")]
public class TcpOverlapScriptTests
{
    private static byte[] Run(char fill, int length) => Encoding.ASCII.GetBytes(new string(fill, length));

    private static void Data(Conn c, int offset, char fill, int length) =>
        c.Send(Ack, seq: c.PeerSeq + (uint)offset, payload: Run(fill, length));

    private static string ReadAll(Conn c)
    {
        var buffer = new byte[4096];
        int n = c.Stack.TcpReceive(c.Socket, buffer);
        return n > 0 ? Encoding.ASCII.GetString(buffer, 0, n) : "";
    }

    [Test]
    public void Overlapping_retransmissions_with_other_bytes_read_as_linux_reads_them()
    {
        using var c = Establish();
        Data(c, 0, 'A', 100);   // in order
        Data(c, 200, 'C', 100); // out of order: a hole at [100, 200)
        Data(c, 250, 'D', 100); // overlaps C's tail: C's bytes stay in [250, 300)
        Data(c, 180, 'E', 80);  // starts before C: E's bytes win in [200, 260)
        Data(c, 50, 'B', 100);  // overlaps A: A's stay, B's fill [100, 150)
        Data(c, 150, 'F', 50);  // fills the hole; in order, over E's [180, 200)
        Data(c, 400, 'G', 50);  // out of order again
        Data(c, 400, 'H', 80);  // same start, longer: replaces G
        Data(c, 410, 'I', 20);  // inside H: dropped
        Data(c, 350, 'J', 50);  // fills the hole

        string expected = new string('A', 100) + new string('B', 50) + new string('F', 50) + new string('E', 60) +
            new string('C', 40) + new string('D', 50) + new string('J', 50) + new string('H', 80);
        Assert.That(ReadAll(c), Is.EqualTo(expected));
        Assert.That(c.Stack.Counters.TcpExtTCPDSACKOfoSent, Is.GreaterThanOrEqualTo(2), "the overlaps reported in D-SACKs");
        TestContext.Out.WriteLine($"read {expected.Length} bytes as Linux would; D-SACK old {c.Stack.Counters.TcpExtTCPDSACKOldSent}, " +
            $"ofo {c.Stack.Counters.TcpExtTCPDSACKOfoSent}, ofo queued {c.Stack.Counters.TcpExtTCPOFOQueue}");
    }

    [Test]
    public void An_ack_of_data_never_sent_is_dropped_with_its_data_and_never_moves_snd_una()
    {
        using var c = Establish();
        Assert.That(c.Stack.TcpSend(c.Socket, new byte[100]), Is.EqualTo(100));
        Expect(c.Received(), Ack | TcpFlags.Psh, length: 100);

        var got = c.Send(Ack | TcpFlags.Psh, ack: c.StackSeq + 100 + 5000, payload: Run('X', 10));
        Assert.That(c.Stack.Counters.Drop(DropReason.TcpBadAck), Is.EqualTo(1));
        Assert.That(ReadAll(c), Is.Empty, "its data was not taken");
        Expect(got, Ack, seq: c.StackSeq + 100, ack: c.PeerSeq, length: 0, why: "a challenge ACK with the real numbers");
        Assert.That(c.Stack.Counters.TcpExtTCPChallengeACK, Is.EqualTo(1), "counted as Linux counts it");

        // A flood of them gets no more within 500 ms (Linux's per-socket limit): no ACK for each.
        for (int i = 0; i < 5; i++)
            Assert.That(c.Send(Ack | TcpFlags.Psh, ack: c.StackSeq + 100 + 5000 + (uint)i, payload: Run('X', 10)), Is.Empty);
        Assert.That(c.Stack.Counters.TcpExtTCPACKSkippedChallenge, Is.EqualTo(5));
        Assert.That(c.Stack.Counters.Drop(DropReason.TcpBadAck), Is.EqualTo(6));

        c.StackSeq += 100;
        c.Send(Ack | TcpFlags.Psh, payload: Run('Y', 10));
        Assert.That(ReadAll(c), Is.EqualTo(new string('Y', 10)), "the connection goes on");
    }
}
