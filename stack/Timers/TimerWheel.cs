using System.Numerics;
using System.Runtime.CompilerServices;
using Onload.Stack.Memory;

namespace Onload.Stack.Timers;

/// <summary>One timer's row: where it is linked and when it is due.</summary>
internal struct TimerEntry
{
    public long DeadlineNs;
    /// <summary>The deadline rounded up to a whole tick after the wheel's start: the tick that fires it.</summary>
    public long Tick;
    public int Next;
    public int Prev;
    /// <summary>The list the timer is on (a wheel slot, or the due list), or <see cref="TimerWheel.Idle"/>.</summary>
    public int List;
}

/// <summary>
/// A hierarchical timing wheel (Varghese and Lauck, "Hashed and Hierarchical Timing Wheels", SOSP 1987, scheme 7)
/// for every timer of the stack (TCP's, ARP's, reassembly's, IGMP's): schedule, cancel and reschedule are O(1); an advance costs the timers
/// that expire plus an amortised cascade, and skips empty stretches of time with per-level occupancy bitmaps, so
/// nothing ever scans all timers nor walks tick by tick through idle time.
/// </summary>
/// <remarks>
/// <para>Four levels of 256 slots; a slot of level L spans 256^L ticks, so the wheel reaches 2^32 ticks ahead
/// (1 ms ticks: 0.256 s, 65 s, 4.6 h, 49.7 days). A timer is filed by its distance from the wheel's clock, as in
/// Linux's cascading wheel before 4.8 (<c>internal_add_timer</c> and <c>cascade</c> in kernel/time/timer.c): when
/// the clock reaches the start of an outer slot, that slot's timers are re-filed one or more levels down, so every
/// timer reaches the innermost level before its tick and fires exactly at it. Linux 4.8 dropped cascading and lets
/// outer-level timers fire up to 1/8 late; TCP here wants one-tick accuracy, so we keep the cascade.</para>
/// <para>Slots are rings, as in the paper: a slot's index is its tick's digit at that level, and which lap of the
/// ring it means follows from the clock. A timer beyond the wheel's reach is filed in the farthest slot of the
/// last level and re-filed from there when that slot comes round (once every ~49 days of 1 ms ticks).</para>
/// <para>Time is a count of ticks from <c>startNs</c>. A deadline is rounded up to a tick; an advance to
/// <c>nowNs</c> handles every tick up to <c>nowNs</c> rounded down. So a timer never fires before its deadline
/// and at most one tick after it. Deadlines already reached when scheduled go on a due list that the next
/// advance empties first. Not thread-safe: the stack is single-threaded.</para>
/// </remarks>
public sealed class TimerWheel : IDisposable
{
    internal const int Idle = -1;

    private const int SlotBits = 8;
    private const int SlotsPerLevel = 1 << SlotBits;
    private const int SlotMask = SlotsPerLevel - 1;
    private const int Levels = 4;
    private const int WordsPerLevel = SlotsPerLevel / 64;
    /// <summary>The list after the wheel's slots: timers whose tick has already been handled.</summary>
    private const int DueList = Levels * SlotsPerLevel;
    /// <summary>The farthest distance the wheel files exactly: 2^32 - 1 ticks.</summary>
    private const long Reach = (1L << (Levels * SlotBits)) - 1;
    /// <summary>Ticks are capped here (~146 years of 1 ns ticks) so tick arithmetic cannot overflow.</summary>
    private const long MaxTick = 1L << 62;

    private readonly StructTable<TimerEntry> _timers;
    /// <summary>List heads: slot <c>level * 256 + digit</c>, then the due list; -1 = empty.</summary>
    private readonly int[] _heads;
    /// <summary>One bit per slot, set while the slot's list is non-empty, laid out like <see cref="_heads"/>
    /// (so slot s is bit s % 64 of word s / 64).</summary>
    private readonly ulong[] _occupied;
    private readonly long _startNs;
    private readonly ulong _tickNs;
    /// <summary>The wheel's clock: the first tick not yet fully handled (Linux's <c>timer_jiffies</c>). Tick 0 is
    /// the start itself, handled at construction.</summary>
    private long _next = 1;
    /// <summary>No later than every deadline on the due list (lowered on each insert, reset when it empties).</summary>
    private long _dueMinNs;

