using Onload.Stack.Timers;
using Onload.Vnic;

namespace Onload.Tests.Timers;

/// <summary>
/// The timer wheel against its contract: a timer fires at the first advance at or after its deadline rounded up
/// to a tick (never early, at most one tick late) on every level, exactly once, whatever the advances look like.
/// </summary>
[TestFixture]
public class TimerWheelTests
{
    private const long Tick = 1_000_000;
    /// <summary>Not a multiple of the tick, so the wheel's ticks do not line up with the clock's milliseconds.</summary>
    private const long Start = 7_000_123_457;

    private static long At(long ticks) => Start + ticks * Tick;

    /// <summary>The tick that must fire a deadline: rounded up, from the start.</summary>
    private static long FiringTick(long deadlineNs) =>
        deadlineNs <= Start ? 0 : (deadlineNs - Start + Tick - 1) / Tick;

    private static int[] Advance(TimerWheel wheel, long nowNs, int room = 4096)
    {
        var expired = new int[room];
        int n = wheel.Advance(nowNs, expired);
        return expired[..n];
    }

    /// <summary>Advances until a call returns nothing, with <paramref name="room"/> slots per call.</summary>
    private static List<int> AdvanceAll(TimerWheel wheel, long nowNs, int room, out int calls)
    {
        var all = new List<int>();
        var expired = new int[room];
        calls = 0;
        while (true)
        {
            calls++;
            int n = wheel.Advance(nowNs, expired);
            if (n == 0)
                return all;
            all.AddRange(expired[..n]);
        }
    }

    [TestCase(0L)]
    [TestCase(1L)]
    [TestCase(2L)]
    [TestCase(255L)]
    [TestCase(256L)]
    [TestCase(257L)]
    [TestCase(511L)]
    [TestCase(65_535L)]
    [TestCase(65_536L)]
    [TestCase(65_537L)]
    [TestCase(1_000_000L)]
    [TestCase(16_777_215L)]
    [TestCase(16_777_216L)]
    [TestCase(100_000_000L)]
    [TestCase((1L << 32) - 1)]
    [TestCase(1L << 32)]
    [TestCase((1L << 32) + 12_345)]
    [TestCase(1L << 40)]
    public void A_timer_fires_at_its_deadline_rounded_up_to_a_tick_on_every_level(long ticks)
    {
        // Tick-aligned, and 1 ns past a tick (which rounds up to the next one).
        foreach (long deadline in new[] { At(ticks), At(ticks) + 1 })
        {
            using var wheel = new TimerWheel(4, Start);
            wheel.Schedule(2, deadline);
            long fires = FiringTick(deadline);
            Assert.That(wheel.DeadlineOf(2), Is.EqualTo(deadline));

            // Creep up on it through a seeded mix of jumps, crossing level boundaries on the way.
            var random = new SeededRandom((ulong)ticks + 1);
            long now = Start;
            for (int step = 0; step < 60; step++)
            {
                long left = At(fires) - 1 - now;
                if (left <= 0)
                    break;
                now += 1 + (long)(random.NextDouble() * left * 0.3);
                Assert.That(Advance(wheel, now), Is.Empty, $"fired at {now - Start} ns, deadline {deadline - Start} ns");
                Assert.That(wheel.NextDeadline, Is.LessThanOrEqualTo(deadline));
            }
            if (At(fires) - 1 >= Start)
                Assert.That(Advance(wheel, At(fires) - 1), Is.Empty, "one nanosecond before the firing tick");
            Assert.That(wheel.IsScheduled(2), Is.True);

            Assert.That(Advance(wheel, At(fires)), Is.EqualTo(new[] { 2 }));
            Assert.That(At(fires), Is.GreaterThanOrEqualTo(deadline).And.LessThan(deadline + Tick));
            Assert.That(wheel.IsScheduled(2), Is.False);
            Assert.That(wheel.DeadlineOf(2), Is.EqualTo(long.MaxValue));
            Assert.That(wheel.Scheduled, Is.Zero);
            Assert.That(Advance(wheel, At(fires + (1L << 33))), Is.Empty, "fires once");
        }
    }

