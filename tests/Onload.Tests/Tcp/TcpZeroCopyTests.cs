using System.Runtime.InteropServices;
using Onload.Stack;
using Onload.Stack.Tcp;
using Onload.Stack.Wire;
using static Onload.Tests.Tcp.TcpScript;

namespace Onload.Tests.Tcp;

/// <summary>
/// Zero-copy TCP in the stack (NetStack.TcpZeroCopy.cs), segment by segment: lent receive bytes stay in the window
/// and in place until returned, and a reservation in the send ring goes out as the bytes written there.
/// </summary>
[TestFixture]
public class TcpZeroCopyTests
{
    private const int Segment = 1448;

    private static byte[] Bytes(int n, int seed) => Enumerable.Range(0, n).Select(i => (byte)(i * 7 + seed)).ToArray();

    private static byte[] At(nint p, int n)
    {
        var copy = new byte[n];
        Marshal.Copy(p, copy, 0, n);
        return copy;
    }

    [Test]
    public void Lent_bytes_are_the_ring_s_own_and_reads_go_on_after_them_until_they_are_returned()
    {
        using var c = Establish();
        var data = Bytes(3 * Segment, 1);
        for (int i = 0; i < 3; i++)
        {
            c.Send(Ack, payload: data[(i * Segment)..((i + 1) * Segment)]);
            c.PeerSeq += Segment;
        }
        int first = c.Stack.TcpReceiveLend(c.Socket, 1000, out nint p);
        Assert.That(first, Is.EqualTo(1000));
        Assert.That(At(p, first), Is.EqualTo(data[..1000]));
        int second = c.Stack.TcpReceiveLend(c.Socket, 2000, out nint q);
        Assert.That(second, Is.EqualTo(2000));
        Assert.That(At(q, second), Is.EqualTo(data[1000..3000]), "the next lend starts after the first");
        Assert.That(q, Is.EqualTo(p + 1000), "both in the ring, one after the other");

        Assert.That(c.Stack.TcpReceive(c.Socket, new byte[10]), Is.EqualTo(-(int)Errno.EBUSY), "a copying read waits for the returns");
        var peek = new byte[100];
        Assert.That(c.Stack.TcpPeek(c.Socket, peek), Is.EqualTo(100));
        Assert.That(peek, Is.EqualTo(data[3000..3100]), "a peek sees what follows the lent bytes");
        Assert.That(c.Stack.TcpReceiveReturn(c.Socket, 3001), Is.EqualTo(-(int)Errno.EINVAL), "no more than was lent");

        Assert.That(c.Stack.TcpReceiveReturn(c.Socket, 3000), Is.Zero);
        var rest = new byte[Segment * 3];
        Assert.That(c.Stack.TcpReceive(c.Socket, rest), Is.EqualTo(data.Length - 3000));
        Assert.That(rest[..(data.Length - 3000)], Is.EqualTo(data[3000..]));
        Assert.That(c.Stack.TcpConnections[c.Socket].RcvLent, Is.Zero);
    }