    /// <param name="timers">How many timer ids exist (0..timers-1); each id is owned by the caller (e.g. a range
    /// per owner, connection * kinds + kind within TCP's).</param>
    /// <param name="startNs">The clock's current time.</param>
    /// <param name="tickNs">The resolution (default 1 ms).</param>
    public TimerWheel(int timers, long startNs, long tickNs = 1_000_000)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(timers, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(tickNs, 1);
        _timers = new StructTable<TimerEntry>(timers);
        for (int i = 0; i < timers; i++)
            _timers[i] = new TimerEntry { Next = -1, Prev = -1, List = Idle };
        _heads = new int[DueList + 1];
        Array.Fill(_heads, -1);
        _occupied = new ulong[Levels * WordsPerLevel];
        _startNs = startNs;
        _tickNs = (ulong)tickNs;
    }

    public int Capacity => _timers.Length;

    /// <summary>How many timers are pending.</summary>
    public int Scheduled { get; private set; }

    public long TickNs => (long)_tickNs;

    /// <summary>(Re)arms <paramref name="timer"/>. A deadline already reached fires at the next <see cref="Advance"/>.</summary>
    public void Schedule(int timer, long deadlineNs)
    {
        ref var t = ref _timers[timer];
        if (t.List != Idle)
            Unlink(ref t);
        else
            Scheduled++;
        t.DeadlineNs = deadlineNs;
        t.Tick = TickOfDeadline(deadlineNs);
        File(timer, ref t);
    }

    /// <summary>Disarms <paramref name="timer"/>; a no-op if it is not scheduled.</summary>
    public void Cancel(int timer)
    {
        ref var t = ref _timers[timer];
        if (t.List == Idle)
            return;
        Unlink(ref t);
        Scheduled--;
    }

    public bool IsScheduled(int timer) => _timers[timer].List != Idle;

    /// <summary>The deadline <paramref name="timer"/> was scheduled for, or <see cref="long.MaxValue"/> if it is not scheduled.</summary>
    public long DeadlineOf(int timer)
    {
        ref var t = ref _timers[timer];
        return t.List == Idle ? long.MaxValue : t.DeadlineNs;
    }

    /// <summary>
    /// Moves the wheel to <paramref name="nowNs"/> and writes the timers that fire into <paramref name="expired"/>
    /// (they are no longer scheduled); returns how many. A timer fires at the first advance at or after its
    /// deadline rounded up to a tick. Timers come out in tick order. If more fire than <paramref name="expired"/>
    /// holds, the rest stay due and come out of the next call, first.
    /// </summary>
    public int Advance(long nowNs, Span<int> expired)
    {
        int n = Drain(DueList, expired, 0);
        if (_heads[DueList] >= 0)
            return n;
        long target = TickAtOrBefore(nowNs);
        while (true)
        {
            long tick = NextEventTick();
            if (tick > target)
            {
                // Nothing happens in between: jump the clock (a clock that went backwards moves nothing).
                if (target >= _next)
                    _next = target + 1;
                return n;
            }
            _next = tick;
            Cascade(tick);
            int slot = (int)(tick & SlotMask);
            n = Drain(slot, expired, n);
            if (_heads[slot] >= 0)
                return n; // `expired` is full: this tick resumes on the next call (its cascade is done)
            _next = tick + 1;
        }
    }