    [TestCase(1L)]
    [TestCase(300L)]
    [TestCase(70_000L)]
    [TestCase(20_000_000L)]
    [TestCase((1L << 40) + 3)]
    public void A_poll_loop_that_sleeps_until_NextExpiry_fires_the_timer_on_its_tick(long ticks)
    {
        using var wheel = new TimerWheel(1, Start);
        wheel.Schedule(0, At(ticks) - Tick / 2);
        int wakeups = 0;
        while (true)
        {
            long next = wheel.NextExpiry;
            Assert.That(next, Is.LessThanOrEqualTo(At(ticks)));
            wakeups++;
            if (Advance(wheel, next).Length == 1)
                break;
        }
        Assert.That(wheel.NextExpiry, Is.EqualTo(long.MaxValue));
        // One wake-up per cascade at most, plus one lap of the last level per 2^32 - 2^24 ticks beyond its reach.
        Assert.That(wakeups, Is.LessThanOrEqualTo(4 + (int)(ticks >> 31)));
    }

    [Test]
    public void A_deadline_at_or_before_the_start_fires_at_the_first_advance()
    {
        using var wheel = new TimerWheel(3, Start);
        wheel.Schedule(0, Start);
        wheel.Schedule(1, Start - 5 * Tick);
        wheel.Schedule(2, Start + 1);
        Assert.That(wheel.NextDeadline, Is.LessThanOrEqualTo(Start - 5 * Tick));
        Assert.That(Advance(wheel, Start), Is.EquivalentTo(new[] { 0, 1 }));
        Assert.That(Advance(wheel, At(1) - 1), Is.Empty);
        Assert.That(Advance(wheel, At(1)), Is.EqualTo(new[] { 2 }));
    }

    [Test]
    public void A_deadline_already_passed_when_scheduled_fires_at_the_next_advance_even_at_the_same_time()
    {
        using var wheel = new TimerWheel(2, Start);
        Assert.That(Advance(wheel, At(1000) + 17), Is.Empty);
        wheel.Schedule(0, At(400));
        wheel.Schedule(1, At(1000));
        Assert.That(wheel.NextDeadline, Is.LessThanOrEqualTo(At(400)));
        Assert.That(wheel.NextExpiry, Is.LessThanOrEqualTo(At(1000) + 17));
        Assert.That(Advance(wheel, At(1000) + 17), Is.EquivalentTo(new[] { 0, 1 }));
    }

    [Test]
    public void A_cancelled_timer_never_fires_and_cancelling_twice_is_harmless()
    {
        using var wheel = new TimerWheel(8, Start);
        wheel.Cancel(5);
        foreach (long t in new[] { 3L, 300, 70_000, 20_000_000 })
        {
            // Alone in its slot: cancelling empties the slot, and the wheel knows it.
            wheel.Schedule(5, At(t));
            wheel.Cancel(5);
            Assert.That(wheel.NextExpiry, Is.EqualTo(long.MaxValue));

            wheel.Schedule(5, At(t));
            wheel.Schedule(6, At(t));
            Assert.That(wheel.Scheduled, Is.EqualTo(2));
            wheel.Cancel(5);
            wheel.Cancel(5);
            Assert.That(wheel.IsScheduled(5), Is.False);
            Assert.That(wheel.DeadlineOf(5), Is.EqualTo(long.MaxValue));
            Assert.That(wheel.Scheduled, Is.EqualTo(1));
            Assert.That(AdvanceAll(wheel, At(t), 16, out _), Is.EqualTo(new[] { 6 }));
        }
        wheel.Schedule(1, Start - 1);
        wheel.Cancel(1);
        Assert.That(Advance(wheel, At(1L << 33)), Is.Empty);
        Assert.That(wheel.NextDeadline, Is.EqualTo(long.MaxValue));
    }

