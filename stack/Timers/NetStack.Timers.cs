using Onload.Stack.Tcp;
using Onload.Stack.Timers;

namespace Onload.Stack;

// Every timer of the stack is one id on one wheel, in a range per owner: TCP's (connection × kind), then one per
// neighbour entry (its next probe or its garbage collection), one per reassembly queue (its time limit), one per
// multicast group (its next report). An expiry costs O(1) and nothing scans a table to find what is due.
public sealed partial class NetStack
{
    private readonly TimerWheel _timers;
    private readonly int[] _expired = new int[64];
    /// <summary>The first id of each owner's range after TCP's, which starts at 0.</summary>
    private readonly int _arpTimerBase;
    private readonly int _reassemblyTimerBase;
    private readonly int _igmpTimerBase;

    private static int TcpTimerIds(StackOptions o) => o.TcpConnections * (int)TcpTimer.Count;

    private static int TimerIds(StackOptions o) => TcpTimerIds(o) + o.ArpEntries + o.ReassemblyQueues + o.MulticastGroups;

    private int ArpTimerId(int entry) => _arpTimerBase + entry;

    private int ReassemblyTimerId(int queue) => _reassemblyTimerBase + queue;

    private int IgmpTimerId(int group) => _igmpTimerBase + group;

    /// <summary>Fires what is due: each expired id goes to its owner. A handler may re-arm its own timer.</summary>
    private void RunTimers()
    {
        int n;
        while ((n = _timers.Advance(_now, _expired)) > 0)
        {
            for (int i = 0; i < n; i++)
            {
                int id = _expired[i];
                if (id < _arpTimerBase)
                    TcpTimerExpired(id);
                else if (id < _reassemblyTimerBase)
                    ArpTimerExpired(id - _arpTimerBase);
                else if (id < _igmpTimerBase)
                    ReassemblyTimerExpired(id - _reassemblyTimerBase);
                else
                    IgmpTimerExpired(id - _igmpTimerBase);
            }
        }
    }
}
