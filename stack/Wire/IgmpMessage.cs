using System.Buffers.Binary;

namespace Onload.Stack.Wire;

/// <summary>IGMP message types (RFC 2236 §2.1, RFC 3376 §4).</summary>
public static class IgmpType
{
    public const byte MembershipQuery = 0x11;
    public const byte V1MembershipReport = 0x12;
    public const byte V2MembershipReport = 0x16;
    public const byte V2LeaveGroup = 0x17;
    public const byte V3MembershipReport = 0x22;
}

/// <summary>IGMPv3 group record types (RFC 3376 §4.2.12).</summary>
public static class IgmpRecordType
{
    public const byte ModeIsExclude = 2;
    public const byte ChangeToIncludeMode = 3;
    public const byte ChangeToExcludeMode = 4;
}

/// <summary>
/// An IGMP message view: the 8-byte IGMPv1/v2 form (type, max response time, checksum, group) which IGMPv3 queries
/// extend (RFC 3376 §4.1) and IGMPv3 reports replace (§4.2).
/// </summary>
public readonly ref struct IgmpMessage
{
    public const int Length = 8;
    public const int V3QueryMinLength = 12;

    /// <summary>224.0.0.1, every multicast host (RFC 1112).</summary>
    public static readonly Ipv4Address AllHosts = new(0xE000_0001);
    /// <summary>224.0.0.2, every multicast router: where IGMPv2 leaves go.</summary>
    public static readonly Ipv4Address AllRouters = new(0xE000_0002);
    /// <summary>224.0.0.22, where IGMPv3 reports go.</summary>
    public static readonly Ipv4Address AllIgmpv3Routers = new(0xE000_0016);

    private readonly Span<byte> _b;

    public IgmpMessage(Span<byte> message) => _b = message;

    public byte Type { get => _b[0]; set => _b[0] = value; }

    /// <summary>Max response time in tenths of a second (IGMPv3 codes above 127 are floating point, §4.1.1).</summary>
    public int MaxResponseDeciseconds
    {
        get
        {
            byte code = _b[1];
            if (code < 128)
                return code;
            int mant = code & 0xF;
            int exp = (code >> 4) & 0x7;
            return (mant | 0x10) << (exp + 3);
        }
    }

    public ushort Checksum
    {
        get => BinaryPrimitives.ReadUInt16BigEndian(_b[2..]);
        set => BinaryPrimitives.WriteUInt16BigEndian(_b[2..], value);
    }

    public Ipv4Address Group { get => Ipv4Address.Read(_b[4..]); set => value.Write(_b[4..]); }

    public static DropReason Validate(ReadOnlySpan<byte> message)
    {
        if (message.Length < Length)
            return DropReason.IgmpTruncated;
        if (Wire.Checksum.Compute(message) != 0)
            return DropReason.IgmpBadChecksum;
        return DropReason.None;
    }

    /// <summary>Writes an IGMPv2 report or leave (RFC 2236 §2).</summary>
    public static int WriteV2(Span<byte> b, byte type, Ipv4Address group)
    {
        b[..Length].Clear();
        b[0] = type;
        group.Write(b[4..]);
        BinaryPrimitives.WriteUInt16BigEndian(b[2..], Wire.Checksum.Compute(b[..Length]));
        return Length;
    }

    /// <summary>Writes an IGMPv3 report with one group record and no sources (RFC 3376 §4.2).</summary>
    public static int WriteV3Report(Span<byte> b, byte recordType, Ipv4Address group)
    {
        const int length = 8 + 8;
        b[..length].Clear();
        b[0] = IgmpType.V3MembershipReport;
        BinaryPrimitives.WriteUInt16BigEndian(b[6..], 1); // number of group records
        b[8] = recordType;
        group.Write(b[12..]);
        BinaryPrimitives.WriteUInt16BigEndian(b[2..], Wire.Checksum.Compute(b[..length]));
        return length;
    }
}