    [Test]
    public void Rescheduling_earlier_fires_only_at_the_new_deadline()
    {
        using var wheel = new TimerWheel(2, Start);
        wheel.Schedule(1, At(5_000_000));
        wheel.Schedule(1, At(300));
        Assert.That(wheel.Scheduled, Is.EqualTo(1));
        Assert.That(wheel.DeadlineOf(1), Is.EqualTo(At(300)));
        Assert.That(Advance(wheel, At(299)), Is.Empty);
        Assert.That(Advance(wheel, At(300)), Is.EqualTo(new[] { 1 }));
        Assert.That(Advance(wheel, At(6_000_000)), Is.Empty);
    }

    [Test]
    public void Rescheduling_later_fires_only_at_the_new_deadline()
    {
        using var wheel = new TimerWheel(2, Start);
        wheel.Schedule(1, At(10));
        Assert.That(Advance(wheel, At(5)), Is.Empty);
        wheel.Schedule(1, At(100_000));
        Assert.That(Advance(wheel, At(10)), Is.Empty);
        Assert.That(Advance(wheel, At(99_999)), Is.Empty);
        Assert.That(Advance(wheel, At(100_000)), Is.EqualTo(new[] { 1 }));
        Assert.That(wheel.Scheduled, Is.Zero);
    }

    [Test]
    public void Many_random_timers_advanced_tick_by_tick_fire_in_deadline_order_exactly_once()
    {
        const int timers = 5000;
        const long horizon = 300_000; // past two level boundaries: 256 and 65536 ticks
        var random = new SeededRandom(42);
        using var wheel = new TimerWheel(timers, Start);
        var deadlines = new long[timers];
        var model = new List<(long Tick, int Id)>(); // the reference: sorted by the tick that must fire each
        for (int id = 0; id < timers; id++)
        {
            deadlines[id] = Start + (long)(random.NextDouble() * horizon * Tick);
            wheel.Schedule(id, deadlines[id]);
            model.Add((FiringTick(deadlines[id]), id));
        }
        model.Sort();

        var fired = new bool[timers];
        var expired = new int[timers];
        int m = 0;
        long lastTick = -1;
        for (long tick = 0; tick <= horizon + 1; tick++)
        {
            long now = At(tick);
            int n = wheel.Advance(now, expired);
            int from = m;
            while (m < model.Count && model[m].Tick <= tick)
                m++;
            // The reference model: exactly the timers whose deadline rounds up to this tick.
            if (n != m - from)
                Assert.Fail($"tick {tick}: {n} fired, the model says {m - from}");
            for (int k = 0; k < n; k++)
            {
                int id = expired[k];
                long deadline = deadlines[id];
                if (fired[id] || deadline > now || deadline <= now - Tick)
                    Assert.Fail($"tick {tick}: timer {id} (deadline {deadline - Start} ns) fired twice, early or late");
                fired[id] = true;
                lastTick = tick;
            }
        }
        Assert.That(fired, Is.All.True);
        Assert.That(wheel.Scheduled, Is.Zero);
        Assert.That(lastTick, Is.EqualTo(model[^1].Tick));
    }

