using Onload.Stack;
using Onload.Stack.Tcp;
using Onload.Vnic;

namespace Onload.Native;

// Per-waiter wake-ups. A program thread that is going to sleep registers, under the stack lock, the sockets and events
// it waits for together with an eventfd of its own (BeginWait); whoever runs the stack next under that lock (a program
// thread in any call, or the background thread) and finds one of them ready writes that eventfd (WakeReadyWaiters).
// The readiness check that decides to sleep, the registration and every stack poll happen under the one lock, so a
// wake-up can be neither lost nor spent on the wrong thread, and no other sleeper is disturbed.
internal sealed partial class SocketLayer
{
    /// <summary>One sleeping thread: what it waits for, and the eventfd that wakes it. The records are made once and
    /// reused (the handle arrays grow to the largest wait seen), so a wait allocates nothing.</summary>
    private sealed class Waiter
    {
        public bool InUse;
        public bool Woken;
        public int WakeFd;
        public int Count;
        public int[] Handles = new int[8];
        public short[] Events = new short[8];
    }

    private Waiter[] _waiters = [new(), new(), new(), new()];

    /// <summary>Registered waiters not yet woken: when 0, a stack poll checks nobody.</summary>
    private int _sleeping;

    /// <summary>
    /// The one waiter that also sleeps on the VNIC's wait fd while the background thread runs (-1: none). Frames then
    /// wake a sleeping program thread directly, as when it slept on the VNIC alone, rather than through the
    /// background thread and its eventfd, a second hop; it runs the stack when it wakes, which wakes the waiters
    /// the frames were for. One, so that a frame wakes no herd.
    /// </summary>
    private int _vnicWatcher = -1;

    /// <summary>Waiters woken because a socket they waited for became ready (onload-stackdump's counters).</summary>
    private long _waiterWakeups;

    /// <summary>
    /// Gets ready to sleep: polls the stack and, when none of <paramref name="handles"/> has any of its
    /// <paramref name="events"/> (poll(2)'s bits, matched exactly: the caller adds POLLERR and POLLHUP if it wants
    /// them), registers the caller's <paramref name="wakeFd"/> to be written when one does. Returns how many are ready
    /// (revents filled, nothing registered), or 0 with <paramref name="waiter"/> to pass to <see cref="EndWait"/>.
    /// <paramref name="vnicFd"/> is -1, or the stack's wait fd (armed) for the caller to sleep on too: for every waiter
    /// when there is no background thread (<paramref name="timeoutMs"/> then cut to the stack's next timer), for one
    /// at a time when there is (<see cref="_vnicWatcher"/>). A thread the VNIC wakes runs the stack, which wakes
    /// exactly the waiters whose sockets that made ready. -EAGAIN: frames are already waiting (poll again rather than
    /// sleep).
    /// </summary>
    public int BeginWait(int wakeFd, ReadOnlySpan<int> handles, ReadOnlySpan<short> events, Span<short> revents,
        out int waiter, out int vnicFd, ref int timeoutMs)
    {
        waiter = -1;
        vnicFd = -1;
        lock (_lock)
        {
            PollStack();
            int ready = 0;
            for (int i = 0; i < handles.Length; i++)
            {
                revents[i] = (short)(PollBits(handles[i]) & events[i]);
                if (revents[i] != 0)
                    ready++;
            }
            if (ready > 0)
                return ready;
            bool background = BackgroundRunning;
            bool watchVnic = !background || _vnicWatcher < 0;
            if (watchVnic)
            {
                if (!_stack.Vnic.PrepareToSleep())
                    return -(int)Errno.EAGAIN;
                vnicFd = _stack.Vnic.WaitHandle;
            }
            if (!background)
                CutToNextTimer(ref timeoutMs);
            waiter = Register(wakeFd, handles, events);
            if (background)
            {
                if (watchVnic)
                {
                    // Frames wake this thread directly; the background thread, which would wake for them too and
                    // contend for the lock, keeps to timers and takes over at its next look.
                    _vnicWatcher = waiter;
                    Interlocked.Exchange(ref _lastProgramPollNs, 0);
                }
                else
                    ProgramWentQuiet();
            }
            return 0;
        }
    }

