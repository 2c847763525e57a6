using BenchmarkDotNet.Attributes;
using Onload.Stack.Timers;
using Onload.Vnic;

namespace Onload.Perf.Stack;

/// <summary>
/// The timer wheel's cost per operation with many connections' timers pending, as TCP uses it: an RTO armed and
/// disarmed by every ACK, and timers that run out. The memory diagnoser's "Allocated" column must read 0 B.
/// </summary>
[MemoryDiagnoser]
public class TimerWheelBenchmarks
{
    private const int Timers = 65_536;
    /// <summary>Other connections' timers pending in the background, spread over 2 hours.</summary>
    private const int Background = 16_384;
    private const long Tick = 1_000_000;
    private const int Batch = 1024;

    private TimerWheel _wheel = null!;
    private readonly int[] _expired = new int[Batch];
    private readonly long[] _delays = new long[Batch];
    private long _now;
    private int _next;

    [GlobalSetup]
    public void Setup()
    {
        _now = 1_000_000_000;
        _wheel = new TimerWheel(Timers, _now);
        var random = new SeededRandom(1);
        // The background sits 60 days ahead (in the last level), so the advances below, 4 s per invocation, never
        // reach it.
        const long days60 = 60L * 86_400 * 1_000_000_000;
        for (int i = 0; i < Background; i++)
            _wheel.Schedule(Batch + i, _now + days60 + (long)(random.NextDouble() * 7_200_000) * Tick);
        for (int i = 0; i < Batch; i++)
            _delays[i] = (1 + random.Next(4000)) * Tick + random.Next((int)Tick); // 1 ms to 4 s: levels 0 and 1
    }

    [GlobalCleanup]
    public void Cleanup() => _wheel.Dispose();

    [Benchmark(Description = "Schedule + cancel (RTO armed, then ACKed)")]
    public void ScheduleCancel()
    {
        int t = _next++ & (Batch - 1);
        _wheel.Schedule(t, _now + _delays[t]);
        _wheel.Cancel(t);
    }

    [Benchmark(Description = "Reschedule a pending timer (RTO pushed back by an ACK)")]
    public void Reschedule()
    {
        int t = _next++ & (Batch - 1);
        _wheel.Schedule(t, _now + _delays[t]);
    }

    [Benchmark(Description = "Schedule + advance until it expires, per timer (1024 over 4 s, cascades included)",
        OperationsPerInvoke = Batch)]
    public int ScheduleAndExpire()
    {
        for (int t = 0; t < Batch; t++)
            _wheel.Schedule(t, _now + _delays[t]);
        int fired = 0;
        // As a poll loop would: wake when the wheel says something can happen.
        while (fired < Batch)
        {
            _now = _wheel.NextExpiry;
            fired += _wheel.Advance(_now, _expired);
        }
        return fired;
    }

    [Benchmark(Description = "NextDeadline with 16k timers pending")]
    public long NextDeadline() => _wheel.NextDeadline;
}
