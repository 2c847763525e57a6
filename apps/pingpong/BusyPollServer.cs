using Onload.Stack;

namespace Onload.Apps.PingPong;

/// <summary>
/// The answering side's loop, for stack-to-stack rows: poll the stack, answer what arrived, again until
/// <see cref="Stop"/>. Never sleeps. Subclasses say how to open the socket and how to answer.
/// </summary>
internal abstract class BusyPollServer(NetStack stack)
{
    protected readonly NetStack Stack = stack;
    private volatile bool _stop;

    public long Received { get; protected set; }
    public long Replied { get; protected set; }
    public long Ignored { get; protected set; }
    public long Errors { get; protected set; }

    /// <summary>What the server did, for its last line.</summary>
    public virtual string Tally => $"received {Received} replied {Replied} ignored {Ignored} errors {Errors}";

    public void Stop() => _stop = true;

    /// <summary>Opens the socket. Returns 0 or a negated errno.</summary>
    public abstract int Open();

    /// <summary>Polls until <see cref="Stop"/>; never sleeps.</summary>
    public void Run()
    {
        while (!_stop)
        {
            Stack.Poll();
            AnswerArrivals();
        }
        Closing();
    }

    /// <summary>Answers everything the last poll brought in.</summary>
    protected abstract void AnswerArrivals();

    /// <summary>After the last poll: close what is open.</summary>
    protected virtual void Closing()
    {
    }
}
