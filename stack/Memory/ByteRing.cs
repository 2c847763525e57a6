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
}
