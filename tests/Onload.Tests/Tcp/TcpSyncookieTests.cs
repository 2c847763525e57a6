using System.Text;
using Onload.Stack;
using Onload.Stack.Tcp;
using Onload.Stack.Wire;
using Onload.Tests.Wire;
using static Onload.Tests.Tcp.TcpScript;

namespace Onload.Tests.Tcp;

/// <summary>
/// SYN cookies (RFC 4987 §3.6) as Linux's net.ipv4.tcp_syncookies = 1, scripted packet by packet: a SYN that finds
/// the listener's SYN queue full gets a SYN-ACK whose sequence number is a cookie and no row; the ACK that brings the
/// cookie back makes the connection the SYN asked for; any other ACK gets a RST.
/// </summary>
[TestFixture]
[Category("hostile")]
public class TcpSyncookieTests
{
    private const int Backlog = 16; // TcpScript.Listening's
    private const ushort FloodPort = 41000;

    /// <summary>Fills the listener's SYN queue with half-open connections from ports the flood uses.</summary>
    private static void FillSynQueue(RawPeer peer, ushort firstPort = FloodPort)
    {
        for (int i = 0; i < Backlog; i++)
        {
            peer.Inject(peer.TcpFrame((ushort)(firstPort + i), Port, 5000u + (uint)i, 0, TcpFlags.Syn, 64240,
                SynOptions(1460, true, (1, 0), 7)));
            Expect(TcpSegments(ReceivedAnsweringArp(peer, Ms)), TcpFlags.Syn | Ack, ack: 5001u + (uint)i, why: "a SYN-ACK with room in the queue");
        }
    }

    private static Seg SendSyn(RawPeer peer, ushort mss, bool sack, (uint, uint)? ts, int wscale, ushort from = PeerPort)
    {
        peer.Inject(peer.TcpFrame(from, Port, PeerIsn, 0, TcpFlags.Syn, 64240, SynOptions(mss, sack, ts, wscale)));
        return Expect(TcpSegments(ReceivedAnsweringArp(peer, Ms)), TcpFlags.Syn | Ack, ack: PeerIsn + 1);
    }

    [Test]
    public void A_syn_finding_the_syn_queue_full_gets_a_cookie_syn_ack_and_uses_no_row()
    {
        using var peer = Listening(out _);
        FillSynQueue(peer);
        int rows = peer.Stack.TcpConnections.Open;
        Assert.That(rows, Is.EqualTo(1 + Backlog), "the listener and its full SYN queue");

        var synAck = SendSyn(peer, 1460, sack: true, ts: (100, 0), wscale: 7);

        Assert.Multiple(() =>
        {
            Assert.That(peer.Stack.TcpConnections.Open, Is.EqualTo(rows), "no row for a cookie");
            Assert.That(peer.Stack.Counters.TcpExtSyncookiesSent, Is.EqualTo(1));
            Assert.That(peer.Stack.Counters.TcpExtTCPReqQFullDoCookies, Is.EqualTo(1));
            Assert.That(synAck.Mss, Is.EqualTo(1460), "our MSS");
            Assert.That(synAck.SackOk, Is.True);
            Assert.That(synAck.WScale, Is.GreaterThanOrEqualTo(0), "window scaling offered back");
            Assert.That(synAck.TsEcr, Is.EqualTo(100u), "the SYN's TSval echoed");
            Assert.That(synAck.TsVal!.Value & 0x3f, Is.EqualTo(7u | 0x10u), "window scale 7 and SACK in the TSval's low bits");
        });
        // The same SYN again within the minute: the same cookie, still no state.
        var again = SendSyn(peer, 1460, sack: true, ts: (100, 0), wscale: 7);
        Assert.That(again.Seq, Is.EqualTo(synAck.Seq), "a cookie depends only on the tuple, the ISN and the minute");
        Assert.That(peer.Stack.TcpConnections.Open, Is.EqualTo(rows));
    }

