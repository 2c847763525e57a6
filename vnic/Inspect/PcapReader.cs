using System.Buffers.Binary;

namespace Onload.Vnic.Inspect;

/// <summary>One frame of a pcap file.</summary>
/// <param name="TimestampNs">Wall-clock time, nanoseconds since the Unix epoch (microsecond files: a multiple of 1,000).</param>
/// <param name="OriginalLength">The frame's length on the wire; more than <c>Data.Length</c> when the snap length cut it.</param>
/// <param name="Data">The captured bytes.</param>
public sealed record PcapRecord(long TimestampNs, int OriginalLength, byte[] Data);

/// <summary>
/// Reads a classic pcap file (<see cref="PcapFormat"/>) of either byte order and either timestamp resolution: for
/// <c>onload-tcpdump -r</c>, its summary and the tests. Cold path: allocates a record per frame.
/// </summary>
public sealed class PcapReader : IDisposable
{
    private readonly Stream _stream;
    private readonly bool _ownsStream;
    private readonly bool _swapped;
    private readonly byte[] _header = new byte[PcapFormat.RecordHeaderLength];

    public PcapReader(string path)
        : this(new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite), ownsStream: true)
    {
    }

    /// <summary>Reads the file header; throws <see cref="InvalidDataException"/> when it is not pcap.</summary>
    public PcapReader(Stream stream, bool ownsStream)
    {
        ArgumentNullException.ThrowIfNull(stream);
        _stream = stream;
        _ownsStream = ownsStream;
        try
        {
            _swapped = ReadFileHeader(out bool nanosecond, out ushort major, out ushort minor, out int snap, out uint link);
            Nanosecond = nanosecond;
            VersionMajor = major;
            VersionMinor = minor;
            SnapLength = snap;
            LinkType = link;
        }
        catch when (ownsStream)
        {
            stream.Dispose();
            throw;
        }
    }

    private bool ReadFileHeader(out bool nanosecond, out ushort major, out ushort minor, out int snap, out uint link)
    {
        Span<byte> h = stackalloc byte[PcapFormat.FileHeaderLength];
        if (!ReadFully(h))
            throw Fail("shorter than a pcap file header");
        uint magic = BinaryPrimitives.ReadUInt32LittleEndian(h);
        bool swapped = magic is not (PcapFormat.MagicMicroseconds or PcapFormat.MagicNanoseconds);
        if (swapped)
            magic = BinaryPrimitives.ReverseEndianness(magic);
        if (magic is not (PcapFormat.MagicMicroseconds or PcapFormat.MagicNanoseconds))
            throw Fail($"magic 0x{BinaryPrimitives.ReadUInt32LittleEndian(h):x8} is not pcap's (pcapng is not read)");
        nanosecond = magic == PcapFormat.MagicNanoseconds;
        major = swapped ? BinaryPrimitives.ReadUInt16BigEndian(h[4..]) : BinaryPrimitives.ReadUInt16LittleEndian(h[4..]);
        minor = swapped ? BinaryPrimitives.ReadUInt16BigEndian(h[6..]) : BinaryPrimitives.ReadUInt16LittleEndian(h[6..]);
        uint snapField = swapped ? BinaryPrimitives.ReadUInt32BigEndian(h[16..]) : BinaryPrimitives.ReadUInt32LittleEndian(h[16..]);
        uint linkField = swapped ? BinaryPrimitives.ReadUInt32BigEndian(h[20..]) : BinaryPrimitives.ReadUInt32LittleEndian(h[20..]);
        snap = (int)Math.Min(snapField, int.MaxValue);
        link = linkField & 0x0fff_ffff; // the top bits carry the FCS length, not the link type
        return swapped;
    }

    public bool Nanosecond { get; }
    public ushort VersionMajor { get; }
    public ushort VersionMinor { get; }
    public int SnapLength { get; }
    public uint LinkType { get; }

    /// <summary>Whether the file ended inside a record (a writer killed while writing); the frames before it read fine.</summary>
    public bool Truncated { get; private set; }

    /// <summary>The next record, or false at the end of the file (or at a truncated record).</summary>
    public bool TryRead(out PcapRecord record)
    {
        record = null!;
        int got = ReadSome(_header);
        if (got == 0)
            return false;
        if (got < _header.Length)
        {
            Truncated = true;
            return false;
        }
        long seconds = U32(_header);
        long fraction = U32(_header.AsSpan(4));
        uint captured = U32(_header.AsSpan(8));
        uint original = U32(_header.AsSpan(12));
        if (captured > Math.Max(SnapLength, PcapFormat.MaxSnapLength))
            throw Fail($"a record claims {captured} captured bytes, more than the snap length {SnapLength}");
        var data = new byte[captured];
        if (!ReadFully(data))
        {
            Truncated = true;
            return false;
        }
        long ns = seconds * 1_000_000_000L + (Nanosecond ? fraction : fraction * 1_000);
        record = new PcapRecord(ns, (int)Math.Min(original, int.MaxValue), data);
        return true;
    }

    /// <summary>Every record left in the file.</summary>
    public IEnumerable<PcapRecord> ReadAll()
    {
        while (TryRead(out var r))
            yield return r;
    }

    /// <summary>The records of the file at <paramref name="path"/>.</summary>
    public static List<PcapRecord> ReadFile(string path)
    {
        using var reader = new PcapReader(path);
        return [.. reader.ReadAll()];
    }

    public void Dispose()
    {
        if (_ownsStream)
            _stream.Dispose();
    }

    private uint U32(ReadOnlySpan<byte> b) => _swapped ? BinaryPrimitives.ReadUInt32BigEndian(b) : BinaryPrimitives.ReadUInt32LittleEndian(b);

    private bool ReadFully(Span<byte> into) => ReadSome(into) == into.Length;

    private int ReadSome(Span<byte> into)
    {
        int total = 0;
        while (total < into.Length)
        {
            int n = _stream.Read(into[total..]);
            if (n == 0)
                break;
            total += n;
        }
        return total;
    }

    private static InvalidDataException Fail(string why) => new($"not a readable pcap file: {why}");
}
