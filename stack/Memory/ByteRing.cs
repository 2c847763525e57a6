namespace Onload.Stack.Memory;

/// <summary>Copies into and out of a power-of-two byte ring at a position that may wrap: the TCP send and
/// receive buffers.</summary>
public static class ByteRing
{
    /// <summary>Writes <paramref name="data"/> at <paramref name="position"/> (any value; masked to the ring).</summary>
    public static void Write(Span<byte> ring, uint position, ReadOnlySpan<byte> data)
    {
        int at = (int)(position & (uint)(ring.Length - 1));
        int first = Math.Min(data.Length, ring.Length - at);
        data[..first].CopyTo(ring[at..]);
        if (first < data.Length)
            data[first..].CopyTo(ring);
    }

    /// <summary>Reads <c>destination.Length</c> bytes from <paramref name="position"/>.</summary>
    public static void Read(ReadOnlySpan<byte> ring, uint position, Span<byte> destination)
    {
        int at = (int)(position & (uint)(ring.Length - 1));
        int first = Math.Min(destination.Length, ring.Length - at);
        ring.Slice(at, first).CopyTo(destination);
        if (first < destination.Length)
            ring[..(destination.Length - first)].CopyTo(destination[first..]);
    }

    /// <summary>
    /// Doubles a ring's extent in place: <paramref name="ring"/> is the doubled ring, whose first half held the
    /// <paramref name="length"/> bytes (at most half the ring) from <paramref name="position"/>. Afterwards they are
    /// where masking by the doubled extent finds them. Those now mapped to the upper half move up by the old extent;
    /// source and destination never overlap.
    /// </summary>
    public static void Double(Span<byte> ring, uint position, int length)
    {
        int half = ring.Length / 2;
        int at = (int)(position & (uint)(ring.Length - 1));
        int from = Math.Max(at, half);
        int to = Math.Min(at + length, ring.Length);
        if (to > from)
            ring[(from - half)..(to - half)].CopyTo(ring[from..]);
    }
}
