using System.Diagnostics.CodeAnalysis;

namespace Onload.Driverlink;

/// <summary>
/// One driverlink message: the header's version and request id, and the payload as the derived record's fields.
/// Messages are control-plane values (a handful per attach), so they are ordinary records; the bytes are read and
/// written through <see cref="MessageHeader"/>, <see cref="PayloadReader"/> and <see cref="PayloadWriter"/>.
/// </summary>
/// <remarks>
/// The encoding is canonical: a message that decodes re-encodes to exactly the bytes it came from (reserved bytes
/// zero, booleans 0 or 1, absent optional fields zero), which the mutation tests check.
/// </remarks>
public abstract record Message
{
    private ProtocolVersion _version = ProtocolVersion.Current;
    private uint _requestId;

    /// <summary>The header's protocol version: ours, unless a test or a Hello says otherwise.</summary>
    public ProtocolVersion Version { get => _version; init => _version = value; }

    /// <summary>Chosen by the requester and echoed in the reply; 0 on events.</summary>
    public uint RequestId { get => _requestId; init => _requestId = value; }

    public abstract MessageKind Kind { get; }

    private protected abstract void WritePayload(ref PayloadWriter writer);

    /// <summary>
    /// Writes the message into <paramref name="destination"/> (<see cref="MessageHeader.MaxMessageLength"/> bytes
    /// always suffice) and returns its length. Throws <see cref="ArgumentException"/> on a value the protocol
    /// cannot carry.
    /// </summary>
    public int Encode(Span<byte> destination)
    {
        if (destination.Length < MessageHeader.Length)
            throw new ArgumentException("too small for a message header", nameof(destination));
        var writer = new PayloadWriter(destination[MessageHeader.Length..]);
        WritePayload(ref writer);
        MessageHeader.Write(destination, Version, Kind, writer.Length, RequestId);
        return MessageHeader.Length + writer.Length;
    }

    /// <summary>The message as a new array, for tests and cold paths.</summary>
    public byte[] ToArray()
    {
        Span<byte> buffer = stackalloc byte[MessageHeader.MaxMessageLength];
        return buffer[..Encode(buffer)].ToArray();
    }

    /// <summary>
    /// Decodes one received record. On failure <paramref name="error"/> says why and nothing is thrown, whatever the bytes.
    /// </summary>
    public static bool TryDecode(ReadOnlySpan<byte> bytes, [NotNullWhen(true)] out Message? message, out DecodeError error)
    {
        message = null;
        error = MessageHeader.Validate(bytes, out var header);
        if (error != DecodeError.None)
            return false;
        var r = new PayloadReader(header.Payload);
        Message decoded = header.Kind switch
        {
            MessageKind.Hello => Hello.Read(ref r),
            MessageKind.AttachRequest => AttachRequest.Read(ref r),
            MessageKind.AttachReply => AttachReply.Read(ref r),
            MessageKind.Detach => Detach.Read(ref r),
            MessageKind.FilterInsert => FilterInsert.Read(ref r),
            MessageKind.FilterRemove => FilterRemove.Read(ref r),
            MessageKind.FilterReply => FilterReply.Read(ref r),
            MessageKind.ResolveNeighbour => ResolveNeighbour.Read(ref r),
            MessageKind.Suspended => Suspended.Read(ref r),
            MessageKind.TcpHandOver => TcpHandOver.Read(ref r),
            MessageKind.TcpHandOverReply => TcpHandOverReply.Read(ref r),
            MessageKind.LinkState => LinkStateEvent.Read(ref r),
            MessageKind.MtuChanged => MtuChangedEvent.Read(ref r),
            MessageKind.Suspend => SuspendEvent.Read(ref r),
            MessageKind.Resume => ResumeEvent.Read(ref r),
            MessageKind.Remove => RemoveEvent.Read(ref r),
            MessageKind.Neighbour => NeighbourEvent.Read(ref r),
            // Validate refused every other kind.
            _ => throw new InvalidOperationException($"kind {header.Kind} passed validation without a decoder"),
        };
        error = r.Finish();
        if (error != DecodeError.None)
            return false;
        // Stamped on the record just decoded, not on a `with` copy: events reach a running stack's reader thread,
        // where a copy would double the garbage of each.
        decoded._version = header.Version;
        decoded._requestId = header.RequestId;
        message = decoded;
        return true;
    }
}
