using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using System.Text;
using System.Text.Unicode;
using Onload.Vnic;

namespace Onload.Driverlink;

/// <summary>
/// Reads a payload's fields in order. The first problem sticks: later reads return zero and leave it in
/// <see cref="Error"/>, so a decoder reads straight through and checks once at the end with <see cref="Finish"/>.
/// </summary>
internal ref struct PayloadReader
{
    private readonly ReadOnlySpan<byte> _b;
    private int _position;

    public PayloadReader(ReadOnlySpan<byte> payload) => _b = payload;

    public DecodeError Error { get; private set; }

    public void Fail(DecodeError error)
    {
        if (Error == DecodeError.None)
            Error = error;
    }

    private ReadOnlySpan<byte> Take(int count)
    {
        if (Error != DecodeError.None)
            return default;
        if (_b.Length - _position < count)
        {
            Error = DecodeError.Truncated;
            return default;
        }
        var s = _b.Slice(_position, count);
        _position += count;
        return s;
    }

    public byte U8()
    {
        var s = Take(1);
        return s.IsEmpty ? (byte)0 : s[0];
    }

    public ushort U16()
    {
        var s = Take(2);
        return s.IsEmpty ? (ushort)0 : BinaryPrimitives.ReadUInt16LittleEndian(s);
    }

    public uint U32()
    {
        var s = Take(4);
        return s.IsEmpty ? 0 : BinaryPrimitives.ReadUInt32LittleEndian(s);
    }

    /// <summary>An IPv4 address in network order, returned in host order.</summary>
    public uint Ipv4()
    {
        var s = Take(4);
        return s.IsEmpty ? 0 : BinaryPrimitives.ReadUInt32BigEndian(s);
    }

    /// <summary>A MAC in network order.</summary>
    public MacAddress Mac()
    {
        var s = Take(6);
        return s.IsEmpty ? MacAddress.Zero : MacAddress.Read(s);
    }

    /// <summary>An enum as wide as its underlying type (one or two bytes), whose value must be one it names.</summary>
    public TEnum Enum<TEnum>() where TEnum : struct, System.Enum
    {
        var v = Unsafe.SizeOf<TEnum>() == 1 ? Unsafe.BitCast<byte, TEnum>(U8()) : Unsafe.BitCast<ushort, TEnum>(U16());
        if (!System.Enum.IsDefined(v))
            Fail(DecodeError.UnknownEnumValue);
        return v;
    }

    /// <summary>A byte that must be 0 or 1.</summary>
    public bool Bool()
    {
        byte v = U8();
        if (v > 1)
            Fail(DecodeError.BadValue);
        return v == 1;
    }

    /// <summary>Bytes that must be zero (reserved for later minor versions).</summary>
    public void Reserved(int count)
    {
        foreach (byte b in Take(count))
        {
            if (b != 0)
            {
                Fail(DecodeError.BadValue);
                return;
            }
        }
    }

    /// <summary>A string: one length byte, then that many bytes of UTF-8 without a NUL.</summary>
    public string String(int maxBytes)
    {
        int length = U8();
        var s = Take(length);
        if (Error != DecodeError.None)
            return "";
        if (length > maxBytes)
        {
            Fail(DecodeError.StringTooLong);
            return "";
        }
        if (!Utf8.IsValid(s))
        {
            Fail(DecodeError.InvalidUtf8);
            return "";
        }
        if (s.Contains((byte)0))
        {
            Fail(DecodeError.StringHasNul);
            return "";
        }
        return Encoding.UTF8.GetString(s);
    }

    /// <summary>The decoder's verdict: the first error, or <see cref="DecodeError.TrailingBytes"/> if bytes are left.</summary>
    public readonly DecodeError Finish() =>
        Error != DecodeError.None ? Error : _position != _b.Length ? DecodeError.TrailingBytes : DecodeError.None;
}