    /// <summary>Ends a wait begun by <see cref="BeginWait"/>: 1 when the stack wrote the waiter's eventfd (the caller
    /// reads it, so that the next sleep starts clean), 0 when not (it woke for something else).</summary>
    public int EndWait(int waiter)
    {
        lock (_lock)
        {
            if ((uint)waiter >= (uint)_waiters.Length || !_waiters[waiter].InUse)
                return -(int)Errno.EINVAL;
            var w = _waiters[waiter];
            w.InUse = false;
            if (!w.Woken)
                _sleeping--;
            if (_vnicWatcher == waiter)
            {
                // The background thread kept off the VNIC for this thread: it must look again, to watch for the
                // threads still asleep, or to take over once this one computes without socket calls.
                _vnicWatcher = -1;
                if (Volatile.Read(ref _backgroundWatching) == 0 && BackgroundRunning)
                    NativeWait.Signal(_backgroundKick);
            }
            return w.Woken ? 1 : 0;
        }
    }

    private int Register(int wakeFd, ReadOnlySpan<int> handles, ReadOnlySpan<short> events)
    {
        int slot = 0;
        while (slot < _waiters.Length && _waiters[slot].InUse)
            slot++;
        if (slot == _waiters.Length)
        {
            // More threads asleep at once than ever before: the table grows (cold; the program made a thread).
            slot = _waiters.Length;
            var grown = new Waiter[slot * 2];
            _waiters.CopyTo(grown, 0);
            for (int i = slot; i < grown.Length; i++)
                grown[i] = new Waiter();
            _waiters = grown;
        }
        var w = _waiters[slot];
        if (w.Handles.Length < handles.Length)
        {
            w.Handles = new int[handles.Length];
            w.Events = new short[handles.Length];
        }
        handles.CopyTo(w.Handles);
        events.CopyTo(w.Events);
        w.Count = handles.Length;
        w.WakeFd = wakeFd;
        w.Woken = false;
        w.InUse = true;
        _sleeping++;
        return slot;
    }

    /// <summary>Writes the eventfd of every waiter one of whose sockets is ready. Called under the lock after each
    /// stack poll (frames and timers change readiness) and after calls that change another thread's sockets
    /// (shutdown, close).</summary>
    private void WakeReadyWaiters()
    {
        if (_sleeping == 0)
            return;
        foreach (var w in _waiters)
        {
            if (!w.InUse || w.Woken)
                continue;
            for (int i = 0; i < w.Count; i++)
                if ((PollBits(w.Handles[i]) & w.Events[i]) != 0)
                {
                    w.Woken = true;
                    _sleeping--;
                    _waiterWakeups++;
                    NativeWait.Signal(w.WakeFd);
                    break;
                }
        }
    }

    /// <summary>Every poll(2) bit a handle has now (POLLIN, POLLOUT, POLLERR, POLLHUP, POLLRDHUP as Linux's tcp_poll and
    /// udp_poll set them; POLLNVAL for a handle that names nothing); a handle with <see cref="UdpHandleTag"/> is a UDP
    /// socket's.</summary>
    private short PollBits(int handle)
    {
        const short PollIn = 0x001, PollOut = 0x004, PollErr = 0x008, PollHup = 0x010, PollNval = 0x020, PollRdHup = 0x2000;
        if ((handle & UdpHandleTag) != 0)
            return UdpPollBits(handle & ~UdpHandleTag);
        var table = _stack.TcpConnections;
        if (!table.IsValid(handle))
            return PollNval;
        ref var t = ref table[handle];
        short r = 0;
        if (_stack.TcpReadable(handle))
            r |= PollIn;
        if (_stack.TcpWritable(handle))
            r |= PollOut;
        if (t.Error != 0)
            r |= PollErr;
        if (t.Dead || (t.FinReceived && t.FinQueued))
            r |= PollHup;
        // Linux's tcp_poll: the read side shut (a FIN, or shutdown(SHUT_RD)) is EPOLLRDHUP.
        if (t.State != TcpState.Listen && (t.FinReceived || t.ShutdownRead || t.Dead))
            r |= PollRdHup;
        return r;
    }

    /// <summary>Cuts <paramref name="timeoutMs"/> (-1: none) to the stack's next timer, so that a sleeper with no
    /// background thread behind it wakes to run retransmits and delayed ACKs.</summary>
    private void CutToNextTimer(ref int timeoutMs)
    {
        long next = _stack.NextTimerNs;
        if (next == long.MaxValue)
            return;
        long untilMs = Math.Max(0, (next - MonotonicClock.Instance.NowNanoseconds + 999_999) / 1_000_000);
        if (timeoutMs < 0 || untilMs < timeoutMs)
            timeoutMs = (int)Math.Min(untilMs, int.MaxValue);
    }
}
