using System.Buffers.Binary;
using System.Runtime.InteropServices;

namespace Onload.Stack.Wire;

/// <summary>The Internet checksum (RFC 1071) and its incremental update (RFC 1624).</summary>
public static class Checksum
{
    /// <summary>Adds <paramref name="data"/> to a running 32-bit one's-complement sum (not yet folded).</summary>
    /// <remarks>Sums 32-bit words into a 64-bit accumulator; byte order can be fixed at the end (RFC 1071 §2(B)),
    /// so words are read in native order and the folded result is swapped once on little-endian machines.</remarks>
    public static ulong Add(ulong sum, ReadOnlySpan<byte> data)
    {
        ulong acc = 0;
        var words = MemoryMarshal.Cast<byte, uint>(data);
        foreach (uint w in words)
            acc += w;
        int tail = words.Length * 4;
        if (data.Length - tail >= 2)
        {
            acc += MemoryMarshal.Read<ushort>(data[tail..]);
            tail += 2;
        }
        if (tail < data.Length)
            acc += BitConverter.IsLittleEndian ? data[tail] : (uint)data[tail] << 8;
        ulong folded = FoldToUInt16(acc);
        if (BitConverter.IsLittleEndian)
            folded = BinaryPrimitives.ReverseEndianness((ushort)folded);
        return sum + folded;
    }

    /// <summary>Adds a 16-bit value given in host order.</summary>
    public static ulong Add(ulong sum, ushort value) => sum + value;

    /// <summary>Adds a 32-bit value given in host order, as two 16-bit words.</summary>
    public static ulong Add(ulong sum, uint value) => sum + (value >> 16) + (value & 0xFFFF);

    public static ushort FoldToUInt16(ulong sum)
    {
        while (sum >> 16 != 0)
            sum = (sum & 0xFFFF) + (sum >> 16);
        return (ushort)sum;
    }

    /// <summary>The checksum field value: the complement of the folded sum.</summary>
    public static ushort Finish(ulong sum) => (ushort)~FoldToUInt16(sum);

    public static ushort Compute(ReadOnlySpan<byte> data) => Finish(Add(0, data));

    /// <summary>The pseudo-header sum of RFC 768 / RFC 9293 §3.1 for UDP and TCP over IPv4.</summary>
    public static ulong PseudoHeader(Ipv4Address source, Ipv4Address destination, byte protocol, int length) =>
        Add(Add(Add(0UL, source.Value), destination.Value), (uint)(protocol + length));

    /// <summary>RFC 1624 eqn. 3: the new checksum after one 16-bit word of the covered data changes from
    /// <paramref name="oldWord"/> to <paramref name="newWord"/>.</summary>
    public static ushort Update(ushort checksum, ushort oldWord, ushort newWord)
    {
        ulong sum = (ushort)~checksum + (ulong)(ushort)~oldWord + newWord;
        return (ushort)~FoldToUInt16(sum);
    }

    /// <summary>RFC 1624 for a 32-bit field (an address) changing.</summary>
    public static ushort Update(ushort checksum, uint oldValue, uint newValue) =>
        Update(Update(checksum, (ushort)(oldValue >> 16), (ushort)(newValue >> 16)), (ushort)oldValue, (ushort)newValue);
}
