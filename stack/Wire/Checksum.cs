using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace Onload.Stack.Wire;

/// <summary>The Internet checksum (RFC 1071) and its incremental update (RFC 1624).</summary>
public static class Checksum
{
    /// <summary>Adds <paramref name="data"/> to a running one's-complement sum (not yet folded).</summary>
    /// <remarks>Sums 32-bit words into 64-bit accumulators (so no carry is lost before the end); byte order can be
    /// fixed at the end (RFC 1071 §2(B)), so words are read in native order and the folded result is swapped once
    /// on little-endian machines. Where the CPU has 256-bit vectors it takes 64 bytes a step: each 64-bit lane
    /// adds the low and the high halves of its two words with an AND and a shift (no shuffles), into four
    /// accumulators that do not wait on one another. <paramref name="data"/> must start at an even offset of the
    /// summed message.</remarks>
    public static ulong Add(ulong sum, ReadOnlySpan<byte> data)
    {
        ulong acc = 0;
        int start = 0;
        if (Vector256.IsHardwareAccelerated && data.Length >= 64)
        {
            var lowHalves = Vector256.Create(0xFFFF_FFFFUL);
            var low0 = Vector256<ulong>.Zero;
            var low1 = Vector256<ulong>.Zero;
            var high0 = Vector256<ulong>.Zero;
            var high1 = Vector256<ulong>.Zero;
            ref byte first = ref MemoryMarshal.GetReference(data);
            for (; start <= data.Length - 64; start += 64)
            {
                var a = Vector256.LoadUnsafe(ref first, (nuint)start).AsUInt64();
                var b = Vector256.LoadUnsafe(ref first, (nuint)start + 32).AsUInt64();
                low0 += a & lowHalves;
                high0 += Vector256.ShiftRightLogical(a, 32);
                low1 += b & lowHalves;
                high1 += Vector256.ShiftRightLogical(b, 32);
            }
            acc = Vector256.Sum(low0 + low1 + high0 + high1);
        }
        var rest = data[start..];
        var words = MemoryMarshal.Cast<byte, uint>(rest);
        foreach (uint w in words)
            acc += w;
        int tail = words.Length * 4;
        if (rest.Length - tail >= 2)
        {
            acc += MemoryMarshal.Read<ushort>(rest[tail..]);
            tail += 2;
        }
        if (tail < rest.Length)
            acc += BitConverter.IsLittleEndian ? rest[tail] : (uint)rest[tail] << 8;
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

    /// <summary>The checksum of a whole UDP or TCP message over IPv4, pseudo-header included: the field value
    /// to send, or 0 on receipt when the message (its checksum field included) is intact.</summary>
    public static ushort ComputeWithPseudoHeader(Ipv4Address source, Ipv4Address destination, byte protocol, ReadOnlySpan<byte> message) =>
        Finish(Add(PseudoHeader(source, destination, protocol, message.Length), message));

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
