using System.IO.Pipelines;

namespace Onload.Sockets;

/// <summary>
/// Work handed to the stack thread: the continuations of the pipes it serves (it is the Output pipes' reader
/// scheduler and the Input pipes' writer scheduler) and the application's requests (send this datagram, accept,
/// close). A ring of (action, state) pairs under a lock, grown when full and never shrunk, so scheduling allocates
/// nothing in steady state. The stack thread announces when it goes to sleep; only then does scheduling ring the
/// wake event (a system call), so a busy stack thread is reached for the cost of a lock.
/// </summary>
internal sealed class StackScheduler(Action wake) : PipeScheduler
{
    private readonly Lock _lock = new();
    private (Action<object?> Action, object? State)[] _items = new (Action<object?>, object?)[64];
    private int _head;
    private int _count;
    private bool _sleeping;
    private bool _closed;

    /// <summary>Runs <paramref name="action"/> on the stack thread; once the stack has stopped, at once on the caller's
    /// thread (every action checks whether its stack is still running).</summary>
    public override void Schedule(Action<object?> action, object? state)
    {
        bool wakeUp;
        lock (_lock)
        {
            if (_closed)
            {
                wakeUp = false;
            }
            else
            {
                if (_count == _items.Length)
                    Grow();
                _items[(_head + _count) % _items.Length] = (action, state);
                _count++;
                wakeUp = _sleeping;
                _sleeping = false;
                goto Queued;
            }
        }
        action(state);
        return;
    Queued:
        if (wakeUp)
            wake();
    }

    private void Grow()
    {
        var items = new (Action<object?>, object?)[_items.Length * 2];
        for (int i = 0; i < _count; i++)
            items[i] = _items[(_head + i) % _items.Length];
        _items = items;
        _head = 0;
    }

    /// <summary>Runs what was scheduled, in order (stack thread). Returns how many ran.</summary>
    public int RunPending()
    {
        int ran = 0;
        while (true)
        {
            (Action<object?> Action, object? State) item;
            lock (_lock)
            {
                if (_count == 0)
                    return ran;
                item = _items[_head];
                _items[_head] = default;
                _head = (_head + 1) % _items.Length;
                _count--;
            }
            item.Action(item.State);
            ran++;
        }
    }

    /// <summary>The stack thread is about to sleep: false (stay awake) if work is waiting. After true, the next
    /// <see cref="Schedule"/> rings the wake event.</summary>
    public bool TryBeginSleep()
    {
        lock (_lock)
        {
            if (_count > 0)
                return false;
            _sleeping = true;
            return true;
        }
    }

    public void EndSleep()
    {
        lock (_lock)
            _sleeping = false;
    }

    /// <summary>The stack thread has stopped: what is queued runs now, on this thread, and so does all that comes later.</summary>
    public void Close()
    {
        lock (_lock)
            _closed = true;
        RunPending();
    }
}
