using System.Buffers.Binary;
using System.Globalization;

namespace Onload.Vnic;

/// <summary>A 48-bit IEEE 802 MAC address held in the low bits of a ulong, most significant octet first.</summary>
public readonly record struct MacAddress(ulong Value)
{
    public static readonly MacAddress Broadcast = new(0xFFFF_FFFF_FFFFUL);
    public static readonly MacAddress Zero = new(0);

    public bool IsBroadcast => Value == Broadcast.Value;

    /// <summary>The I/G bit: set on group (multicast and broadcast) addresses.</summary>
    public bool IsGroup => (Value & 0x0100_0000_0000UL) != 0;

    public static MacAddress Read(ReadOnlySpan<byte> six) =>
        new(((ulong)BinaryPrimitives.ReadUInt16BigEndian(six) << 32) | BinaryPrimitives.ReadUInt32BigEndian(six[2..]));

    public void Write(Span<byte> six)
    {
        BinaryPrimitives.WriteUInt16BigEndian(six, (ushort)(Value >> 32));
        BinaryPrimitives.WriteUInt32BigEndian(six[2..], (uint)Value);
    }

    /// <summary>The MAC of an IPv4 multicast group (RFC 1112 §6.4): 01:00:5e followed by the group's low 23 bits;
    /// <paramref name="group"/> in host byte order.</summary>
    public static MacAddress ForIpv4Multicast(uint group) => new(0x0100_5E00_0000UL | (group & 0x7F_FFFF));

    /// <summary>A locally administered unicast address (bit 1 set, bit 0 clear in the first octet).</summary>
    public static MacAddress LocallyAdministered(ulong random) =>
        new(((random & 0xFFFF_FFFF_FFFFUL) | 0x0200_0000_0000UL) & ~0x0100_0000_0000UL);

    public static MacAddress Parse(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var parts = text.Split(':', '-');
        if (parts.Length != 6)
            throw new FormatException($"'{text}' is not a MAC address (want six hex octets)");
        ulong v = 0;
        foreach (var p in parts)
            v = (v << 8) | byte.Parse(p, NumberStyles.HexNumber, CultureInfo.InvariantCulture);
        return new MacAddress(v);
    }

    public override string ToString()
    {
        Span<byte> b = stackalloc byte[6];
        Write(b);
        return string.Create(CultureInfo.InvariantCulture, $"{b[0]:x2}:{b[1]:x2}:{b[2]:x2}:{b[3]:x2}:{b[4]:x2}:{b[5]:x2}");
    }
}
