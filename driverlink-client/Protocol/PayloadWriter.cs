using System.Buffers.Binary;
using System.Text;
using Onload.Vnic;

namespace Onload.Driverlink;

/// <summary>
/// Writes a payload's fields in order, mirroring <see cref="PayloadReader"/>. A value the protocol cannot carry
/// (a string too long, a NUL in it) is the sender's bug and throws <see cref="ArgumentException"/>.
/// </summary>
internal ref struct PayloadWriter
{
    private readonly Span<byte> _b;

    public PayloadWriter(Span<byte> destination) => _b = destination;

    public int Length { get; private set; }

    private Span<byte> Take(int count)
    {
        if (_b.Length - Length < count)
            throw new ArgumentException($"the destination holds {_b.Length} bytes, too few for this message", "destination");
        var s = _b.Slice(Length, count);
        Length += count;
        return s;
    }

    public void U8(byte v) => Take(1)[0] = v;

    public void U16(ushort v) => BinaryPrimitives.WriteUInt16LittleEndian(Take(2), v);

    public void U32(uint v) => BinaryPrimitives.WriteUInt32LittleEndian(Take(4), v);

    public void Ipv4(uint hostOrder) => BinaryPrimitives.WriteUInt32BigEndian(Take(4), hostOrder);

    public void Mac(MacAddress mac) => mac.Write(Take(6));

    public void Bool(bool v) => U8(v ? (byte)1 : (byte)0);

    public void Reserved(int count) => Take(count).Clear();

    public void String(string v, int maxBytes, string field)
    {
        ArgumentNullException.ThrowIfNull(v, field);
        int length = Encoding.UTF8.GetByteCount(v);
        if (length > maxBytes)
            throw new ArgumentException($"{field} is {length} bytes of UTF-8; the protocol carries at most {maxBytes}", field);
        if (v.Contains('\0', StringComparison.Ordinal))
            throw new ArgumentException($"{field} holds a NUL", field);
        U8((byte)length);
        // Lone surrogates would be replaced by U+FFFD: the bytes sent are always valid UTF-8.
        if (Encoding.UTF8.GetBytes(v, Take(length)) != length)
            throw new ArgumentException($"{field} did not encode to {length} bytes", field);
    }
}