    /// <summary>
    /// A time no later than the earliest pending deadline, or <see cref="long.MaxValue"/> when nothing is scheduled.
    /// Exact to the tick when the earliest timer is on the innermost level; earlier when the next thing to happen
    /// is a cascade from an outer level (advance, and ask again). Costs a bitmap scan of each level.
    /// </summary>
    /// <remarks>Timers fire on tick boundaries, so advancing to this time may fire nothing yet (it is up to one
    /// tick before the tick that fires); a caller that sleeps between advances should wait for
    /// <see cref="NextExpiry"/>.</remarks>
    public long NextDeadline
    {
        get
        {
            if (_heads[DueList] >= 0)
                return _dueMinNs;
            long tick = NextEventTick();
            // Timers at tick t have deadlines in (t - 1, t] ticks, so just after t - 1 is a lower bound.
            return tick == long.MaxValue ? long.MaxValue : TimeOfTick(tick - 1) + 1;
        }
    }

    /// <summary>
    /// The earliest time at which <see cref="Advance"/> can have something to do: the tick boundary that fires the
    /// next timers (exact for the innermost level), or an earlier one at which an outer level cascades; a time
    /// already past when timers are due now; <see cref="long.MaxValue"/> when nothing is scheduled. This is when a
    /// poll loop should next call <see cref="Advance"/>.
    /// </summary>
    public long NextExpiry
    {
        get
        {
            if (_heads[DueList] >= 0)
                return _dueMinNs;
            long tick = NextEventTick();
            return tick == long.MaxValue ? long.MaxValue : TimeOfTick(tick);
        }
    }

    public void Dispose() => _timers.Dispose();

    /// <summary>Files a timer by its distance from the clock (Linux's <c>internal_add_timer</c>).</summary>
    private void File(int timer, ref TimerEntry t)
    {
        long delta = t.Tick - _next;
        int list;
        if (delta < 0)
        {
            if (_heads[DueList] < 0 || t.DeadlineNs < _dueMinNs)
                _dueMinNs = t.DeadlineNs;
            list = DueList;
        }
        else if (delta < 1L << SlotBits)
            list = (int)(t.Tick & SlotMask);
        else if (delta < 1L << (2 * SlotBits))
            list = SlotsPerLevel + (int)((t.Tick >> SlotBits) & SlotMask);
        else if (delta < 1L << (3 * SlotBits))
            list = 2 * SlotsPerLevel + (int)((t.Tick >> (2 * SlotBits)) & SlotMask);
        else
        {
            // Beyond the reach: the farthest slot, from which the cascade files it again.
            long tick = delta <= Reach ? t.Tick : _next + Reach;
            list = 3 * SlotsPerLevel + (int)((tick >> (3 * SlotBits)) & SlotMask);
        }
        Link(timer, ref t, list);
    }

    /// <summary>
    /// At a tick that starts a slot of an outer level, re-files that slot's timers closer in. Every timer in the
    /// slot is due at or after this tick and within the slot's span, so each lands on a lower level, never back in
    /// a slot being cascaded now. Outer levels first, so a timer can fall through several levels at once.
    /// </summary>
    private void Cascade(long tick)
    {
        for (int level = Levels - 1; level >= 1; level--)
        {
            int shift = level * SlotBits;
            if ((tick & ((1L << shift) - 1)) != 0)
                continue;
            int list = level * SlotsPerLevel + (int)((tick >> shift) & SlotMask);
            int i = _heads[list];
            if (i < 0)
                continue;
            _heads[list] = -1;
            _occupied[list >> 6] &= ~(1UL << list);
            while (i >= 0)
            {
                ref var t = ref _timers[i];
                int next = t.Next;
                File(i, ref t);
                i = next;
            }
        }
    }

