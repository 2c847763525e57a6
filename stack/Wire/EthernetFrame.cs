using System.Buffers.Binary;
using Onload.Vnic;

namespace Onload.Stack.Wire;

/// <summary>EtherType values the stack knows (IEEE 802 numbers).</summary>
public static class EtherType
{
    public const ushort Ipv4 = 0x0800;
    public const ushort Arp = 0x0806;
    public const ushort Vlan = 0x8100;
    public const ushort Ipv6 = 0x86DD;
}

/// <summary>An Ethernet II frame header view: destination, source, EtherType, then the payload.</summary>
public readonly ref struct EthernetFrame
{
    public const int HeaderLength = 14;

    private readonly Span<byte> _b;

    public EthernetFrame(Span<byte> frame) => _b = frame;

    /// <summary>Whether <paramref name="length"/> bytes can hold an Ethernet header.</summary>
    public static bool IsLongEnough(int length) => length >= HeaderLength;

    public Span<byte> Bytes => _b;

    public MacAddress Destination
    {
        get => MacAddress.Read(_b);
        set => value.Write(_b);
    }

    public MacAddress Source
    {
        get => MacAddress.Read(_b[6..]);
        set => value.Write(_b[6..]);
    }

    public ushort EtherType
    {
        get => BinaryPrimitives.ReadUInt16BigEndian(_b[12..]);
        set => BinaryPrimitives.WriteUInt16BigEndian(_b[12..], value);
    }

    public Span<byte> Payload => _b[HeaderLength..];

    public void WriteHeader(MacAddress destination, MacAddress source, ushort etherType)
    {
        Destination = destination;
        Source = source;
        EtherType = etherType;
    }
}