    [Test]
    public void The_ack_of_a_cookie_makes_a_connection_with_what_the_syn_asked_for_and_it_carries_data_both_ways()
    {
        using var peer = Listening(out int l);
        FillSynQueue(peer);
        // MSS 1450 is not in the cookie's table: it rounds down to 1440, as Linux's msstab.
        var synAck = SendSyn(peer, 1450, sack: true, ts: (100, 0), wscale: 5);

        var c = new Conn { Peer = peer, Listener = l, Ts = true, PeerTs = 100, StackTs = synAck.TsVal!.Value,
            PeerSeq = PeerIsn + 1, StackSeq = synAck.Seq + 1 };
        var hello = Encoding.ASCII.GetBytes("hello through a cookie");
        c.Send(Ack | TcpFlags.Psh, payload: hello);
        c.PeerSeq += (uint)hello.Length;

        int s = peer.Stack.TcpAccept(l, out var remote);
        Assert.That(s, Is.GreaterThanOrEqualTo(0), "accepted");
        Assert.That(remote.Port, Is.EqualTo(PeerPort));
        var t = peer.Stack.TcpConnections[s];
        Assert.Multiple(() =>
        {
            Assert.That(peer.Stack.Counters.TcpExtSyncookiesRecv, Is.EqualTo(1));
            Assert.That(peer.Stack.TcpStateOf(s), Is.EqualTo(TcpState.Established));
            Assert.That(t.SndMss, Is.EqualTo(1440 - 12), "the cookie's MSS less the timestamp option");
            Assert.That(t.WindowScaling && t.SndWndShift == 5, Is.True, "the peer's window scale, from the TSecr");
            Assert.That(t.RcvWndShift, Is.EqualTo(synAck.WScale), "the scale our SYN-ACK offered");
            Assert.That(t.SackPermitted, Is.True);
            Assert.That(t.Timestamps, Is.True);
        });
        var buffer = new byte[100];
        int n = peer.Stack.TcpReceive(s, buffer);
        Assert.That(Encoding.ASCII.GetString(buffer, 0, Math.Max(n, 0)), Is.EqualTo("hello through a cookie"), "the ACK's data");

        var reply = Encoding.ASCII.GetBytes("and back");
        Assert.That(peer.Stack.TcpSend(s, reply), Is.EqualTo(reply.Length));
        peer.Stack.Poll();
        var got = c.Received();
        var data = got.Single(g => g.Payload.Length > 0);
        Assert.That(data.Payload, Is.EqualTo(reply));
        Assert.That(data.Seq, Is.EqualTo(c.StackSeq), "the data follows the cookie ISN");
        Assert.That(data.AckNo, Is.EqualTo(c.PeerSeq), "our data acknowledges theirs");
    }

    [Test]
    public void Without_timestamps_a_cookie_connection_has_no_window_scaling_or_sack()
    {
        using var peer = Listening(out int l);
        FillSynQueue(peer);
        var synAck = SendSyn(peer, 1300, sack: true, ts: null, wscale: 7);
        Assert.Multiple(() =>
        {
            Assert.That(synAck.TsVal, Is.Null, "no timestamps to keep the options in");
            Assert.That(synAck.WScale, Is.EqualTo(-1), "so no window scale offered");
            Assert.That(synAck.SackOk, Is.False, "and no SACK");
        });

        peer.Inject(peer.TcpFrame(PeerPort, Port, PeerIsn + 1, synAck.Seq + 1, Ack, 64240));
        Assert.That(TcpSegments(ReceivedAnsweringArp(peer, Ms)), Is.Empty, "the handshake's ACK needs no answer");
        int s = peer.Stack.TcpAccept(l, out _);
        Assert.That(s, Is.GreaterThanOrEqualTo(0), "accepted");
        var t = peer.Stack.TcpConnections[s];
        Assert.Multiple(() =>
        {
            Assert.That(t.SndMss, Is.EqualTo(1300));
            Assert.That(t.WindowScaling, Is.False);
            Assert.That(t.RcvWndShift, Is.Zero);
            Assert.That(t.SackPermitted, Is.False);
            Assert.That(t.Timestamps, Is.False);
            Assert.That(t.SndWnd, Is.EqualTo(64240u), "the ACK's window, unscaled");
        });
    }

