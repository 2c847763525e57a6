using System.Buffers.Binary;

namespace Onload.Stack.Wire;

public static class IcmpType
{
    public const byte EchoReply = 0;
    public const byte DestinationUnreachable = 3;
    public const byte SourceQuench = 4;
    public const byte Redirect = 5;
    public const byte EchoRequest = 8;
    public const byte TimeExceeded = 11;
    public const byte ParameterProblem = 12;
}

/// <summary>Codes of Destination Unreachable (RFC 792, RFC 1122 §3.2.2.1, RFC 1812 §5.2.7.1).</summary>
public static class IcmpUnreachableCode
{
    public const byte Network = 0;
    public const byte Host = 1;
    public const byte Protocol = 2;
    public const byte Port = 3;
    public const byte FragmentationNeeded = 4;
}

/// <summary>An ICMP message view (RFC 792): type, code, checksum, four bytes of rest-of-header, then data.</summary>
public readonly ref struct IcmpPacket
{
    public const int HeaderLength = 8;

    private readonly Span<byte> _b;

    public IcmpPacket(Span<byte> packet) => _b = packet;

    public byte Type { get => _b[0]; set => _b[0] = value; }
    public byte Code { get => _b[1]; set => _b[1] = value; }

    public ushort Checksum
    {
        get => BinaryPrimitives.ReadUInt16BigEndian(_b[2..]);
        set => BinaryPrimitives.WriteUInt16BigEndian(_b[2..], value);
    }

    /// <summary>Echo identifier (echo request and reply only).</summary>
    public ushort Identifier
    {
        get => BinaryPrimitives.ReadUInt16BigEndian(_b[4..]);
        set => BinaryPrimitives.WriteUInt16BigEndian(_b[4..], value);
    }

    /// <summary>Echo sequence number (echo request and reply only).</summary>
    public ushort SequenceNumber
    {
        get => BinaryPrimitives.ReadUInt16BigEndian(_b[6..]);
        set => BinaryPrimitives.WriteUInt16BigEndian(_b[6..], value);
    }

    /// <summary>Next-hop MTU of a Fragmentation Needed message (RFC 1191 §4).</summary>
    public ushort NextHopMtu => BinaryPrimitives.ReadUInt16BigEndian(_b[6..]);

    public Span<byte> Data => _b[HeaderLength..];

    public static DropReason Validate(ReadOnlySpan<byte> message)
    {
        if (message.Length < HeaderLength)
            return DropReason.IcmpTruncated;
        if (Wire.Checksum.Compute(message) != 0)
            return DropReason.IcmpBadChecksum;
        return DropReason.None;
    }

    /// <summary>Recomputes the checksum over the whole message.</summary>
    public void FillChecksum()
    {
        Checksum = 0;
        Checksum = Wire.Checksum.Compute(_b);
    }
}
