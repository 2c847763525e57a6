using System.Buffers.Binary;
using System.Diagnostics;
using HdrHistogram;
using Onload.Stack;

namespace Onload.Apps.PingPong;

/// <summary>
/// What the busy-polling clients share: a warm-up of unrecorded steps, then a measured run of steps until the count,
/// the time or <see cref="Stop"/>, each step's sample recorded. A step is one round trip (UDP and TCP ping-pong) or
/// one whole connection (the connection set-up rate); subclasses say what it is in <see cref="Step"/>.
/// </summary>
internal abstract class LatencyClient : ILatencyRun
{
    protected readonly NetStack Stack;
    protected readonly ClientSettings Settings;
    /// <summary>How long one step may take, in Stopwatch ticks.</summary>
    protected readonly long TimeoutTicks;
    private volatile bool _stop;

    protected LatencyClient(NetStack stack, ClientSettings settings)
    {
        Stack = stack;
        Settings = settings;
        TimeoutTicks = settings.TimeoutNs * Stopwatch.Frequency / 1_000_000_000;
    }

    /// <summary>Samples in nanoseconds. Up to an hour, 3 significant digits (0.1% resolution).</summary>
    public LongHistogram Histogram { get; } = new(3_600_000_000_000L, 3);
    public long Lost { get; protected set; }
    /// <summary>Replies that came after their message had timed out (their sequence number is past).</summary>
    public long Stale { get; protected set; }
    /// <summary>Errors from the stack's calls (e.g. ECONNREFUSED).</summary>
    public long Errors { get; protected set; }
    public int LastError { get; protected set; }
    public double MeasuredSeconds { get; private set; }
    /// <summary>Set once <see cref="RunMeasured"/> has begun.</summary>
    protected bool Measuring { get; private set; }

    public void Stop() => _stop = true;

    /// <summary>The run cannot go on (a connection broke, the server keeps failing): warm-up and measuring stop.</summary>
    protected virtual bool Ended => false;

    /// <summary>One step. True with its sample in nanoseconds; false when it failed or timed out (counted).</summary>
    protected abstract bool Step(out long sampleNs);

    /// <summary>Warm-up steps (not recorded; the first resolves the server's MAC). Returns how many succeeded.</summary>
    public long RunWarmup()
    {
        long ok = 0;
        for (int i = 0; i < Settings.Warmup && !_stop && !Ended; i++)
            if (Step(out _))
                ok++;
        return ok;
    }

    /// <summary>The measured run: until the count or the time is reached, or <see cref="Stop"/>.</summary>
    public void RunMeasured()
    {
        Measuring = true;
        long freq = Stopwatch.Frequency;
        long start = Stopwatch.GetTimestamp();
        long end = Settings.Seconds > 0 ? start + (long)(Settings.Seconds * freq) : long.MaxValue;
        long count = Settings.Count > 0 ? Settings.Count : long.MaxValue;
        long done = 0;
        long now = start;
        while (!_stop && !Ended && done < count && now < end)
        {
            if (Step(out long sampleNs))
                Histogram.RecordValue(sampleNs);
            done++;
            now = Stopwatch.GetTimestamp();
        }
        MeasuredSeconds = (double)(now - start) / freq;
    }

    protected static long Nanoseconds(long ticks) => ticks * 1_000_000_000 / Stopwatch.Frequency;

    /// <summary>Counts a failed call; returns the negated errno it gave.</summary>
    protected int Count(int errno)
    {
        Errors++;
        LastError = errno;
        return errno;
    }

    /// <summary>A message of the given size in 'a'..'z', as sockperf fills its own.</summary>
    protected static byte[] Message(int size)
    {
        var message = new byte[size];
        for (int i = 0; i < message.Length; i++)
            message[i] = (byte)('a' + i % 26);
        return message;
    }

    /// <summary>Stamps a ping-pong request with its sequence number: in sockperf's header, or plain in the first 8
    /// bytes.</summary>
    protected void WriteRequest(Span<byte> message, ulong seq)
    {
        if (Settings.Sockperf)
            SockperfHeader.WritePongRequest(message, seq);
        else
            BinaryPrimitives.WriteUInt64BigEndian(message, seq);
    }
}
