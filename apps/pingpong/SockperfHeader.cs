using System.Buffers.Binary;

namespace Onload.Apps.PingPong;

/// <summary>
/// A view of sockperf's message header (sockperf's <c>MsgHeader</c>, src/message.h), so that an unmodified
/// <c>sockperf server</c> answers us and an unmodified <c>sockperf ping-pong</c> could talk to our server.
/// </summary>
/// <remarks>
/// Every field is in network byte order; the header is 14 bytes and the rest of the message is padding up to
/// the message size. One UDP datagram carries one message.
/// <code>
///   0  u64  sequence number
///   8  u16  flags: 1 = from the client, 2 = pong request (answer me), 4 = warm-up (do not answer)
///  10  u32  length of the whole message, header included
/// </code>
/// The server drops a message without the client flag; for a pong request it clears the client flag and sends
/// the message back unchanged otherwise (same sequence number, same length) to the sender's address and port.
/// </remarks>
internal readonly ref struct SockperfHeader(Span<byte> bytes)
{
    public const int Length = 14;
    public const ushort FlagClient = 1;
    public const ushort FlagPongRequest = 2;
    public const ushort FlagWarmup = 4;

    private readonly Span<byte> _bytes = bytes;

    public ulong Sequence
    {
        get => BinaryPrimitives.ReadUInt64BigEndian(_bytes);
        set => BinaryPrimitives.WriteUInt64BigEndian(_bytes, value);
    }

    public ushort Flags
    {
        get => BinaryPrimitives.ReadUInt16BigEndian(_bytes[8..]);
        set => BinaryPrimitives.WriteUInt16BigEndian(_bytes[8..], value);
    }

    public uint MessageLength
    {
        get => BinaryPrimitives.ReadUInt32BigEndian(_bytes[10..]);
        set => BinaryPrimitives.WriteUInt32BigEndian(_bytes[10..], value);
    }

    public bool IsClient => (Flags & FlagClient) != 0;
    public bool IsPongRequest => (Flags & FlagPongRequest) != 0;
    public bool IsWarmup => (Flags & FlagWarmup) != 0;

    /// <summary>Whether <paramref name="datagram"/> is long enough to hold the header it claims and the
    /// length it claims fits inside it.</summary>
    public static bool IsValid(ReadOnlySpan<byte> datagram) =>
        datagram.Length >= Length && BinaryPrimitives.ReadUInt32BigEndian(datagram[10..]) is var n
        && n >= Length && n <= (uint)datagram.Length;

    /// <summary>Writes a client's pong request: what <c>sockperf ping-pong</c> sends for every measured message.</summary>
    public static void WritePongRequest(Span<byte> message, ulong sequence)
    {
        var h = new SockperfHeader(message);
        h.Sequence = sequence;
        h.Flags = FlagClient | FlagPongRequest;
        h.MessageLength = (uint)message.Length;
    }
}
