using System.Text;
using Onload.Stack;
using Onload.Stack.Wire;
using Onload.Tests.Wire;
using static Onload.Tests.Tcp.TcpScript;

namespace Onload.Tests.Tcp;

/// <summary>
/// TCP segments that arrive in IPv4 fragments, the header itself split across them (a path with a small MTU, or a
/// peer hiding the header from a filter): Linux reassembles any protocol and takes the segment whole.
/// </summary>
[TestFixture]
[Category("hostile")]
public class TcpFragmentScriptTests
{
    [Test]
    public void A_syn_and_data_in_8_byte_fragments_are_taken_whole()
    {
        using var peer = Listening(out int l);
        var syn = peer.TcpFrame(PeerPort, Port, PeerIsn, 0, TcpFlags.Syn, 65535, SynOptions(1460, true, null, 7));
        foreach (var f in RawPeer.Fragment(syn, 8))
            peer.Inject(f);
        var synAck = Expect(TcpSegments(peer.Received()), TcpFlags.Syn | Ack, ack: PeerIsn + 1, why: "the SYN was put together and answered");

        peer.Inject(peer.TcpFrame(PeerPort, Port, PeerIsn + 1, synAck.Seq + 1, Ack, 1000));
        int s = peer.Stack.TcpAccept(l, out _);
        Assert.That(s, Is.GreaterThanOrEqualTo(0));
        var data = peer.TcpFrame(PeerPort, Port, PeerIsn + 1, synAck.Seq + 1, Ack | TcpFlags.Psh, 1000,
            payload: Encoding.ASCII.GetBytes("split across sixteen-byte fragments"));
        foreach (var f in RawPeer.Fragment(data, 16))
            peer.Inject(f);
        var buffer = new byte[100];
        int n = peer.Stack.TcpReceive(s, buffer);
        Assert.That(n > 0 ? Encoding.ASCII.GetString(buffer, 0, n) : $"error {n}", Is.EqualTo("split across sixteen-byte fragments"));
        Assert.That(peer.Stack.Counters.IpReasmOKs, Is.EqualTo(2));
        Assert.That(peer.Stack.Counters.Drop(DropReason.IpUnknownProtocol), Is.Zero);
    }

    [Test]
    public void A_fragmented_segment_with_a_bad_checksum_is_dropped()
    {
        using var peer = Listening(out _);
        var syn = peer.TcpFrame(PeerPort, Port, PeerIsn, 0, TcpFlags.Syn, 65535, SynOptions(1460, true, null, 7));
        syn[^1] ^= 0x55; // an option byte: the TCP checksum no longer holds
        foreach (var f in RawPeer.Fragment(syn, 8))
            peer.Inject(f);
        Assert.That(TcpSegments(peer.Received()), Is.Empty);
        Assert.That(peer.Stack.Counters.Drop(DropReason.TcpBadChecksum), Is.EqualTo(1));
    }
}
