using System.Buffers.Binary;

namespace Onload.Vnic.Inspect;

/// <summary>How a <see cref="PcapWriter"/> writes.</summary>
public sealed record PcapWriterOptions
{
    /// <summary>Bytes kept of each frame (the rest is counted in the record's original length).</summary>
    public int SnapLength { get; init; } = PcapFormat.DefaultSnapLength;

    /// <summary>Nanosecond timestamps (magic 0xa1b23c4d) instead of microseconds (0xa1b2c3d4).</summary>
    public bool Nanosecond { get; init; }

    /// <summary>Frames to write before stopping (tcpdump's -c); 0 for no limit.</summary>
    public long MaxFrames { get; init; }

    /// <summary>Written frames after which the buffer goes to the file even if <see cref="FlushIntervalMs"/> has not passed.</summary>
    public int FlushFrames { get; init; } = 256;

    /// <summary>The longest a written frame waits in the buffer, in the VNIC clock's milliseconds (checked as frames come).</summary>
    public int FlushIntervalMs { get; init; } = 200;

    /// <summary>Bytes buffered before a write to the file.</summary>
    public int BufferSize { get; init; } = 256 * 1024;

    public void Validate()
    {
        if (SnapLength is < 1 or > PcapFormat.MaxSnapLength)
            throw new ArgumentOutOfRangeException(nameof(SnapLength), SnapLength, $"snap length must be 1..{PcapFormat.MaxSnapLength}");
        ArgumentOutOfRangeException.ThrowIfNegative(MaxFrames);
        ArgumentOutOfRangeException.ThrowIfLessThan(FlushFrames, 1);
        ArgumentOutOfRangeException.ThrowIfNegative(FlushIntervalMs);
        ArgumentOutOfRangeException.ThrowIfLessThan(BufferSize, 4096);
    }
}

/// <summary>
/// An inspector that writes every frame it sees to a classic pcap file (<see cref="PcapFormat"/>) that tcpdump,
/// tshark and Wireshark read, and always passes it. smoltcp's <c>phy::PcapWriter</c> is the model.
/// </summary>
/// <remarks>
/// <para>Frames are copied into a preallocated buffer that goes to the file every <see cref="PcapWriterOptions.FlushFrames"/>
/// frames or <see cref="PcapWriterOptions.FlushIntervalMs"/>, whichever comes first, on <see cref="Flush"/> and on
/// Dispose: a program killed outright leaves a readable file up to the last flush. The header is written at once, so
/// even an empty capture is a valid file.</para>
/// <para>Timestamps are wall-clock, as pcap wants: the real-time clock read once at construction plus the VNIC clock's
/// monotonic progress since, so that a clock step during the capture does not reorder it. Classic pcap has no
/// direction field: received and sent frames interleave as they passed.</para>
/// <para>A failure to write (disk full) stops the capture, keeps the exception in <see cref="Failure"/> and never
/// reaches the stack's data path.</para>
/// </remarks>
public sealed class PcapWriter : IFrameInspector, IDisposable
{
    private readonly Stream _stream;
    private readonly bool _ownsStream;
    private readonly PcapWriterOptions _options;
    private readonly byte[] _buffer;
    private readonly long _wallAtStartNs;
    private readonly long _monotonicAtStartNs;
    private readonly long _flushIntervalNs;
    private int _buffered;
    private int _framesSinceFlush;
    private long _lastFlushNs;
    private bool _closed;

