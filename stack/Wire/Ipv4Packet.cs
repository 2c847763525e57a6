using System.Buffers.Binary;

namespace Onload.Stack.Wire;

public static class IpProtocol
{
    public const byte Icmp = 1;
    public const byte Igmp = 2;
    public const byte Tcp = 6;
    public const byte Udp = 17;
}

/// <summary>An IPv4 header view (RFC 791 §3.1) over the start of a packet.</summary>
public readonly ref struct Ipv4Packet
{
    public const int MinHeaderLength = 20;
    public const ushort FlagDontFragment = 0x4000;
    public const ushort FlagMoreFragments = 0x2000;
    public const ushort FragmentOffsetMask = 0x1FFF;

    private readonly Span<byte> _b;

    public Ipv4Packet(Span<byte> packet) => _b = packet;

    public Span<byte> Bytes => _b;
    public byte Version => (byte)(_b[0] >> 4);
    /// <summary>Header length in bytes (IHL × 4).</summary>
    public int HeaderLength => (_b[0] & 0xF) * 4;
    public byte TypeOfService { get => _b[1]; set => _b[1] = value; }
    public byte Dscp => (byte)(_b[1] >> 2);
    public byte Ecn => (byte)(_b[1] & 3);

    public ushort TotalLength
    {
        get => BinaryPrimitives.ReadUInt16BigEndian(_b[2..]);
        set => BinaryPrimitives.WriteUInt16BigEndian(_b[2..], value);
    }

    public ushort Identification
    {
        get => BinaryPrimitives.ReadUInt16BigEndian(_b[4..]);
        set => BinaryPrimitives.WriteUInt16BigEndian(_b[4..], value);
    }

    /// <summary>The flags and fragment offset word.</summary>
    public ushort FlagsAndOffset
    {
        get => BinaryPrimitives.ReadUInt16BigEndian(_b[6..]);
        set => BinaryPrimitives.WriteUInt16BigEndian(_b[6..], value);
    }

    public bool DontFragment => (FlagsAndOffset & FlagDontFragment) != 0;
    public bool MoreFragments => (FlagsAndOffset & FlagMoreFragments) != 0;
    /// <summary>Fragment offset in bytes.</summary>
    public int FragmentOffset => (FlagsAndOffset & FragmentOffsetMask) * 8;
    public bool IsFragment => (FlagsAndOffset & (FlagMoreFragments | FragmentOffsetMask)) != 0;

    public byte TimeToLive { get => _b[8]; set => _b[8] = value; }
    public byte Protocol { get => _b[9]; set => _b[9] = value; }

    public ushort HeaderChecksum
    {
        get => BinaryPrimitives.ReadUInt16BigEndian(_b[10..]);
        set => BinaryPrimitives.WriteUInt16BigEndian(_b[10..], value);
    }

    public Ipv4Address Source { get => Ipv4Address.Read(_b[12..]); set => value.Write(_b[12..]); }
    public Ipv4Address Destination { get => Ipv4Address.Read(_b[16..]); set => value.Write(_b[16..]); }
    public Span<byte> Options => _b[MinHeaderLength..HeaderLength];
    /// <summary>The payload as the header's total length bounds it (link padding excluded).</summary>
    public Span<byte> Payload => _b[HeaderLength..TotalLength];
    public Span<byte> Header => _b[..HeaderLength];

    /// <summary>
    /// Checks a received packet once (RFC 1122 §3.2.1): version, IHL, total length against what arrived, the
    /// header checksum, and options that stay inside the header. After this the accessors cannot run off the end.
    /// </summary>
    public static DropReason Validate(ReadOnlySpan<byte> packet)
    {
        if (packet.Length < MinHeaderLength)
            return DropReason.IpTruncated;
        if (packet[0] >> 4 != 4)
            return DropReason.IpBadVersion;
        int ihl = (packet[0] & 0xF) * 4;
        if (ihl < MinHeaderLength || ihl > packet.Length)
            return DropReason.IpBadHeaderLength;
        int total = BinaryPrimitives.ReadUInt16BigEndian(packet[2..]);
        if (total < ihl)
            return DropReason.IpBadTotalLength;
        if (total > packet.Length)
            return DropReason.IpTruncated;
        if (Checksum.Compute(packet[..ihl]) != 0)
            return DropReason.IpBadChecksum;
        if (!OptionsWellFormed(packet[MinHeaderLength..ihl]))
            return DropReason.IpBadOptions;
        return DropReason.None;
    }

    /// <summary>RFC 791 options: EOL and NOP are one byte, every other carries a length of at least 2 that must fit.</summary>
    private static bool OptionsWellFormed(ReadOnlySpan<byte> options)
    {
        int i = 0;
        while (i < options.Length)
        {
            byte type = options[i];
            if (type == 0)
                return true; // End of Option List: the rest is padding
            if (type == 1)
            {
                i++;
                continue;
            }
            if (i + 1 >= options.Length)
                return false;
            int len = options[i + 1];
            if (len < 2 || i + len > options.Length)
                return false;
            i += len;
        }
        return true;
    }

    /// <summary>Writes a 20-byte header with no options and fills in its checksum.</summary>
    public void WriteHeader(Ipv4Address source, Ipv4Address destination, byte protocol, int payloadLength,
        ushort identification, byte ttl, bool dontFragment, byte tos = 0) =>
        WriteHeader(source, destination, protocol, payloadLength, identification, ttl,
            dontFragment ? FlagDontFragment : (ushort)0, tos, optionWords: 0);

    /// <summary>
    /// Writes a header whose options (<paramref name="optionWords"/> 32-bit words, already in place after the
    /// fixed 20 bytes) and flags-and-offset word are given, and fills in its checksum.
    /// </summary>
    public void WriteHeader(Ipv4Address source, Ipv4Address destination, byte protocol, int payloadLength,
        ushort identification, byte ttl, ushort flagsAndOffset, byte tos, int optionWords)
    {
        int headerLength = MinHeaderLength + optionWords * 4;
        _b[0] = (byte)(0x40 | (headerLength / 4));
        _b[1] = tos;
        TotalLength = (ushort)(headerLength + payloadLength);
        Identification = identification;
        FlagsAndOffset = flagsAndOffset;
        TimeToLive = ttl;
        Protocol = protocol;
        HeaderChecksum = 0;
        Source = source;
        Destination = destination;
        HeaderChecksum = Checksum.Compute(_b[..headerLength]);
    }
}
