using Onload.Stack.Memory;

namespace Onload.Tests.Memory;

[TestFixture]
public class ByteRingTests
{
    /// <summary>Every start position and fill of an 8-byte ring: after doubling to 16, reading at the same positions
    /// gives the same bytes.</summary>
    [Test]
    public void Doubling_keeps_every_byte_where_the_doubled_ring_looks_for_it()
    {
        for (uint start = 0; start < 40; start++)
        {
            for (int length = 0; length <= 8; length++)
            {
                var data = Enumerable.Range(1, length).Select(i => (byte)i).ToArray();
                var ring = new byte[16];
                ByteRing.Write(ring.AsSpan(0, 8), start, data);
                ByteRing.Double(ring, start, length);
                var back = new byte[length];
                ByteRing.Read(ring, start, back);
                Assert.That(back, Is.EqualTo(data), $"start {start}, length {length}");
            }
        }
    }
}
