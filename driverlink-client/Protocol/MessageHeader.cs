using System.Buffers.Binary;

namespace Onload.Driverlink;

/// <summary>
/// A view of the fixed 16-byte header that starts every driverlink message. Integers are little-endian (both
/// peers are on one host, and every Linux target of .NET is little-endian); IPv4 addresses and MACs inside
/// payloads are in network order, as they appear on the wire and in a hexdump.
/// </summary>
/// <remarks>
/// <code>
/// offset  size  field
///  0      4     magic "ODLK"
///  4      1     protocol version major
///  5      1     protocol version minor
///  6      2     kind (MessageKind)
///  8      2     flags (MessageFlags; none defined in 1.0)
/// 10      2     payload length (bytes after the header)
/// 12      4     request id (echoed by a reply; 0 on events)
/// </code>
/// One message is one SOCK_SEQPACKET record, so the payload length must equal the record's length minus 16.
/// </remarks>
public readonly ref struct MessageHeader
{
    public const int Length = 16;
    /// <summary>The largest message, header included, either side sends or accepts.</summary>
    public const int MaxMessageLength = 4096;
    public const int MaxPayloadLength = MaxMessageLength - Length;
    /// <summary>"ODLK" read as a little-endian integer.</summary>
    public const uint Magic = 0x4B4C444F;

    private readonly ReadOnlySpan<byte> _b;

    private MessageHeader(ReadOnlySpan<byte> message) => _b = message;

    public uint MagicValue => BinaryPrimitives.ReadUInt32LittleEndian(_b);
    public ProtocolVersion Version => new(_b[4], _b[5]);
    public MessageKind Kind => (MessageKind)BinaryPrimitives.ReadUInt16LittleEndian(_b[6..]);
    public MessageFlags Flags => (MessageFlags)BinaryPrimitives.ReadUInt16LittleEndian(_b[8..]);
    public int PayloadLength => BinaryPrimitives.ReadUInt16LittleEndian(_b[10..]);
    public uint RequestId => BinaryPrimitives.ReadUInt32LittleEndian(_b[12..]);
    public ReadOnlySpan<byte> Payload => _b.Slice(Length, PayloadLength);

    /// <summary>
    /// Checks a received record's header against its length; on <see cref="DecodeError.None"/> the view's
    /// accessors are safe. The checks run in a fixed order, so each malformation has one answer.
    /// </summary>
    public static DecodeError Validate(ReadOnlySpan<byte> message, out MessageHeader header)
    {
        header = default;
        if (message.Length < Length)
            return DecodeError.Truncated;
        var h = new MessageHeader(message);
        if (h.MagicValue != Magic)
            return DecodeError.BadMagic;
        if (message.Length > MaxMessageLength || h.PayloadLength > MaxPayloadLength)
            return DecodeError.Oversized;
        if (h.PayloadLength != message.Length - Length)
            return DecodeError.LengthMismatch;
        // Hello's layout is frozen so that peers of different major versions can still tell each other which they speak.
        if (!h.Version.IsCompatibleWith(ProtocolVersion.Current) && h.Kind != MessageKind.Hello)
            return DecodeError.UnsupportedVersion;
        if (!Enum.IsDefined(h.Kind))
            return DecodeError.UnknownKind;
        if (h.Flags != MessageFlags.None)
            return DecodeError.UnknownFlags;
        header = h;
        return DecodeError.None;
    }

    internal static void Write(Span<byte> destination, ProtocolVersion version, MessageKind kind, int payloadLength, uint requestId)
    {
        BinaryPrimitives.WriteUInt32LittleEndian(destination, Magic);
        destination[4] = version.Major;
        destination[5] = version.Minor;
        BinaryPrimitives.WriteUInt16LittleEndian(destination[6..], (ushort)kind);
        BinaryPrimitives.WriteUInt16LittleEndian(destination[8..], (ushort)MessageFlags.None);
        BinaryPrimitives.WriteUInt16LittleEndian(destination[10..], checked((ushort)payloadLength));
        BinaryPrimitives.WriteUInt32LittleEndian(destination[12..], requestId);
    }
}