    [Test]
    public void Random_schedules_cancels_and_jumps_match_a_reference_model()
    {
        const int timers = 400;
        var random = new SeededRandom(7);
        using var wheel = new TimerWheel(timers, Start);
        var model = new Dictionary<int, long>();
        long now = Start;

        // Distances spread evenly over orders of magnitude, from 1 ns to 2^36 ticks.
        long LogUniform(int maxBits) => (long)Math.Pow(2, random.NextDouble() * maxBits);

        for (int round = 0; round < 4000; round++)
        {
            int ops = random.Next(8);
            for (int op = 0; op < ops; op++)
            {
                int id = random.Next(timers);
                if (random.Next(4) == 0)
                {
                    wheel.Cancel(id);
                    model.Remove(id);
                }
                else
                {
                    long deadline = random.Next(10) == 0 ? now - LogUniform(40) : now + LogUniform(56);
                    wheel.Schedule(id, deadline);
                    model[id] = deadline;
                }
            }

            long earliest = model.Count == 0 ? long.MaxValue : model.Values.Min();
            Assert.That(wheel.Scheduled, Is.EqualTo(model.Count));
            Assert.That(wheel.NextDeadline, Is.LessThanOrEqualTo(earliest));
            if (model.Count == 0)
                Assert.That(wheel.NextDeadline, Is.EqualTo(long.MaxValue));
            else
                Assert.That(wheel.NextExpiry, Is.LessThanOrEqualTo(At(FiringTick(earliest))));

            now += random.Next(3) switch
            {
                0 => random.Next((int)Tick * 2),
                1 => LogUniform(30),
                _ => LogUniform(52),
            };
            long nowTick = (now - Start) / Tick;
            var expected = model.Where(kv => FiringTick(kv.Value) <= nowTick).Select(kv => kv.Key).ToList();
            var got = AdvanceAll(wheel, now, 1 + random.Next(6), out _);
            Assert.That(got, Is.EquivalentTo(expected), $"round {round}, now {now - Start} ns");
            foreach (int id in got)
            {
                Assert.That(wheel.IsScheduled(id), Is.False);
                model.Remove(id);
            }
            foreach (var (id, deadline) in model)
            {
                if (!wheel.IsScheduled(id) || wheel.DeadlineOf(id) != deadline)
                    Assert.Fail($"round {round}: timer {id} lost its deadline");
            }
        }
    }

    [Test]
    public void When_more_expire_than_the_span_holds_the_rest_come_out_of_the_next_calls_in_tick_order()
    {
        using var wheel = new TimerWheel(100, Start);
        for (int id = 0; id < 10; id++)
            wheel.Schedule(id, At(7));
        Assert.That(Advance(wheel, At(7), room: 3), Has.Length.EqualTo(3));
        Assert.That(wheel.Scheduled, Is.EqualTo(7));
        // A timer scheduled meanwhile for the same tick, or the past, still fires.
        wheel.Schedule(50, At(7));
        wheel.Schedule(51, At(2));
        var rest = AdvanceAll(wheel, At(7), 3, out int calls);
        Assert.That(rest, Has.Count.EqualTo(9));
        Assert.That(calls, Is.EqualTo(4));
        Assert.That(wheel.Scheduled, Is.Zero);

        // Across ticks and levels: everything due, in tick order, nothing early.
        var random = new SeededRandom(3);
        var deadlines = new long[100];
        for (int id = 0; id < 100; id++)
        {
            deadlines[id] = At(10) + (long)(random.NextDouble() * 200_000 * Tick);
            wheel.Schedule(id, deadlines[id]);
        }
        long now = At(150_000);
        var fired = AdvanceAll(wheel, now, 7, out _);
        // `now` is on a tick, so exactly the deadlines up to it have come round.
        Assert.That(fired, Is.EquivalentTo(Enumerable.Range(0, 100).Where(id => deadlines[id] <= now)));
        Assert.That(fired.Select(id => FiringTick(deadlines[id])), Is.Ordered);
        Assert.That(wheel.Scheduled, Is.EqualTo(100 - fired.Count));
    }

    [Test]
    public void A_jump_of_hours_fires_everything_due_in_one_call_or_a_bounded_number_of_small_ones()
    {
        const int timers = 10_000;
        const long hour = 3_600_000_000_000;
        var random = new SeededRandom(11);
        var deadlines = new long[timers];
        for (int id = 0; id < timers; id++)
            deadlines[id] = Start + (long)(random.NextDouble() * 5 * hour);

        using (var wheel = new TimerWheel(timers, Start))
        {
            for (int id = 0; id < timers; id++)
                wheel.Schedule(id, deadlines[id]);
            var all = Advance(wheel, Start + 6 * hour, room: timers);
            Assert.That(all, Has.Length.EqualTo(timers));
            Assert.That(all.Distinct().Count(), Is.EqualTo(timers));
            Assert.That(wheel.NextDeadline, Is.EqualTo(long.MaxValue));
        }

        using (var wheel = new TimerWheel(timers, Start))
        {
            for (int id = 0; id < timers; id++)
                wheel.Schedule(id, deadlines[id]);
            var all = AdvanceAll(wheel, Start + 6 * hour, 16, out int calls);
            Assert.That(all, Has.Count.EqualTo(timers));
            Assert.That(calls, Is.EqualTo(timers / 16 + 1));
            Assert.That(all.Select(id => FiringTick(deadlines[id])), Is.Ordered);
        }
    }

