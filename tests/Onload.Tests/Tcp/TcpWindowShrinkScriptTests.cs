using Onload.Stack;
using Onload.Stack.Tcp;
using Onload.Stack.Wire;
using static Onload.Tests.Tcp.TcpScript;

namespace Onload.Tests.Tcp;

/// <summary>
/// A peer that pulls its right window edge back (RFC 9293 §3.8.6.2.1 discourages it, and must be survived): no
/// error, no new data beyond the new edge, what is already in flight stays in flight, and the stream goes on when
/// the window opens again.
/// </summary>
[TestFixture]
[Category("hostile")]
public class TcpWindowShrinkScriptTests
{
    [Test]
    public void A_retracted_right_edge_stops_new_data_at_it_and_the_stream_resumes_intact()
    {
        using var c = Establish();
        var data = Enumerable.Range(0, 20_000).Select(i => (byte)(i * 13)).ToArray();
        Assert.That(c.Stack.TcpSend(c.Socket, data), Is.EqualTo(data.Length));
        var flight = c.Received();
        uint sndNxt = flight[^1].Seq + (uint)flight[^1].Payload.Length;
        Assert.That(flight, Has.Count.EqualTo(10), "the initial window's ten segments");

        // ACK the first segment and offer 16 × 2^7 = 2048 bytes: the right edge falls from far beyond to SND.UNA + 2048.
        uint una = c.StackSeq + 1448;
        var got = c.Send(Ack, ack: una, window: 16);
        uint edge = una + 16 * 128;
        Assert.That(got.Where(s => s.Payload.Length > 0), Is.Empty, "nothing new: SND.NXT is already past the new edge");
        var later = Run(c.Peer, 3_000 * Ms).Select(x => x.Seg).Where(s => s.Payload.Length > 0).ToList();
        TestContext.Out.WriteLine($"while shrunk: {string.Join(" ", later.Select(s => $"{s.Seq - c.StackSeq}+{s.Payload.Length}"))}");
        Assert.That(later, Is.Not.Empty, "the RTO sends the head again");
        Assert.That(later.All(s => Seq.Le(s.Seq + (uint)s.Payload.Length, sndNxt)), Is.True, "only what was in flight, never new data");
        Assert.That(later.All(s => Seq.Lt(s.Seq, edge)), Is.True, "and only from inside the new window");
        Assert.That(c.Stack.TcpStateOf(c.Socket), Is.EqualTo(TcpState.Established), "no error");

        // The window opens: everything arrives, each byte as it was written.
        uint first = c.StackSeq, last = first + (uint)data.Length;
        var stream = new byte[data.Length];
        foreach (var s in flight.Concat(later))
            s.Payload.CopyTo(stream, (int)(s.Seq - first));
        c.StackSeq = una;
        for (int round = 0; round < 200 && Seq.Lt(c.StackSeq, last); round++)
        {
            foreach (var s in c.Send(Ack, ack: c.StackSeq, window: 1000).Where(s => s.Payload.Length > 0))
            {
                s.Payload.CopyTo(stream, (int)(s.Seq - first));
                c.StackSeq = Seq.Max(c.StackSeq, s.Seq + (uint)s.Payload.Length); // in order here: no loss
            }
        }
        Assert.That(c.StackSeq, Is.EqualTo(last), "every byte acknowledged");
        Assert.That(stream, Is.EqualTo(data));
        Assert.That(c.Stack.Counters.TcpOutRsts, Is.Zero);
    }
}
