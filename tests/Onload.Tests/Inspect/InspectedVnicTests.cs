using Onload.Vnic;
using Onload.Vnic.Inspect;
using Onload.Vnic.Sim;
using static Onload.Tests.Inspect.InspectFrames;

namespace Onload.Tests.Inspect;

[TestFixture]
public sealed class InspectedVnicTests
{
    private VirtualClock _clock = null!;
    private SimLink _link = null!;

    [SetUp]
    public void Link()
    {
        _clock = new VirtualClock();
        _link = new SimLink(seed: 1, _clock);
    }

    [TearDown]
    public void Unlink() => _link.Dispose();

    private void Send(IVnic from, params byte[][] frames)
    {
        var batch = frames.Select(f => InPool(from.Buffers, f)).ToArray();
        Assert.That(from.Transmit(batch), Is.EqualTo(batch.Length));
        _clock.Advance(1_000_000);
    }

    [Test]
    public void A_vetoed_received_frame_is_released_and_the_batch_closes_up_over_it()
    {
        using var rx = new InspectedVnic(_link.B, _clock);
        var rules = VetoRules.Parse("drop rx udp dport 7001");
        rx.Add(rules);
        byte[] first = Udp("10.0.0.1", 5000, "10.0.0.2", 7000);
        byte[] vetoed = Udp("10.0.0.1", 5000, "10.0.0.2", 7001);
        byte[] last = Udp("10.0.0.1", 5000, "10.0.0.2", 7002);
        Send(_link.A, first, vetoed, last);

        var batch = new PacketDescriptor[8];
        int n = rx.Receive(batch);
        Assert.That(n, Is.EqualTo(2));
        var got = batch[..n].Select(d => rx.Buffers.Span(d).ToArray()).ToArray();
        foreach (var d in batch[..n])
            rx.Buffers.Release(d.Buffer);
        Assert.Multiple(() =>
        {
            Assert.That(got, Is.EqualTo(new[] { first, last }));
            Assert.That(rx.RxVetoed, Is.EqualTo(1));
            Assert.That(rx.TxVetoed, Is.Zero);
            Assert.That(rules.Rules[0].Hits, Is.EqualTo(1));
            Assert.That(rx.Counters.RxFrames, Is.EqualTo(3), "the backend's counters still count what it received");
            Assert.That(rx.Buffers.Available, Is.EqualTo(rx.Buffers.Count), "no buffer leaked");
        });
    }

    [Test]
    public void A_batch_whose_every_frame_is_vetoed_receives_nothing_and_leaks_nothing()
    {
        using var rx = new InspectedVnic(_link.B, _clock);
        rx.Add(VetoRules.Parse("drop any"));
        Send(_link.A, Udp("10.0.0.1", 1, "10.0.0.2", 2), TcpSyn("10.0.0.1", 1, "10.0.0.2", 2), Arp("10.0.0.1", "10.0.0.2"));
        Assert.That(rx.Receive(new PacketDescriptor[8]), Is.Zero);
        Assert.That(rx.RxVetoed, Is.EqualTo(3));
        Assert.That(rx.Buffers.Available, Is.EqualTo(rx.Buffers.Count));
    }

    [Test]
    public void A_vetoed_frame_to_send_counts_as_accepted_is_released_and_never_reaches_the_wire()
    {
        using var tx = new InspectedVnic(_link.A, _clock);
        tx.Add(VetoRules.Parse("drop tx tcp sport 8080"));
        byte[] udp = Udp("10.0.0.1", 8080, "10.0.0.2", 9);
        byte[] vetoed = TcpSyn("10.0.0.1", 8080, "10.0.0.2", 40000);
        byte[] tcp = TcpSyn("10.0.0.1", 8081, "10.0.0.2", 40000);
        var batch = new[] { InPool(tx.Buffers, udp), InPool(tx.Buffers, vetoed), InPool(tx.Buffers, tcp) };

        Assert.That(tx.Transmit(batch), Is.EqualTo(3), "all three are the VNIC's now");
        _clock.Advance(1_000_000);
        Assert.Multiple(() =>
        {
            Assert.That(tx.Buffers.Available, Is.EqualTo(tx.Buffers.Count), "the vetoed buffer went back to the pool");
            Assert.That(tx.TxVetoed, Is.EqualTo(1));
            Assert.That(tx.Counters.TxFrames, Is.EqualTo(2), "the backend sent two");
            Assert.That(Drain(_link.B), Is.EqualTo(new[] { udp, tcp }));
        });
    }

