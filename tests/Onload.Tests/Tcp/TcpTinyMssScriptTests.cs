using Onload.Stack;
using Onload.Stack.Wire;
using static Onload.Tests.Tcp.TcpScript;

namespace Onload.Tests.Tcp;

/// <summary>A peer that offers a tiny MSS (RFC 9293 §3.7.1 sets no floor): Linux sends no less than
/// net.ipv4.tcp_min_snd_mss (48) bytes before options, so that such a peer cannot make it send a segment per byte.</summary>
[TestFixture]
[Category("hostile")]
public class TcpTinyMssScriptTests
{
    [TestCase(true, 36)]
    [TestCase(false, 48)]
    public void A_peer_asking_for_mss_1_gets_segments_of_linuxs_floor_of_48_bytes_before_options(bool timestamps, int expected)
    {
        using var peer = Listening(out int l);
        byte[] options = [2, 4, 0, 1, .. timestamps ? TsOption(100, 0) : [1, 1, 1, 1]];
        peer.Inject(peer.TcpFrame(PeerPort, Port, PeerIsn, 0, TcpFlags.Syn, 65535, options));
        var synAck = Expect(TcpSegments(peer.Received()), TcpFlags.Syn | Ack);
        peer.Inject(peer.TcpFrame(PeerPort, Port, PeerIsn + 1, synAck.Seq + 1, Ack, 65535, timestamps ? TsOption(101, synAck.TsVal!.Value) : []));
        int s = peer.Stack.TcpAccept(l, out _);
        Assert.That(s, Is.GreaterThanOrEqualTo(0));
        Assert.That(peer.Stack.TcpSend(s, new byte[1000]), Is.EqualTo(1000));
        var got = TcpSegments(peer.Received());
        Assert.That(got.Select(g => g.Payload.Length).Max(), Is.EqualTo(expected));
    }
}
