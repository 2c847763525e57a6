using System.Buffers.Binary;

namespace Onload.Stack.Wire;

/// <summary>A UDP datagram view (RFC 768).</summary>
public readonly ref struct UdpDatagram
{
    public const int HeaderLength = 8;

    private readonly Span<byte> _b;

    public UdpDatagram(Span<byte> datagram) => _b = datagram;

    public ushort SourcePort
    {
        get => BinaryPrimitives.ReadUInt16BigEndian(_b);
        set => BinaryPrimitives.WriteUInt16BigEndian(_b, value);
    }

    public ushort DestinationPort
    {
        get => BinaryPrimitives.ReadUInt16BigEndian(_b[2..]);
        set => BinaryPrimitives.WriteUInt16BigEndian(_b[2..], value);
    }

    public ushort Length
    {
        get => BinaryPrimitives.ReadUInt16BigEndian(_b[4..]);
        set => BinaryPrimitives.WriteUInt16BigEndian(_b[4..], value);
    }

    public ushort Checksum
    {
        get => BinaryPrimitives.ReadUInt16BigEndian(_b[6..]);
        set => BinaryPrimitives.WriteUInt16BigEndian(_b[6..], value);
    }

    /// <summary>The payload as the UDP length field bounds it.</summary>
    public Span<byte> Payload => _b[HeaderLength..Length];

    /// <summary>
    /// Checks a received datagram: the length field fits what IP delivered, and the checksum verifies unless the
    /// sender sent none (zero, allowed over IPv4 by RFC 768) or the link vouched for it.
    /// </summary>
    public static DropReason Validate(ReadOnlySpan<byte> datagram, Ipv4Address source, Ipv4Address destination, bool checksumTrusted)
    {
        if (datagram.Length < HeaderLength)
            return DropReason.UdpTruncated;
        int length = BinaryPrimitives.ReadUInt16BigEndian(datagram[4..]);
        if (length < HeaderLength || length > datagram.Length)
            return DropReason.UdpBadLength;
        ushort checksum = BinaryPrimitives.ReadUInt16BigEndian(datagram[6..]);
        if (checksum != 0 && !checksumTrusted &&
            Wire.Checksum.ComputeWithPseudoHeader(source, destination, IpProtocol.Udp, datagram[..length]) != 0)
            return DropReason.UdpBadChecksum;
        return DropReason.None;
    }

    /// <summary>Writes the header for a payload held elsewhere (the datagram is assembled as it is copied out),
    /// with its checksum over that payload (RFC 768: 0 is sent as 0xFFFF).</summary>
    public void Write(ushort sourcePort, ushort destinationPort, ReadOnlySpan<byte> payload, Ipv4Address source, Ipv4Address destination)
    {
        int length = HeaderLength + payload.Length;
        SourcePort = sourcePort;
        DestinationPort = destinationPort;
        Length = (ushort)length;
        Checksum = 0;
        ulong sum = Wire.Checksum.PseudoHeader(source, destination, IpProtocol.Udp, length);
        sum = Wire.Checksum.Add(Wire.Checksum.Add(sum, _b[..HeaderLength]), payload);
        ushort c = Wire.Checksum.Finish(sum);
        Checksum = c == 0 ? (ushort)0xFFFF : c;
    }

    /// <summary>Writes the header for a payload already in place after it, with its checksum (RFC 768: 0 is sent as 0xFFFF).</summary>
    /// <remarks>Summing header and payload apart gives the same checksum as one pass: the header's length is even
    /// (RFC 1071 §2(A)).</remarks>
    public void Write(ushort sourcePort, ushort destinationPort, int payloadLength, Ipv4Address source, Ipv4Address destination) =>
        Write(sourcePort, destinationPort, _b.Slice(HeaderLength, payloadLength), source, destination);
}