    [TestCase(0)]
    [TestCase(1)]
    [TestCase(2)]
    public void When_the_backend_refuses_part_of_a_batch_the_return_value_is_the_prefix_the_VNIC_owns(int accepts)
    {
        using var refusing = new RefusingVnic(_link.A, accepts);
        using var tx = new InspectedVnic(refusing, _clock);
        tx.Add(VetoRules.Parse("drop tx udp dport 9"));
        // pass, veto, pass, veto, pass: the backend sees the three that pass and takes the first `accepts` of them.
        byte[][] frames =
        [
            Udp("10.0.0.1", 1, "10.0.0.2", 7), Udp("10.0.0.1", 1, "10.0.0.2", 9), Udp("10.0.0.1", 1, "10.0.0.2", 7),
            Udp("10.0.0.1", 1, "10.0.0.2", 9), Udp("10.0.0.1", 1, "10.0.0.2", 7),
        ];
        var batch = frames.Select(f => InPool(tx.Buffers, f)).ToArray();

        int owned = tx.Transmit(batch);
        // The caller's part, as NetStack.Flush does: release what was not taken.
        foreach (var d in batch[owned..])
            tx.Buffers.Release(d.Buffer);

        int[] expectedOwned = [0, 2, 4];
        Assert.Multiple(() =>
        {
            Assert.That(owned, Is.EqualTo(expectedOwned[accepts]), "up to the first passed frame the backend refused");
            Assert.That(tx.TxVetoed, Is.EqualTo(accepts), "only the vetoed frames inside the owned prefix were released by the veto");
            Assert.That(tx.Buffers.Available, Is.EqualTo(tx.Buffers.Count), "every buffer back exactly once");
        });
    }

    [Test]
    public void The_capture_sees_a_vetoed_received_frame_but_not_a_vetoed_sent_one_as_tcpdump_does()
    {
        using var ends = new InspectedVnic(_link.A, _clock);
        var capture = new Recorder();
        ends.Add(capture, FrameDirection.Receive);
        ends.Add(VetoRules.Parse("drop any udp port 7001"));
        ends.Add(capture, FrameDirection.Transmit);

        var out1 = Udp("10.0.0.1", 7001, "10.0.0.2", 1);
        var out2 = Udp("10.0.0.1", 7002, "10.0.0.2", 1);
        Assert.That(ends.Transmit([InPool(ends.Buffers, out1), InPool(ends.Buffers, out2)]), Is.EqualTo(2));
        var in1 = Udp("10.0.0.2", 1, "10.0.0.1", 7001);
        var in2 = Udp("10.0.0.2", 1, "10.0.0.1", 7002);
        Send(_link.B, in1, in2);
        var received = Drain(ends);

        Assert.Multiple(() =>
        {
            Assert.That(received, Is.EqualTo(new[] { in2 }));
            Assert.That(capture.Seen.Select(s => (s.Direction, s.Frame)), Is.EqualTo(new[]
            {
                (FrameDirection.Transmit, out2),
                (FrameDirection.Receive, in1),
                (FrameDirection.Receive, in2),
            }));
            Assert.That(ends.Buffers.Available, Is.EqualTo(ends.Buffers.Count));
        });
    }

    [Test]
    public void Without_inspectors_frames_pass_untouched_and_a_removed_inspector_sees_no_more()
    {
        using var rx = new InspectedVnic(_link.B, _clock);
        var recorder = new Recorder();
        rx.Add(recorder);
        Send(_link.A, Udp("10.0.0.1", 1, "10.0.0.2", 2));
        Assert.That(Drain(rx), Has.Count.EqualTo(1));
        Assert.That(rx.Remove(recorder), Is.True);
        Assert.That(rx.Remove(recorder), Is.False);
        Send(_link.A, Udp("10.0.0.1", 1, "10.0.0.2", 3));
        Assert.That(Drain(rx), Has.Count.EqualTo(1));
        Assert.That(recorder.Seen, Has.Count.EqualTo(1));
        Assert.That(rx.ReceiveInspectors, Is.Empty);
    }

