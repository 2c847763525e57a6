using System.Buffers.Binary;
using System.Globalization;

namespace Onload.Stack.Wire;

/// <summary>An IPv4 address held in host byte order, so comparisons and masks read naturally.</summary>
public readonly record struct Ipv4Address(uint Value) : IComparable<Ipv4Address>
{
    public static readonly Ipv4Address Any = new(0);
    public static readonly Ipv4Address Broadcast = new(0xFFFF_FFFF);

    public bool IsAny => Value == 0;
    public bool IsLimitedBroadcast => Value == 0xFFFF_FFFF;
    /// <summary>224.0.0.0/4 (RFC 5771).</summary>
    public bool IsMulticast => (Value & 0xF000_0000) == 0xE000_0000;
    /// <summary>127.0.0.0/8.</summary>
    public bool IsLoopback => (Value & 0xFF00_0000) == 0x7F00_0000;
    /// <summary>240.0.0.0/4 other than the limited broadcast.</summary>
    public bool IsReserved => (Value & 0xF000_0000) == 0xF000_0000 && !IsLimitedBroadcast;

    public static Ipv4Address Read(ReadOnlySpan<byte> four) => new(BinaryPrimitives.ReadUInt32BigEndian(four));

    public void Write(Span<byte> four) => BinaryPrimitives.WriteUInt32BigEndian(four, Value);

    public static Ipv4Address Parse(string text)
    {
        if (!TryParse(text, out var a))
            throw new FormatException($"'{text}' is not an IPv4 address");
        return a;
    }

    public static bool TryParse(string? text, out Ipv4Address address)
    {
        address = Any;
        if (text is null)
            return false;
        var parts = text.Split('.');
        if (parts.Length != 4)
            return false;
        uint v = 0;
        foreach (var p in parts)
        {
            if (p.Length is 0 or > 3 || !byte.TryParse(p, NumberStyles.None, CultureInfo.InvariantCulture, out byte b))
                return false;
            v = (v << 8) | b;
        }
        address = new Ipv4Address(v);
        return true;
    }

    public static Ipv4Address FromPrefixLength(int prefixLength) =>
        new(prefixLength == 0 ? 0 : 0xFFFF_FFFFu << (32 - prefixLength));

    public int CompareTo(Ipv4Address other) => Value.CompareTo(other.Value);

    public override string ToString() => string.Create(CultureInfo.InvariantCulture,
        $"{Value >> 24}.{(Value >> 16) & 0xFF}.{(Value >> 8) & 0xFF}.{Value & 0xFF}");
}

/// <summary>An address with its prefix length, as given to <c>--addr 10.0.0.2/24</c>.</summary>
public readonly record struct Ipv4Cidr(Ipv4Address Address, int PrefixLength)
{
    public Ipv4Address Mask => Ipv4Address.FromPrefixLength(PrefixLength);
    public Ipv4Address Network => new(Address.Value & Mask.Value);
    public Ipv4Address DirectedBroadcast => new(Address.Value | ~Mask.Value);

    public bool Contains(Ipv4Address a) => (a.Value & Mask.Value) == (Address.Value & Mask.Value);

    public static Ipv4Cidr Parse(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        int slash = text.IndexOf('/', StringComparison.Ordinal);
        if (slash < 0)
            throw new FormatException($"'{text}' needs a prefix length, e.g. 10.0.0.2/24");
        var address = Ipv4Address.Parse(text[..slash]);
        if (!int.TryParse(text[(slash + 1)..], NumberStyles.None, CultureInfo.InvariantCulture, out int prefix) || prefix > 32)
            throw new FormatException($"'{text}': prefix length must be 0..32");
        return new Ipv4Cidr(address, prefix);
    }

    public override string ToString() => $"{Address}/{PrefixLength}";
}

/// <summary>An IPv4 address and a port.</summary>
public readonly record struct Ipv4Endpoint(Ipv4Address Address, ushort Port)
{
    public override string ToString() => $"{Address}:{Port}";
}
