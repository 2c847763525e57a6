using System.Security.Cryptography;
using NUnit.Framework;
using Onload.Vnic;
using Onload.Vnic.Sim;

namespace Onload.Tests.Vnic;

[TestFixture]
public sealed class SimLinkTests
{
    private static readonly LinkFaults Rough = new()
    {
        Loss = 0.05,
        Duplicate = 0.05,
        Reorder = 0.05,
        Corrupt = 0.05,
        MinDelayNs = 1_000,
        MaxDelayNs = 20_000,
    };

    [Test]
    public void A_frame_arrives_intact_once_its_delay_has_passed()
    {
        var clock = new VirtualClock();
        using var link = new SimLink(seed: 1, clock);
        byte[] frame = Frame(0, 100);
        Assert.That(link.A.Transmit([InPool(link.A.Buffers, frame)]), Is.EqualTo(1));

        var batch = new PacketDescriptor[4];
        Assert.That(link.B.Receive(batch), Is.Zero, "still on the wire");
        Assert.That(link.NextDelivery, Is.EqualTo(1_000));
        clock.Advance(1_000);
        Assert.That(link.B.Receive(batch), Is.EqualTo(1));
        Assert.Multiple(() =>
        {
            Assert.That(link.B.Buffers.Span(batch[0]).ToArray(), Is.EqualTo(frame));
            Assert.That(link.AToB.Sent, Is.EqualTo(1));
            Assert.That(link.AToB.Delivered, Is.EqualTo(1));
            Assert.That(link.A.Counters.TxFrames, Is.EqualTo(1));
            Assert.That(link.B.Counters.RxFrames, Is.EqualTo(1));
            Assert.That(link.B.Counters.RxBytes, Is.EqualTo(100));
            Assert.That(link.A.Buffers.Available, Is.EqualTo(link.A.Buffers.Count), "Transmit released the sender's buffer");
        });
        link.B.Buffers.Release(batch[0].Buffer);
        Assert.That(link.B.Receive(batch), Is.Zero, "nothing else");
    }

    [Test]
    public void Every_frame_is_delivered_or_counted_lost_and_a_reordered_frame_lands_after_the_next()
    {
        var clock = new VirtualClock();
        using var link = new SimLink(seed: 3, clock, new LinkFaults { Reorder = 0.3, Duplicate = 0.1, Loss = 0.1 });
        var batch = new PacketDescriptor[64];
        var order = new List<int>();
        for (int i = 0; i < 1000; i++)
        {
            link.A.Transmit([InPool(link.A.Buffers, Frame(i, 64))]);
            clock.Advance(10_000);
            int n = link.B.Receive(batch);
            for (int k = 0; k < n; k++)
            {
                order.Add(BitConverter.ToInt32(link.B.Buffers.Span(batch[k])));
                link.B.Buffers.Release(batch[k].Buffer);
            }
        }
        // The last frame sent may be the one held back for reordering: one more send releases it.
        link.A.Transmit([InPool(link.A.Buffers, Frame(1000, 64))]);
        clock.Advance(10_000);
        int m = link.B.Receive(batch);
        for (int k = 0; k < m; k++)
            link.B.Buffers.Release(batch[k].Buffer);
        var s = link.AToB;
        Assert.That(s.Delivered, Is.GreaterThanOrEqualTo(s.Sent - 1 + s.Duplicated - s.Lost - 1), "nothing vanishes on the wire");
        Assert.That(order.Zip(order.Skip(1)).Count(p => p.Second < p.First), Is.GreaterThan(0), "some frames arrive out of order");
    }

    [Test]
    public void The_same_seed_gives_the_same_run()
    {
        var first = Run(seed: 42, Rough, frames: 3_000);
        var second = Run(seed: 42, Rough, frames: 3_000);
        Assert.Multiple(() =>
        {
            Assert.That(second.Digest, Is.EqualTo(first.Digest), "delivered bytes, in order");
            Assert.That(second.Stats, Is.EqualTo(first.Stats));
            Assert.That(first.Stats.Lost, Is.GreaterThan(0), "the faults did happen");
            Assert.That(first.Stats.Duplicated, Is.GreaterThan(0));
            Assert.That(first.Stats.Reordered, Is.GreaterThan(0));
            Assert.That(first.Stats.Corrupted, Is.GreaterThan(0));
        });
    }

    [Test]
    public void A_different_seed_gives_a_different_run()
    {
        var a = Run(seed: 42, Rough, frames: 3_000);
        var b = Run(seed: 43, Rough, frames: 3_000);
        Assert.That(b.Digest, Is.Not.EqualTo(a.Digest));
    }

    [Test]
    public void Loss_over_many_frames_is_near_the_configured_rate()
    {
        const int frames = 10_000;
        const double loss = 0.1;
        var r = Run(seed: 7, new LinkFaults { Loss = loss }, frames);
        // Binomial: mean 1000, standard deviation 30; allow four of them.
        Assert.Multiple(() =>
        {
            Assert.That(r.Stats.Lost, Is.InRange(frames * loss - 120, frames * loss + 120));
            Assert.That(r.Stats.Delivered, Is.EqualTo(r.Stats.Sent - r.Stats.Lost), "no other fault");
            Assert.That(r.Received, Is.EqualTo(r.Stats.Delivered));
        });
    }

    private readonly record struct Stats(long Sent, long Delivered, long Lost, long Duplicated, long Reordered, long Corrupted, long DroppedQueueFull);

    private readonly record struct RunResult(string Digest, Stats Stats, long Received);

    /// <summary>Sends frames A to B one every 2 µs of virtual time, receiving as it goes; hashes what B got, in order.</summary>
    private static RunResult Run(ulong seed, LinkFaults faults, int frames)
    {
        var clock = new VirtualClock();
        using var link = new SimLink(seed, clock, aToB: faults);
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        var batch = new PacketDescriptor[64];
        long received = 0;

        void Drain()
        {
            int n;
            while ((n = link.B.Receive(batch)) > 0)
            {
                for (int i = 0; i < n; i++)
                {
                    hash.AppendData(link.B.Buffers.Span(batch[i]));
                    link.B.Buffers.Release(batch[i].Buffer);
                }
                received += n;
            }
        }

        for (int i = 0; i < frames; i++)
        {
            Assert.That(link.A.Transmit([InPool(link.A.Buffers, Frame(i, 60 + i % 200))]), Is.EqualTo(1));
            clock.Advance(2_000);
            Drain();
        }
        clock.Advance(1_000_000);
        // Send one more so a frame held back for reordering behind the last one is let go, then drain all.
        link.A.Transmit([InPool(link.A.Buffers, Frame(frames, 60))]);
        clock.Advance(1_000_000);
        Drain();

        var s = link.AToB;
        return new RunResult(Convert.ToHexString(hash.GetHashAndReset()),
            new Stats(s.Sent, s.Delivered, s.Lost, s.Duplicated, s.Reordered, s.Corrupted, s.DroppedQueueFull), received);
    }

    private static byte[] Frame(int index, int length)
    {
        var f = new byte[length];
        for (int i = 0; i < length; i++)
            f[i] = (byte)(index * 7 + i);
        BitConverter.TryWriteBytes(f.AsSpan(0, 4), index);
        return f;
    }

    private static PacketDescriptor InPool(BufferPool pool, byte[] frame)
    {
        Assert.That(pool.TryAllocate(out int b), Is.True, "sender pool has a buffer");
        frame.CopyTo(pool.Span(b));
        return new PacketDescriptor(b, frame.Length);
    }
}
