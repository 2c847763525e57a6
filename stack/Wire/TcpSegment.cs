using System.Buffers.Binary;
using System.Runtime.CompilerServices;

namespace Onload.Stack.Wire;

/// <summary>TCP header flags (RFC 9293 §3.1, RFC 3168 for ECE/CWR).</summary>
[Flags]
public enum TcpFlags : byte
{
    None = 0,
    Fin = 0x01,
    Syn = 0x02,
    Rst = 0x04,
    Psh = 0x08,
    Ack = 0x10,
    Urg = 0x20,
    Ece = 0x40,
    Cwr = 0x80,
}

/// <summary>The options the stack understands, parsed once from a segment (RFC 9293 §3.2, RFC 7323, RFC 2018).</summary>
public struct TcpOptions
{
    /// <summary>Maximum Segment Size, 0 when absent.</summary>
    public ushort Mss;
    /// <summary>Window scale shift, -1 when absent (RFC 7323 §2).</summary>
    public sbyte WindowScale;
    public bool SackPermitted;
    public bool HasTimestamps;
    public uint TsVal;
    public uint TsEcr;
    /// <summary>SACK blocks as they came (RFC 2018 §3; the first may be a D-SACK, RFC 2883 §4).</summary>
    public SackBlocks Sack;
    public byte SackCount;
}

/// <summary>A range of sequence numbers [Start, End), compared modulo 2^32.</summary>
public record struct SeqRange(uint Start, uint End)
{
    public readonly uint Length => End - Start;
}

/// <summary>At most four SACK blocks fit in the 40 bytes of options (RFC 2018 §3).</summary>
[InlineArray(MaxBlocks)]
public struct SackBlocks
{
    public const int MaxBlocks = 4;
    private SeqRange _block;
}