    [Test]
    public void The_inspector_is_given_the_VNIC_clock_time_of_the_batch()
    {
        using var rx = new InspectedVnic(_link.B, _clock);
        var recorder = new Recorder();
        rx.Add(recorder);
        Send(_link.A, Udp("10.0.0.1", 1, "10.0.0.2", 2));
        Drain(rx);
        Assert.That(recorder.Seen.Single().TimestampNs, Is.EqualTo(_clock.NowNanoseconds));
    }

    [Test]
    public void Every_other_member_passes_through_to_the_backend()
    {
        using var v = new InspectedVnic(_link.A, _clock);
        Assert.Multiple(() =>
        {
            Assert.That(v.Spec, Is.EqualTo(_link.A.Spec));
            Assert.That(v.MacAddress, Is.EqualTo(_link.A.MacAddress));
            Assert.That(v.Mtu, Is.EqualTo(_link.A.Mtu));
            Assert.That(v.Buffers, Is.SameAs(_link.A.Buffers));
            Assert.That(v.Counters, Is.SameAs(_link.A.Counters));
            Assert.That(v.WaitHandle, Is.EqualTo(_link.A.WaitHandle));
            Assert.That(((IVnic)v).PrepareToSleep(), Is.True);
            Assert.That(((IVnic)v).JoinMulticast(0xE0000001), Is.Zero);
        });
    }

    [Test]
    public void Inspecting_allocates_nothing_per_frame()
    {
        using var a = new InspectedVnic(_link.A, _clock);
        using var b = new InspectedVnic(_link.B, _clock);
        using var capture = new PcapWriter(Stream.Null, ownsStream: false, clock: _clock, wallClockAtStartNs: 1);
        var rules = VetoRules.Parse("pass udp dport 7; drop rx udp dport 7001; drop tx tcp; drop any host 10.9.9.9");
        foreach (var v in new[] { a, b })
        {
            v.Add(capture, FrameDirection.Receive);
            v.Add(rules);
            v.Add(capture, FrameDirection.Transmit);
        }
        byte[][] frames = [Udp("10.0.0.1", 1, "10.0.0.2", 7), Udp("10.0.0.1", 1, "10.0.0.2", 7001), TcpSyn("10.0.0.1", 1, "10.0.0.2", 80)];
        var tx = new PacketDescriptor[frames.Length];
        var rx = new PacketDescriptor[8];

        void Round()
        {
            for (int i = 0; i < frames.Length; i++)
                tx[i] = InPool(a.Buffers, frames[i]);
            a.Transmit(tx);
            _clock.Advance(1_000_000);
            int n = b.Receive(rx);
            for (int i = 0; i < n; i++)
                b.Buffers.Release(rx[i].Buffer);
        }

        for (int i = 0; i < 100; i++)
            Round();
        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 0; i < 1000; i++)
            Round();
        Assert.That(GC.GetAllocatedBytesForCurrentThread() - before, Is.Zero);
        Assert.That(capture.FramesWritten, Is.EqualTo(1100 * 4),
            "each round two sent (the TCP frame vetoed before the capture) and two received (7001 captured, then vetoed)");
    }

    /// <summary>Keeps a copy of every frame it is shown, and passes it.</summary>
    private sealed class Recorder : IFrameInspector
    {
        public List<(FrameDirection Direction, byte[] Frame, long TimestampNs)> Seen { get; } = [];

        public FrameVerdict Inspect(FrameDirection direction, ReadOnlySpan<byte> frame, long timestampNs)
        {
            Seen.Add((direction, frame.ToArray(), timestampNs));
            return FrameVerdict.Pass;
        }
    }

    /// <summary>A backend whose TX ring takes only the first <c>accepts</c> frames of a batch, like a full ring.</summary>
    private sealed class RefusingVnic(IVnic inner, int accepts) : IVnic
    {
        public string Spec => inner.Spec;
        public MacAddress MacAddress => inner.MacAddress;
        public int Mtu => inner.Mtu;
        public BufferPool Buffers => inner.Buffers;
        public VnicCounters Counters => inner.Counters;
        public int WaitHandle => inner.WaitHandle;
        public int Receive(Span<PacketDescriptor> batch) => inner.Receive(batch);
        public int Transmit(ReadOnlySpan<PacketDescriptor> batch) => inner.Transmit(batch[..Math.Min(accepts, batch.Length)]);
        public void Dispose() { }
    }
}
