using NUnit.Framework;
using Onload.Vnic;

namespace Onload.Tests.Vnic;

[TestFixture]
public sealed class BufferPoolTests
{
    [Test]
    public void Allocating_every_buffer_then_one_more_fails_and_is_counted()
    {
        using var pool = new BufferPool(8, 128);
        var seen = new HashSet<int>();
        for (int i = 0; i < 8; i++)
        {
            Assert.That(pool.TryAllocate(out int b), Is.True);
            Assert.That(b, Is.InRange(0, 7));
            Assert.That(seen.Add(b), Is.True, $"buffer {b} handed out twice");
        }
        Assert.Multiple(() =>
        {
            Assert.That(pool.Available, Is.Zero);
            Assert.That(pool.TryAllocate(out int none), Is.False);
            Assert.That(none, Is.EqualTo(-1));
            Assert.That(pool.Exhausted, Is.EqualTo(1));
        });
        Assert.That(pool.TryAllocate(out _), Is.False);
        Assert.That(pool.Exhausted, Is.EqualTo(2));
    }

    [Test]
    public void A_released_buffer_can_be_allocated_again()
    {
        using var pool = new BufferPool(2, 128);
        Assert.That(pool.TryAllocate(out int a), Is.True);
        Assert.That(pool.TryAllocate(out _), Is.True);
        pool.Release(a);
        Assert.That(pool.Available, Is.EqualTo(1));
        Assert.That(pool.TryAllocate(out int again), Is.True);
        Assert.That(again, Is.EqualTo(a), "the buffer just released is the one on top");
    }

    [Test]
    public void Releasing_twice_or_releasing_what_was_never_allocated_throws()
    {
        using var pool = new BufferPool(4, 128);
        Assert.That(pool.TryAllocate(out int b), Is.True);
        pool.Release(b);
        Assert.Multiple(() =>
        {
            Assert.Throws<InvalidOperationException>(() => pool.Release(b), "double release");
            Assert.Throws<InvalidOperationException>(() => pool.Release(3), "never allocated");
            Assert.Throws<InvalidOperationException>(() => pool.Release(4), "out of range");
            Assert.Throws<InvalidOperationException>(() => pool.Release(-1), "negative");
        });
        Assert.That(pool.Available, Is.EqualTo(4), "failed releases change nothing");
    }

    [Test]
    public unsafe void Buffers_do_not_overlap()
    {
        const int count = 16, size = 256;
        using var pool = new BufferPool(count, size);
        var held = new int[count];
        for (int i = 0; i < count; i++)
        {
            Assert.That(pool.TryAllocate(out held[i]), Is.True);
            var span = pool.Span(held[i]);
            Assert.That(span.Length, Is.EqualTo(size));
            span.Fill((byte)held[i]);
        }
        for (int i = 0; i < count; i++)
        {
            var span = pool.Span(held[i]);
            Assert.That(span.IndexOfAnyExcept((byte)held[i]), Is.EqualTo(-1), $"buffer {held[i]} was overwritten by another");
            Assert.That((nint)pool.Pointer(held[i]) - (nint)pool.Pointer(0), Is.EqualTo((nint)held[i] * size));
        }
    }

    [Test]
    public void A_descriptors_span_is_as_long_as_its_frame()
    {
        using var pool = new BufferPool(2, 128);
        Assert.That(pool.TryAllocate(out int b), Is.True);
        Assert.That(pool.Span(new PacketDescriptor(b, 60)).Length, Is.EqualTo(60));
        Assert.Throws<ArgumentOutOfRangeException>(() => pool.Span(2));
    }

    [Test]
    public void Sizes_are_checked()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => new BufferPool(0).Dispose());
        Assert.Throws<ArgumentOutOfRangeException>(() => new BufferPool(1, 63).Dispose());
    }

    [Test]
    public unsafe void A_pool_over_external_memory_spaces_buffers_by_its_stride_and_leaves_the_memory_alone()
    {
        // The AF_XDP shape: 2048-byte chunks, each buffer starting 256 bytes in and 1792 long.
        const int count = 4, stride = 2048, offset = 256, size = stride - offset;
        byte* area = (byte*)System.Runtime.InteropServices.NativeMemory.AlignedAlloc(count * stride, 4096);
        try
        {
            new Span<byte>(area, count * stride).Fill(0xEE);
            using (var pool = new BufferPool(area + offset, count, size, stride))
            {
                for (int i = 0; i < count; i++)
                {
                    Assert.That(pool.TryAllocate(out int b), Is.True);
                    Assert.That((nint)pool.Pointer(b), Is.EqualTo((nint)(area + offset + (long)b * stride)));
                    Assert.That(pool.Span(b).Length, Is.EqualTo(size));
                    pool.Span(b).Fill((byte)b);
                }
            }
            // Disposed without freeing the area; each chunk's headroom was never touched.
            for (int i = 0; i < count; i++)
            {
                Assert.That(new Span<byte>(area + (long)i * stride, offset).IndexOfAnyExcept((byte)0xEE), Is.EqualTo(-1));
                Assert.That(new Span<byte>(area + (long)i * stride + offset, size).IndexOfAnyExcept((byte)i), Is.EqualTo(-1));
            }
            Assert.Throws<ArgumentOutOfRangeException>(() => new BufferPool(area, count, stride + 1, stride).Dispose());
        }
        finally
        {
            System.Runtime.InteropServices.NativeMemory.AlignedFree(area);
        }
    }
}