    [Test]
    public void NextDeadline_is_never_later_than_the_earliest_deadline_and_exact_to_the_tick_within_the_first_level()
    {
        using var wheel = new TimerWheel(4, Start);
        Assert.That(wheel.NextDeadline, Is.EqualTo(long.MaxValue));
        Assert.That(wheel.NextExpiry, Is.EqualTo(long.MaxValue));

        wheel.Schedule(0, At(100) - 300);
        Assert.That(wheel.NextDeadline, Is.EqualTo(At(99) + 1));
        Assert.That(wheel.NextExpiry, Is.EqualTo(At(100)));

        wheel.Schedule(1, At(3_000_000));
        wheel.Cancel(0);
        long next = wheel.NextDeadline;
        Assert.That(next, Is.LessThanOrEqualTo(At(3_000_000)));
        // Outer levels may answer early; advancing there and asking again converges on the deadline.
        while (next < At(2_999_999))
        {
            Assert.That(Advance(wheel, wheel.NextExpiry), Is.Empty);
            long again = wheel.NextDeadline;
            Assert.That(again, Is.GreaterThan(next).And.LessThanOrEqualTo(At(3_000_000)));
            next = again;
        }
        Assert.That(wheel.NextExpiry, Is.EqualTo(At(3_000_000)));
    }

    [Test]
    public void Steady_state_scheduling_and_advancing_allocates_nothing()
    {
        const int timers = 4096;
        using var wheel = new TimerWheel(timers, Start);
        var random = new SeededRandom(5);
        Span<int> expired = stackalloc int[64];
        long now = Start;

        void Cycles(int count, Span<int> expired)
        {
            for (int i = 0; i < count; i++)
            {
                int id = random.Next(timers);
                // Mostly RTO-like deadlines, some far (keepalive), some in the past.
                long deadline = (i % 16) switch
                {
                    0 => now + (long)(random.NextDouble() * 7_200_000) * Tick,
                    1 => now - Tick,
                    _ => now + (1 + random.Next(3000)) * Tick,
                };
                wheel.Schedule(id, deadline);
                if (i % 7 == 0)
                    wheel.Cancel(random.Next(timers));
                now += Tick / 2 + random.Next((int)Tick);
                while (wheel.Advance(now, expired) == expired.Length)
                {
                }
                _ = wheel.NextDeadline;
            }
        }

        Cycles(5000, expired); // warm up: let the JIT settle
        long before = GC.GetAllocatedBytesForCurrentThread();
        Cycles(100_000, expired);
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.That(allocated, Is.Zero);
        Assert.That(wheel.Scheduled, Is.GreaterThan(0));
    }

    [Test]
    public void Timer_ids_outside_the_table_are_refused()
    {
        using var wheel = new TimerWheel(4, Start);
        Assert.That(wheel.Capacity, Is.EqualTo(4));
        Assert.Throws<IndexOutOfRangeException>(() => wheel.Schedule(4, At(1)));
        Assert.Throws<IndexOutOfRangeException>(() => wheel.Cancel(-1));
        Assert.Throws<ArgumentOutOfRangeException>(() => _ = new TimerWheel(0, Start));
        Assert.Throws<ArgumentOutOfRangeException>(() => _ = new TimerWheel(1, Start, tickNs: 0));
    }
}
