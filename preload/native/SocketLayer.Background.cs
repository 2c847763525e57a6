using Onload.Vnic;

namespace Onload.Native;

// The background thread: runs the stack while the program does not, so that a program busy computing (or asleep in a
// kernel call) still ACKs, retransmits, receives into its windows and wakes its sleeping threads. It sleeps on the
// VNIC's wait fd and a timerfd set to the stack's next timer, and uses no CPU while the stack is idle. While a program
// thread is running the stack itself (it polled within the last QuietNs) the thread keeps away from the VNIC, so it
// neither contends for the lock nor takes frames from a spinning thread; a program thread that goes to sleep tells it
// at once (ProgramWentQuiet). ONLOAD_BACKGROUND=0 turns it off: sleepers then watch the VNIC themselves.
internal sealed partial class SocketLayer
{
    /// <summary>How long after a program thread's last poll the background thread takes over the stack.</summary>
    private const long QuietNs = 1_000_000;

    /// <summary>When a program thread last polled the stack (clock nanoseconds); 0 once it went to sleep.</summary>
    private long _lastProgramPollNs;

    /// <summary>The process the thread runs in (0: none). A forked child has no such thread, and its sleepers watch
    /// the VNIC themselves.</summary>
    private int _backgroundPid;

    private int _backgroundTimer = -1, _backgroundKick = -1;

    /// <summary>The thread sleeps on the VNIC's wait fd (or is about to): a program thread going to sleep need not
    /// kick it. Written with a full fence, as is <see cref="_lastProgramPollNs"/> by a thread going to sleep, so that
    /// of the two one always sees the other's write.</summary>
    private int _backgroundWatching;

    /// <summary>Times the thread found work (frames or due timers) and the frames it took: onload-stackdump's
    /// <c>Layer.BackgroundRuns</c> and <c>Layer.BackgroundFrames</c>.</summary>
    private long _backgroundRuns, _backgroundFrames;

    private bool _disposed;

    private bool BackgroundRunning => _backgroundPid != 0 && _backgroundPid == NativeWait.GetPid();

    /// <summary>Starts the thread (after the stack, from the shim's first socket call: it inherits the mask that
    /// keeps the program's asynchronous signals away from the stack's threads). Without a timerfd or an eventfd there
    /// is no thread, and sleepers watch the VNIC as with ONLOAD_BACKGROUND=0.</summary>
    private void StartBackground()
    {
        if (Environment.GetEnvironmentVariable("ONLOAD_BACKGROUND") == "0")
            return;
        _backgroundTimer = NativeWait.NewTimerFd();
        _backgroundKick = NativeWait.NewEventFd();
        if (_backgroundTimer < 0 || _backgroundKick < 0)
        {
            foreach (int fd in (ReadOnlySpan<int>)[_backgroundTimer, _backgroundKick])
                if (fd >= 0)
                    _ = NativeWait.Close(fd);
            _backgroundTimer = _backgroundKick = -1;
            return;
        }
        _backgroundPid = NativeWait.GetPid();
        new Thread(BackgroundLoop) { IsBackground = true, Name = "onload-stack" }.Start();
    }

    /// <summary>Every poll by a program thread: the stack runs, the waiters it made ready wake, and the background
    /// thread keeps away for <see cref="QuietNs"/>. A background thread asleep on the VNIC is woken the first time:
    /// this poll took the VNIC's wake-up (a shared-memory VNIC rings its doorbell once per declared sleep), so the
    /// thread would sleep on while the program, perhaps about to compute for a while, no longer runs the stack.</summary>
    private void PollStack()
    {
        _stack.Poll();
        Volatile.Write(ref _lastProgramPollNs, MonotonicClock.Instance.NowNanoseconds);
        if (_backgroundWatching != 0)
        {
            _backgroundWatching = 0;
            NativeWait.Signal(_backgroundKick);
        }
        WakeReadyWaiters();
    }

    /// <summary>A program thread is going to sleep (under the lock): the background thread must watch the VNIC now,
    /// not once the thread's own polls, which made the program look busy, are <see cref="QuietNs"/> old.</summary>
    private void ProgramWentQuiet()
    {
        Interlocked.Exchange(ref _lastProgramPollNs, 0);
        if (Volatile.Read(ref _backgroundWatching) == 0)
            NativeWait.Signal(_backgroundKick);
    }

    private unsafe void BackgroundLoop()
    {
        var fds = stackalloc NativeWait.PollFd[3];
        int vnicFd = _stack.Vnic.WaitHandle;
        while (true)
        {
            Interlocked.Exchange(ref _backgroundWatching, 0);
            long quietAt = Volatile.Read(ref _lastProgramPollNs) + QuietNs;
            bool watch = false;
            long wakeAt;
            if (MonotonicClock.Instance.NowNanoseconds < quietAt)
                wakeAt = quietAt; // a program thread is running the stack: look again when it has gone quiet
            else
            {
                lock (_lock)
                {
                    if (_disposed)
                        return;
                    bool timerDue = _stack.NextTimerNs <= MonotonicClock.Instance.NowNanoseconds;
                    int frames = _stack.Poll();
                    if (frames > 0 || timerDue)
                    {
                        _backgroundRuns++;
                        _backgroundFrames += frames;
                    }
                    WakeReadyWaiters();
                    if (!_stack.Vnic.PrepareToSleep())
                        continue; // frames arrived meanwhile
                    // A program thread asleep on the VNIC wakes for frames itself (BeginWait's watcher): this thread
                    // keeps to the timers rather than wake with it and contend for the lock.
                    watch = _vnicWatcher < 0;
                    Volatile.Write(ref _backgroundWatching, watch ? 1 : 0);
                    wakeAt = _stack.NextTimerNs;
                }
            }
            NativeWait.ArmTimer(_backgroundTimer, wakeAt);
            fds[0] = new NativeWait.PollFd { Fd = _backgroundTimer, Events = NativeWait.PollIn };
            fds[1] = new NativeWait.PollFd { Fd = _backgroundKick, Events = NativeWait.PollIn };
            fds[2] = new NativeWait.PollFd { Fd = vnicFd, Events = NativeWait.PollIn };
            _ = NativeWait.Poll(fds, watch ? 3u : 2u, -1);
            if (fds[0].Revents != 0)
                NativeWait.Drain(_backgroundTimer);
            if (fds[1].Revents != 0)
                NativeWait.Drain(_backgroundKick);
        }
    }
}
