using Onload.Stack;
using Onload.Stack.Tcp;
using Onload.Stack.Wire;
using static Onload.Tests.Tcp.TcpScript;

namespace Onload.Tests.Tcp;

/// <summary>
/// RFC 5961 against a blind injector, segment by segment: what it must guess (an exact RST, a sequence number in
/// the window and an ACK no older than the peer's largest window) and what it gets when it guesses wrong.
/// </summary>
[TestFixture]
[Category("hostile")]
public class TcpBlindInjectionScriptTests
{
    [Test]
    public void Data_whose_ack_is_older_than_the_largest_window_is_dropped_with_a_challenge_ack()
    {
        using var c = Establish();
        uint maxWindow = (uint)c.Window << 7; // the peer's window, scaled: 128,000 bytes
        var forged = new byte[] { 0xde, 0xad, 0xbe, 0xef };

        var got = c.Send(Ack | TcpFlags.Psh, ack: c.StackSeq - maxWindow - 1000, payload: forged);

        var challenge = Expect(got, Ack, seq: c.StackSeq, ack: c.PeerSeq, length: 0, why: "a challenge ACK with the real numbers");
        Assert.That(challenge.AckNo, Is.EqualTo(c.PeerSeq), "the data was not taken");
        Assert.That(c.Stack.TcpReceive(c.Socket, new byte[16]), Is.EqualTo(-(int)Errno.EAGAIN), "nothing to read");
        Assert.That(c.Stack.Counters.Drop(DropReason.TcpTooOldAck), Is.EqualTo(1));
        Assert.That(c.Stack.Counters.TcpExtTCPChallengeACK, Is.EqualTo(1));

        // An old duplicate ACK within the window is no injector's: its data is taken, as RFC 5961 §5.2 allows.
        c.Send(Ack | TcpFlags.Psh, ack: c.StackSeq - 1000, payload: [1, 2, 3]);
        var buffer = new byte[16];
        Assert.That(c.Stack.TcpReceive(c.Socket, buffer), Is.EqualTo(3));
        Assert.That(buffer[..3], Is.EqualTo(new byte[] { 1, 2, 3 }));
    }

    [Test]
    public void Out_of_window_pure_acks_are_answered_once_per_half_second_and_data_always()
    {
        using var c = Establish();
        uint far = c.PeerSeq + 50_000_000;
        Expect(c.Send(Ack, seq: far), Ack, seq: c.StackSeq, ack: c.PeerSeq, why: "the first gets a duplicate ACK");
        Assert.That(c.Send(Ack, seq: far), Is.Empty, "the next within 500 ms none (net.ipv4.tcp_invalid_ratelimit)");
        Assert.That(c.Send(Ack, seq: far + 1), Is.Empty);
        Assert.That(c.Stack.Counters.TcpExtTCPACKSkippedSeq, Is.EqualTo(2));
        Expect(c.Send(Ack, seq: far, payload: [9]), Ack, ack: c.PeerSeq, why: "out-of-window data is always answered");
        c.Peer.Clock.Advance(500 * Ms);
        Expect(c.Send(Ack, seq: far), Ack, ack: c.PeerSeq, why: "half a second later, one again");
        Assert.That(c.Stack.Counters.Drop(DropReason.TcpOutOfWindow), Is.EqualTo(5));
    }

    [Test]
    public void A_syn_outside_the_window_gets_a_challenge_ack_within_the_stack_wide_limit()
    {
        using var c = Establish(tweak: o => o with { TcpChallengeAcksPerSecond = 3 });
        int acks = 0;
        for (int i = 0; i < 6; i++)
        {
            var got = c.Send(TcpFlags.Syn, seq: c.PeerSeq + 50_000_000 + (uint)i * 1000, ack: 0);
            foreach (var s in got)
            {
                Assert.That(s.Flags, Is.EqualTo(Ack), "a challenge ACK (RFC 5961 §4.2), never a RST");
                Assert.That((s.Seq, s.AckNo), Is.EqualTo((c.StackSeq, c.PeerSeq)));
                acks++;
            }
        }
        Assert.That(acks, Is.EqualTo(3), "three a second");
        Assert.That(c.Stack.Counters.TcpExtTCPChallengeACK, Is.EqualTo(3));
        Assert.That(c.Stack.Counters.Drop(DropReason.TcpChallengeAckLimited), Is.EqualTo(3));
        Assert.That(c.Stack.TcpStateOf(c.Socket), Is.EqualTo(TcpState.Established));
    }
}