    [Test]
    public void A_forged_a_misdirected_or_an_old_cookie_gets_a_reset_and_counts_as_failed()
    {
        using var peer = Listening(out int l);
        FillSynQueue(peer);
        var synAck = SendSyn(peer, 1460, sack: false, ts: null, wscale: -1);
        int rows = peer.Stack.TcpConnections.Open;
        uint cookie = synAck.Seq;

        // Forged: a guess one off.
        peer.Inject(peer.TcpFrame(PeerPort, Port, PeerIsn + 1, cookie + 2, Ack, 64240));
        Expect(TcpSegments(ReceivedAnsweringArp(peer, Ms)), TcpFlags.Rst, seq: cookie + 2, why: "a RST, as an ACK to a listener gets");
        // Misdirected: a good cookie, from another port.
        peer.Inject(peer.TcpFrame(PeerPort + 1, Port, PeerIsn + 1, cookie + 1, Ack, 64240));
        Expect(TcpSegments(ReceivedAnsweringArp(peer, Ms)), TcpFlags.Rst, seq: cookie + 1);
        // Another sequence number: the cookie was made for the SYN's ISN.
        peer.Inject(peer.TcpFrame(PeerPort, Port, PeerIsn + 100, cookie + 1, Ack, 64240));
        Expect(TcpSegments(ReceivedAnsweringArp(peer, Ms)), TcpFlags.Rst, seq: cookie + 1);
        // Both numbers moved on by the same amount, as an echo's last ACK after a closed connection: no cookie either
        // (with Linux's sum of ISN and hash it would be one).
        peer.Inject(peer.TcpFrame(PeerPort, Port, PeerIsn + 1 + 5000, cookie + 1 + 5000, Ack, 64240));
        Expect(TcpSegments(ReceivedAnsweringArp(peer, Ms)), TcpFlags.Rst, seq: cookie + 1 + 5000);
        Assert.That(peer.Stack.Counters.TcpExtSyncookiesFailed, Is.EqualTo(4));

        // Old: past its second minute, while the listener still hands out cookies, the same cookie is refused.
        for (int second = 0; second < 130; second++)
        {
            peer.Clock.Advance(1_000 * Ms);
            peer.Stack.Poll();
            ReceivedAnsweringArp(peer, Ms);
        }
        long sentBefore = peer.Stack.Counters.TcpExtSyncookiesSent;
        for (int i = 0; i <= Backlog && peer.Stack.Counters.TcpExtSyncookiesSent == sentBefore; i++)
        {
            peer.Inject(peer.TcpFrame((ushort)(FloodPort + 100 + i), Port, 7000, 0, TcpFlags.Syn, 64240, SynOptions(1460, false, null, -1)));
            ReceivedAnsweringArp(peer, Ms);
        }
        Assert.That(peer.Stack.Counters.TcpExtSyncookiesSent, Is.GreaterThan(sentBefore), "the queue filled again: cookies again");
        peer.Inject(peer.TcpFrame(PeerPort, Port, PeerIsn + 1, cookie + 1, Ack, 64240));
        Expect(TcpSegments(ReceivedAnsweringArp(peer, Ms)), TcpFlags.Rst, seq: cookie + 1, why: "a cookie two minutes old");
        Assert.That(peer.Stack.Counters.TcpExtSyncookiesFailed, Is.EqualTo(5));
        Assert.That(peer.Stack.Counters.TcpExtSyncookiesRecv, Is.Zero);
        Assert.That(peer.Stack.TcpAccept(l, out _), Is.EqualTo(-(int)Errno.EAGAIN), "nothing to accept");
        Assert.That(peer.Stack.TcpConnections.Open, Is.LessThanOrEqualTo(rows), "no row for a bad cookie");
    }