    [Test]
    public void Holding_lent_bytes_closes_the_window_without_a_byte_overwritten_and_returning_them_opens_it()
    {
        using var c = Establish();
        int buffer = c.Stack.TcpGetReceiveBuffer(c.Socket);
        int shift = c.Stack.TcpConnections[c.Socket].RcvWndShift;
        var held = new List<(nint At, byte[] Expected)>();
        ushort lastWindow = ushort.MaxValue;
        uint lastAck = 0;
        for (int i = 0; lastWindow != 0; i++)
        {
            Assert.That(i, Is.LessThan(buffer / Segment + 10), "the window closes once the buffer is held");
            var payload = Bytes(Segment, i);
            var acks = c.Send(Ack, payload: payload);
            c.PeerSeq += Segment;
            int n = c.Stack.TcpReceiveLend(c.Socket, int.MaxValue, out nint p);
            while (n > 0)
            {
                held.Add((p, At(p, n)));
                n = c.Stack.TcpReceiveLend(c.Socket, int.MaxValue, out p);
            }
            if (acks.Count == 0) // the delayed ACK says the window
                acks = c.Received(advanceNs: 200 * Ms);
            foreach (var a in acks)
                (lastWindow, lastAck) = (a.Window, a.AckNo);
        }
        int lent = c.Stack.TcpConnections[c.Socket].RcvLent;
        Assert.That(lent, Is.GreaterThan(buffer - (Segment << 1) - (1 << shift)).And.LessThanOrEqualTo(buffer),
            "the peer filled the whole buffer while it was lent out");

        // Beyond the closed window: refused (the ACK does not move), and nothing lent changes.
        Assert.That(c.Stack.TcpConnections[c.Socket].RcvNxt, Is.EqualTo(lastAck));
        foreach (var a in c.Send(Ack, seq: lastAck, payload: Bytes(Segment, 99)))
            Assert.That((a.AckNo, a.Window), Is.EqualTo((lastAck, (ushort)0)), "answered with the closed window");
        Assert.That(c.Stack.TcpConnections[c.Socket].RcvNxt, Is.EqualTo(lastAck), "data beyond a zero window is not taken");
        Assert.That(c.Stack.TcpConnections[c.Socket].RcvLent, Is.EqualTo(lent));
        foreach (var (at, expected) in held)
            Assert.That(At(at, expected.Length), Is.EqualTo(expected), "lent bytes stay as they were");

        Assert.That(c.Stack.TcpReceiveReturn(c.Socket, lent), Is.Zero);
        var update = c.Received();
        Assert.That(update.Where(s => s.Window > 0), Is.Not.Empty, "returning the bytes reopens the window");
    }

    [Test]
    public void A_send_reservation_is_written_in_place_sent_as_written_and_completes_at_the_peer_s_ack()
    {
        using var c = Establish();
        int room = c.Stack.TcpSendReserve(c.Socket, out nint p, out long position);
        Assert.That(room, Is.GreaterThan(0));
        Assert.That(position, Is.Zero, "nothing was sent before it");
        Assert.That(c.Stack.TcpSend(c.Socket, new byte[1]), Is.EqualTo(-(int)Errno.EBUSY), "copies wait for the commit");
        Assert.That(c.Stack.TcpSendReserve(c.Socket, out _, out _), Is.EqualTo(-(int)Errno.EBUSY), "one reservation at a time");

        var payload = Bytes(100, 5);
        Marshal.Copy(payload, 0, p, payload.Length);
        Assert.That(c.Stack.TcpSendCommit(c.Socket, 100), Is.EqualTo(100));
        var seg = Expect(c.Received(), TcpFlags.Ack | TcpFlags.Psh, seq: c.StackSeq, length: 100);
        Assert.That(seg.Payload, Is.EqualTo(payload));
        Assert.That(c.Stack.TcpSendAcked(c.Socket), Is.Zero, "not complete before the peer acknowledges");

        c.Send(Ack, ack: c.StackSeq + 100);
        c.StackSeq += 100;
        Assert.That(c.Stack.TcpSendAcked(c.Socket), Is.EqualTo(100), "complete at the peer's ACK");
        Assert.That(c.Stack.TcpSendCommit(c.Socket, 1), Is.EqualTo(-(int)Errno.EINVAL), "no reservation is open");
        Assert.That(c.Stack.TcpSendReserve(c.Socket, out _, out long next), Is.GreaterThan(0));
        Assert.That(next, Is.EqualTo(100), "the next reservation follows the first in the stream");
        Assert.That(c.Stack.TcpSendCommit(c.Socket, 0), Is.Zero, "0 gives the room back");
        Assert.That(c.Stack.TcpSend(c.Socket, new byte[1]), Is.EqualTo(1), "copies go on after it");
    }
}
