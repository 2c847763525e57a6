using Onload.Stack;
using Onload.Stack.Tcp;
using Onload.Stack.Wire;
using static Onload.Tests.Tcp.TcpScript;

namespace Onload.Tests.Tcp;

/// <summary>
/// A peer that holds its window at zero for ever and answers every probe (RFC 9293 §3.8.6.1): the persist timer
/// backs off to the maximum RTO and probes for as long as the peer answers, as Linux's tcp_probe_timer; but an
/// orphan (closed by its application with data unsent) is not kept for ever by such a peer: once its backoff
/// reaches the maximum RTO and tcp_orphan_retries (8) probes, it is aborted.
/// </summary>
[TestFixture]
[Category("hostile")]
public class TcpZeroWindowScriptTests
{
    /// <summary>Runs the virtual clock for <paramref name="seconds"/>, answering every probe with a zero window;
    /// returns when each probe came (seconds from the start).</summary>
    private static List<double> HoldZeroWindow(Conn c, int seconds, Func<bool>? stop = null)
    {
        long start = c.Peer.Clock.NowNanoseconds;
        var probes = new List<double>();
        for (int s = 0; s < seconds * 10 && stop?.Invoke() != true; s++)
        {
            c.Peer.Clock.Advance(100 * Ms);
            c.Stack.Poll();
            foreach (var seg in c.Received())
            {
                probes.Add((c.Peer.Clock.NowNanoseconds - start) / 1e9);
                Assert.That(seg.Payload, Is.Empty, "a probe carries no new data into a zero window");
                c.Send(Ack, window: 0);
            }
        }
        return probes;
    }

    private static Conn ZeroWindowWithDataWaiting()
    {
        var c = Establish();
        Assert.That(c.Stack.TcpSend(c.Socket, new byte[1000]), Is.EqualTo(1000));
        Expect(c.Received(), Ack | TcpFlags.Psh, length: 1000);
        c.StackSeq += 1000;
        c.Send(Ack, window: 0);
        Assert.That(c.Stack.TcpSend(c.Socket, new byte[5000]), Is.EqualTo(5000));
        Assert.That(c.Received(), Is.Empty, "nothing goes into a zero window");
        return c;
    }

    [Test]
    public void Answered_probes_keep_a_connection_alive_for_ever_at_the_maximum_backoff()
    {
        using var c = ZeroWindowWithDataWaiting();
        var probes = HoldZeroWindow(c, 1200);
        var gaps = probes.Zip(probes.Skip(1), (a, b) => b - a).ToList();
        TestContext.Out.WriteLine($"20 minutes at zero window: {probes.Count} probes, gaps (s) {string.Join(" ", gaps.Select(g => g.ToString("0.#")))}");
        Assert.That(c.Stack.TcpStateOf(c.Socket), Is.EqualTo(TcpState.Established), "alive (Linux resets probes_out on each answer)");
        Assert.That(gaps.Max(), Is.LessThanOrEqualTo(120.2), "backed off to TCP_RTO_MAX, no further");
        Assert.That(gaps.Skip(gaps.Count - 3), Has.All.GreaterThan(119), "and kept there");
        Assert.That(c.Stack.Counters.TcpExtTCPAbortOnTimeout, Is.Zero);

        // Opened at last: the data goes and nothing was lost.
        var got = c.Send(Ack, window: 1000);
        Assert.That(got.Sum(s => s.Payload.Length), Is.GreaterThan(0));
    }

    [Test]
    public void An_orphan_held_at_zero_window_is_aborted_once_backed_off_to_the_maximum_like_linux_orphan_retries()
    {
        using var c = ZeroWindowWithDataWaiting();
        int rows = c.Stack.TcpConnections.Open;
        Assert.That(c.Stack.TcpClose(c.Socket), Is.Zero, "closed with 5000 bytes unsent: an orphan in FIN_WAIT_1's wait");
        var probes = HoldZeroWindow(c, 600, () => c.Stack.TcpConnections.Open < rows);
        TestContext.Out.WriteLine($"orphan at zero window: {probes.Count} probes answered, row freed after {probes.LastOrDefault():0} s; " +
            $"TcpExtTCPAbortOnTimeout {c.Stack.Counters.TcpExtTCPAbortOnTimeout}");
        Assert.That(c.Stack.TcpConnections.Open, Is.EqualTo(rows - 1), "the row is freed, though every probe was answered");
        Assert.That(c.Stack.Counters.TcpExtTCPAbortOnTimeout, Is.EqualTo(1));
        Assert.That(probes, Has.Count.InRange(8, 12), "after about tcp_orphan_retries' 8 probes");
    }
}