    /// <summary>Creates (or truncates) <paramref name="path"/> and writes the file header to it.</summary>
    public PcapWriter(string path, PcapWriterOptions? options = null, IClock? clock = null)
        : this(new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.Read, bufferSize: 0), ownsStream: true, options, clock)
    {
        Path = path;
    }

    /// <summary>
    /// Writes to <paramref name="stream"/>. <paramref name="wallClockAtStartNs"/> (nanoseconds since the Unix epoch)
    /// stands for the real-time clock read at construction, so that a test's capture repeats exactly.
    /// </summary>
    public PcapWriter(Stream stream, bool ownsStream, PcapWriterOptions? options = null, IClock? clock = null, long? wallClockAtStartNs = null)
    {
        ArgumentNullException.ThrowIfNull(stream);
        options ??= new PcapWriterOptions();
        try
        {
            options.Validate();
        }
        catch when (ownsStream)
        {
            stream.Dispose();
            throw;
        }
        _stream = stream;
        _ownsStream = ownsStream;
        _options = options;
        _buffer = new byte[options.BufferSize];
        _flushIntervalNs = options.FlushIntervalMs * 1_000_000L;
        Clock = clock ?? MonotonicClock.Instance;
        _monotonicAtStartNs = Clock.NowNanoseconds;
        _lastFlushNs = _monotonicAtStartNs;
        // DateTime.UtcNow is CLOCK_REALTIME on Linux, in 100 ns ticks.
        _wallAtStartNs = wallClockAtStartNs ?? (DateTime.UtcNow - DateTime.UnixEpoch).Ticks * 100;
        WriteFileHeader();
        Flush();
    }

    /// <summary>The file written to, when opened from a path.</summary>
    public string? Path { get; }

    public PcapWriterOptions Options => _options;

    /// <summary>The clock the frames' timestamps come from; the same as the VNIC's.</summary>
    public IClock Clock { get; }

    /// <summary>Frames written (buffered or in the file).</summary>
    public long FramesWritten { get; private set; }

    /// <summary>Frames seen after <see cref="PcapWriterOptions.MaxFrames"/> was reached, not written.</summary>
    public long FramesNotWritten { get; private set; }

    /// <summary>Whether the count limit has been reached: nothing more is written.</summary>
    public bool LimitReached => _options.MaxFrames > 0 && FramesWritten >= _options.MaxFrames;

    /// <summary>The error that stopped the capture, or null.</summary>
    public Exception? Failure { get; private set; }

    public FrameVerdict Inspect(FrameDirection direction, ReadOnlySpan<byte> frame, long timestampNs)
    {
        if (_closed)
            return FrameVerdict.Pass;
        if (LimitReached)
        {
            FramesNotWritten++;
            return FrameVerdict.Pass;
        }
        int captured = Math.Min(frame.Length, _options.SnapLength);
        int record = PcapFormat.RecordHeaderLength + captured;
        if (_buffered + record > _buffer.Length)
            Flush();
        if (_closed)
            return FrameVerdict.Pass;

        long wallNs = _wallAtStartNs + (timestampNs - _monotonicAtStartNs);
        long seconds = Math.DivRem(wallNs, 1_000_000_000L, out long fraction);
        if (!_options.Nanosecond)
            fraction /= 1_000;
        Span<byte> header = stackalloc byte[PcapFormat.RecordHeaderLength];
        BinaryPrimitives.WriteUInt32LittleEndian(header, (uint)seconds);
        BinaryPrimitives.WriteUInt32LittleEndian(header[4..], (uint)fraction);
        BinaryPrimitives.WriteUInt32LittleEndian(header[8..], (uint)captured);
        BinaryPrimitives.WriteUInt32LittleEndian(header[12..], (uint)frame.Length);
        if (record <= _buffer.Length)
        {
            header.CopyTo(_buffer.AsSpan(_buffered));
            frame[..captured].CopyTo(_buffer.AsSpan(_buffered + PcapFormat.RecordHeaderLength));
            _buffered += record;
        }
        else if (!TryWrite(header) || !TryWrite(frame[..captured]))
        {
            return FrameVerdict.Pass;
        }
        FramesWritten++;
        _framesSinceFlush++;
        if (_framesSinceFlush >= _options.FlushFrames || timestampNs - _lastFlushNs >= _flushIntervalNs || LimitReached)
        {
            _lastFlushNs = timestampNs;
            Flush();
        }
        return FrameVerdict.Pass;
    }

    /// <summary>Writes what is buffered to the file.</summary>
    public void Flush()
    {
        if (_closed)
            return;
        if (_buffered > 0 && !TryWrite(_buffer.AsSpan(0, _buffered)))
            return;
        _buffered = 0;
        _framesSinceFlush = 0;
        try
        {
            _stream.Flush();
        }
        catch (IOException e)
        {
            Stop(e);
        }
    }

    public void Dispose()
    {
        if (_closed)
            return;
        Flush();
        _closed = true;
        if (_ownsStream)
            _stream.Dispose();
    }

    private void WriteFileHeader()
    {
        Span<byte> h = _buffer.AsSpan(0, PcapFormat.FileHeaderLength);
        BinaryPrimitives.WriteUInt32LittleEndian(h, _options.Nanosecond ? PcapFormat.MagicNanoseconds : PcapFormat.MagicMicroseconds);
        BinaryPrimitives.WriteUInt16LittleEndian(h[4..], PcapFormat.VersionMajor);
        BinaryPrimitives.WriteUInt16LittleEndian(h[6..], PcapFormat.VersionMinor);
        BinaryPrimitives.WriteInt32LittleEndian(h[8..], 0);   // thiszone: timestamps are UTC
        BinaryPrimitives.WriteUInt32LittleEndian(h[12..], 0); // sigfigs
        BinaryPrimitives.WriteUInt32LittleEndian(h[16..], (uint)_options.SnapLength);
        BinaryPrimitives.WriteUInt32LittleEndian(h[20..], PcapFormat.LinkTypeEthernet);
        _buffered = PcapFormat.FileHeaderLength;
    }

    private bool TryWrite(ReadOnlySpan<byte> bytes)
    {
        try
        {
            _stream.Write(bytes);
            return true;
        }
        catch (IOException e)
        {
            Stop(e);
            return false;
        }
    }

    private void Stop(Exception e)
    {
        Failure ??= e;
        _closed = true;
        _buffered = 0;
        if (_ownsStream)
        {
            try
            {
                _stream.Dispose();
            }
            catch (IOException)
            {
                // the capture is already lost; the stack goes on
            }
        }
    }
}