    [Test]
    public void With_cookies_off_a_syn_finding_the_queue_full_is_dropped()
    {
        using var peer = Listening(out _, o => o with { TcpSyncookies = false });
        FillSynQueue(peer);
        peer.Inject(peer.TcpFrame(PeerPort, Port, PeerIsn, 0, TcpFlags.Syn, 64240, SynOptions(1460, true, (100, 0), 7)));
        Assert.That(TcpSegments(ReceivedAnsweringArp(peer, Ms)), Is.Empty, "no answer: the client retransmits its SYN");
        Assert.Multiple(() =>
        {
            Assert.That(peer.Stack.Counters.Drop(DropReason.TcpListenOverflow), Is.EqualTo(1));
            Assert.That(peer.Stack.Counters.TcpExtListenOverflows, Is.EqualTo(1));
            Assert.That(peer.Stack.Counters.TcpExtTCPReqQFullDrop, Is.EqualTo(1));
            Assert.That(peer.Stack.Counters.TcpExtSyncookiesSent, Is.Zero);
            Assert.That(peer.Stack.TcpConnections.Open, Is.EqualTo(1 + Backlog));
        });
    }

    [Test]
    public void A_cookie_ack_finding_the_accept_queue_full_is_dropped_and_taken_when_it_comes_again()
    {
        using var peer = Listening(out int l);
        // Fifteen connections wait for accept() and one is half open: the queues hold the backlog.
        var halfOpen = new Seg[Backlog];
        for (int i = 0; i < Backlog; i++)
        {
            ushort port = (ushort)(FloodPort + i);
            peer.Inject(peer.TcpFrame(port, Port, 5000, 0, TcpFlags.Syn, 64240, SynOptions(1460, false, null, -1)));
            halfOpen[i] = Expect(TcpSegments(ReceivedAnsweringArp(peer, Ms)), TcpFlags.Syn | Ack);
            if (i < Backlog - 1)
            {
                peer.Inject(peer.TcpFrame(port, Port, 5001, halfOpen[i].Seq + 1, Ack, 64240));
                ReceivedAnsweringArp(peer, Ms);
            }
        }
        var synAck = SendSyn(peer, 1460, sack: false, ts: null, wscale: -1);
        Assert.That(peer.Stack.Counters.TcpExtSyncookiesSent, Is.EqualTo(1));
        // The half-open one completes: the accept queue is full when the cookie comes back.
        peer.Inject(peer.TcpFrame(FloodPort + Backlog - 1, Port, 5001, halfOpen[Backlog - 1].Seq + 1, Ack, 64240));
        ReceivedAnsweringArp(peer, Ms);
        int rows = peer.Stack.TcpConnections.Open;
        peer.Inject(peer.TcpFrame(PeerPort, Port, PeerIsn + 1, synAck.Seq + 1, Ack, 64240));
        Assert.That(TcpSegments(ReceivedAnsweringArp(peer, Ms)), Is.Empty, "dropped, not reset: the peer will send again");
        Assert.That(peer.Stack.Counters.TcpExtListenOverflows, Is.EqualTo(1));
        Assert.That(peer.Stack.TcpConnections.Open, Is.EqualTo(rows), "no row");

        // The application accepts one; the peer's next segment still carries the cookie and gets in.
        Assert.That(peer.Stack.TcpAccept(l, out _), Is.GreaterThanOrEqualTo(0));
        peer.Inject(peer.TcpFrame(PeerPort, Port, PeerIsn + 1, synAck.Seq + 1, Ack | TcpFlags.Psh, 64240, payload: [1, 2, 3]));
        ReceivedAnsweringArp(peer, 50 * Ms);
        int s = -1;
        for (int c; (c = peer.Stack.TcpAccept(l, out var remote)) >= 0;)
            if (remote.Port == PeerPort)
                s = c;
        Assert.That(s, Is.GreaterThanOrEqualTo(0), "the cookie's connection accepted");
        var got = new byte[8];
        Assert.That(peer.Stack.TcpReceive(s, got), Is.EqualTo(3));
        Assert.That(peer.Stack.Counters.TcpExtSyncookiesRecv, Is.EqualTo(2));
    }
}