    /// <summary>
    /// The first tick at or after the clock at which something happens: a non-empty innermost slot comes due, or a
    /// non-empty outer slot cascades. <see cref="long.MaxValue"/> if the wheel is empty.
    /// </summary>
    private long NextEventTick()
    {
        long best = long.MaxValue;
        int slot = FirstOccupied(0, (int)(_next & SlotMask));
        if (slot >= 0)
            best = _next + ((slot - _next) & SlotMask);
        for (int level = 1; level < Levels; level++)
        {
            int shift = level * SlotBits;
            // The next boundary of this level, in units of its slots; its slot digit is the low 8 bits.
            long boundary = (_next + (1L << shift) - 1) >> shift;
            slot = FirstOccupied(level, (int)(boundary & SlotMask));
            if (slot < 0)
                continue;
            long tick = (boundary + ((slot - boundary) & SlotMask)) << shift;
            if (tick < best)
                best = tick;
        }
        return best;
    }

    /// <summary>The first occupied slot of <paramref name="level"/> in ring order from <paramref name="from"/>, or -1.</summary>
    private int FirstOccupied(int level, int from)
    {
        int first = level * WordsPerLevel;
        int w = from >> 6;
        ulong word = _occupied[first + w] & (ulong.MaxValue << from);
        // Four words from `from`'s, then `from`'s again for the bits below `from`.
        for (int i = 0; i <= WordsPerLevel; i++)
        {
            if (word != 0)
                return (w << 6) | BitOperations.TrailingZeroCount(word);
            w = (w + 1) & (WordsPerLevel - 1);
            word = _occupied[first + w];
        }
        return -1;
    }

    /// <summary>Takes timers off the head of <paramref name="list"/> into <paramref name="expired"/> while there is room.</summary>
    private int Drain(int list, Span<int> expired, int n)
    {
        int i = _heads[list];
        int taken = 0;
        while (i >= 0 && n < expired.Length)
        {
            ref var t = ref _timers[i];
            int next = t.Next;
            t.Next = t.Prev = -1;
            t.List = Idle;
            expired[n++] = i;
            taken++;
            i = next;
        }
        Scheduled -= taken;
        _heads[list] = i;
        if (i >= 0)
            _timers[i].Prev = -1;
        else if (list != DueList)
            _occupied[list >> 6] &= ~(1UL << list);
        return n;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void Link(int timer, ref TimerEntry t, int list)
    {
        int head = _heads[list];
        t.List = list;
        t.Prev = -1;
        t.Next = head;
        if (head >= 0)
            _timers[head].Prev = timer;
        else if (list != DueList)
            _occupied[list >> 6] |= 1UL << list;
        _heads[list] = timer;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void Unlink(ref TimerEntry t)
    {
        if (t.Prev >= 0)
            _timers[t.Prev].Next = t.Next;
        else
        {
            _heads[t.List] = t.Next;
            if (t.Next < 0 && t.List != DueList)
                _occupied[t.List >> 6] &= ~(1UL << t.List);
        }
        if (t.Next >= 0)
            _timers[t.Next].Prev = t.Prev;
        t.Next = t.Prev = -1;
        t.List = Idle;
    }

    /// <summary>The tick that fires a deadline: rounded up, 0 for the start and anything before it.</summary>
    private long TickOfDeadline(long deadlineNs)
    {
        if (deadlineNs <= _startNs)
            return 0;
        ulong ns = (ulong)deadlineNs - (ulong)_startNs; // exact: the difference is in (0, 2^64)
        ulong tick = (ns - 1) / _tickNs + 1;
        return tick >= MaxTick ? MaxTick : (long)tick;
    }

    /// <summary>The last tick boundary at or before a time, rounded down; -1 before the start.</summary>
    private long TickAtOrBefore(long nowNs)
    {
        if (nowNs < _startNs)
            return -1;
        ulong tick = ((ulong)nowNs - (ulong)_startNs) / _tickNs;
        return tick >= MaxTick ? MaxTick : (long)tick;
    }

    private long TimeOfTick(long tick)
    {
        Int128 ns = _startNs + (Int128)tick * (long)_tickNs;
        return ns >= long.MaxValue ? long.MaxValue : ns <= long.MinValue ? long.MinValue : (long)ns;
    }
}