/// <summary>A TCP segment view (RFC 9293 §3.1).</summary>
public readonly ref struct TcpSegment
{
    public const int MinHeaderLength = 20;
    public const byte OptionEnd = 0;
    public const byte OptionNop = 1;
    public const byte OptionMss = 2;
    public const byte OptionWindowScale = 3;
    public const byte OptionSackPermitted = 4;
    public const byte OptionSack = 5;
    public const byte OptionTimestamps = 8;

    private readonly Span<byte> _b;

    public TcpSegment(Span<byte> segment) => _b = segment;

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

    public uint SequenceNumber
    {
        get => BinaryPrimitives.ReadUInt32BigEndian(_b[4..]);
        set => BinaryPrimitives.WriteUInt32BigEndian(_b[4..], value);
    }

    public uint AcknowledgmentNumber
    {
        get => BinaryPrimitives.ReadUInt32BigEndian(_b[8..]);
        set => BinaryPrimitives.WriteUInt32BigEndian(_b[8..], value);
    }

    /// <summary>Header length in bytes (data offset × 4).</summary>
    public int HeaderLength => (_b[12] >> 4) * 4;

    public TcpFlags Flags
    {
        get => (TcpFlags)_b[13];
        set => _b[13] = (byte)value;
    }

    public ushort Window
    {
        get => BinaryPrimitives.ReadUInt16BigEndian(_b[14..]);
        set => BinaryPrimitives.WriteUInt16BigEndian(_b[14..], value);
    }

    public ushort Checksum
    {
        get => BinaryPrimitives.ReadUInt16BigEndian(_b[16..]);
        set => BinaryPrimitives.WriteUInt16BigEndian(_b[16..], value);
    }

    public ushort UrgentPointer
    {
        get => BinaryPrimitives.ReadUInt16BigEndian(_b[18..]);
        set => BinaryPrimitives.WriteUInt16BigEndian(_b[18..], value);
    }

    public Span<byte> Options => _b[MinHeaderLength..HeaderLength];
    public Span<byte> Payload => _b[HeaderLength..];

    /// <summary>Checks a received segment once: header length inside the segment, and the checksum over the
    /// pseudo-header unless the link vouched for it.</summary>
    public static DropReason Validate(ReadOnlySpan<byte> segment, Ipv4Address source, Ipv4Address destination, bool checksumTrusted)
    {
        if (segment.Length < MinHeaderLength)
            return DropReason.TcpTruncated;
        int headerLength = (segment[12] >> 4) * 4;
        if (headerLength < MinHeaderLength || headerLength > segment.Length)
            return DropReason.TcpBadHeaderLength;
        if (!checksumTrusted && Wire.Checksum.ComputeWithPseudoHeader(source, destination, IpProtocol.Tcp, segment) != 0)
            return DropReason.TcpBadChecksum;
        return DropReason.None;
    }

    /// <summary>Parses the options the stack uses; unknown ones are skipped by their length. Returns false on a
    /// malformed option list (a length that overruns it or is below 2), which RFC 9293 §3.1 lets us treat as an
    /// error: the segment is dropped.</summary>
    public bool TryParseOptions(out TcpOptions options)
    {
        options = default;
        options.WindowScale = -1;
        var o = Options;
        int i = 0;
        while (i < o.Length)
        {
            byte kind = o[i];
            if (kind == OptionEnd)
                break;
            if (kind == OptionNop)
            {
                i++;
                continue;
            }
            if (i + 1 >= o.Length)
                return false;
            int len = o[i + 1];
            if (len < 2 || i + len > o.Length)
                return false;
            switch (kind)
            {
                case OptionMss when len == 4:
                    options.Mss = BinaryPrimitives.ReadUInt16BigEndian(o[(i + 2)..]);
                    break;
                case OptionWindowScale when len == 3:
                    options.WindowScale = (sbyte)Math.Min(o[i + 2], (byte)14); // RFC 7323 §2.3: more than 14 is 14
                    break;
                case OptionSackPermitted when len == 2:
                    options.SackPermitted = true;
                    break;
                case OptionSack when len >= 10 && (len - 2) % 8 == 0:
                    for (int b = i + 2; b < i + len && options.SackCount < SackBlocks.MaxBlocks; b += 8)
                        options.Sack[options.SackCount++] = new SeqRange(
                            BinaryPrimitives.ReadUInt32BigEndian(o[b..]), BinaryPrimitives.ReadUInt32BigEndian(o[(b + 4)..]));
                    break;
                case OptionTimestamps when len == 10:
                    options.HasTimestamps = true;
                    options.TsVal = BinaryPrimitives.ReadUInt32BigEndian(o[(i + 2)..]);
                    options.TsEcr = BinaryPrimitives.ReadUInt32BigEndian(o[(i + 6)..]);
                    break;
            }
            i += len;
        }
        return true;
    }

    /// <summary>Writes the fixed header (options, if any, are written by the caller after it).</summary>
    public void WriteHeader(ushort sourcePort, ushort destinationPort, uint seq, uint ack, TcpFlags flags, ushort window, int optionBytes)
    {
        SourcePort = sourcePort;
        DestinationPort = destinationPort;
        SequenceNumber = seq;
        AcknowledgmentNumber = ack;
        _b[12] = (byte)(((MinHeaderLength + optionBytes) / 4) << 4);
        Flags = flags;
        Window = window;
        Checksum = 0;
        UrgentPointer = 0;
    }

    /// <summary>Fills in the checksum over header and <paramref name="length"/> bytes of segment.</summary>
    public void FillChecksum(Ipv4Address source, Ipv4Address destination, int length)
    {
        Checksum = 0;
        Checksum = Wire.Checksum.ComputeWithPseudoHeader(source, destination, IpProtocol.Tcp, _b[..length]);
    }
}

/// <summary>Sequence number arithmetic modulo 2^32 (RFC 9293 §3.4, RFC 1982).</summary>
public static class Seq
{
    public static bool Lt(uint a, uint b) => (int)(a - b) < 0;
    public static bool Le(uint a, uint b) => (int)(a - b) <= 0;
    public static bool Gt(uint a, uint b) => (int)(a - b) > 0;
    public static bool Ge(uint a, uint b) => (int)(a - b) >= 0;
    /// <summary>a &lt;= x &lt; b</summary>
    public static bool InWindow(uint x, uint a, uint b) => Le(a, x) && Lt(x, b);
    public static uint Max(uint a, uint b) => Gt(a, b) ? a : b;
    public static uint Min(uint a, uint b) => Lt(a, b) ? a : b;
}
