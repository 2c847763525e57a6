using System.Diagnostics;

namespace Onload.Vnic;

/// <summary>Where the stack and the simulated link read the time: nanoseconds on a monotonic clock.</summary>
public interface IClock
{
    long NowNanoseconds { get; }
}

/// <summary>The machine's monotonic clock (CLOCK_MONOTONIC through <see cref="Stopwatch"/>).</summary>
public sealed class MonotonicClock : IClock
{
    public static readonly MonotonicClock Instance = new();

    private static readonly double TicksToNs = 1e9 / Stopwatch.Frequency;

    public long NowNanoseconds => (long)(Stopwatch.GetTimestamp() * TicksToNs);
}

/// <summary>A clock that moves only when a test says so, so that a run repeats exactly.</summary>
public sealed class VirtualClock : IClock
{
    public long NowNanoseconds { get; private set; }

    public void Advance(long nanoseconds)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(nanoseconds);
        NowNanoseconds += nanoseconds;
    }

    public void AdvanceTo(long nanoseconds)
    {
        if (nanoseconds > NowNanoseconds)
            NowNanoseconds = nanoseconds;
    }
}
