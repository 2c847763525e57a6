using Onload.Driverlink;
using Onload.Native.Dump;
using Onload.Stack.Tcp;
using Onload.Stack.Wire;

namespace Onload.Native;

// What onload-stackdump sees: the stack copied row by row under the lock into rows made beforehand.
internal sealed partial class SocketLayer
{
    /// <summary>A buffer the size of this stack's tables, for <see cref="CopyForDump"/>.</summary>
    public StackDumpRows NewDumpRows() => new(_stack.TcpConnections.Capacity, _stack.UdpSockets.Capacity);

    /// <summary>Who this stack is and what it runs on; <paramref name="command"/> is the program's command line.</summary>
    public StackIdentity DumpIdentity(string command) => new(Environment.ProcessId, command, _interface,
        _stack.MacAddress.ToString(), _session.Vnic.Spec, _session.Vnic.Inner.Spec,
        _session.Mode == VnicMode.Exclusive ? "exclusive" : "shared", _session.VnicId);

    /// <summary>Copies every open socket, the link and the counters into <paramref name="rows"/>, under the stack
    /// lock and without polling the stack: a dump shows the stack as the program left it.</summary>
    public void CopyForDump(StackDumpRows rows)
    {
        lock (_lock)
        {
            var tcp = _stack.TcpConnections;
            rows.TcpCount = 0;
            for (int c = 0; c < tcp.Capacity; c++)
            {
                if (!tcp.IsValid(c))
                    continue;
                ref readonly var t = ref tcp[c];
                bool listening = t.State == TcpState.Listen;
                rows.TcpRows[rows.TcpCount++] = new StackDumpRows.Tcp
                {
                    Id = c,
                    State = t.State,
                    LocalAddress = _stack.TcpLocalEndpoint(c).Address, // 0.0.0.0 for a wildcard listener, as ss says
                    LocalPort = t.LocalPort,
                    RemoteAddress = t.RemoteAddress,
                    RemotePort = t.RemotePort,
                    // ss: a listener's receive queue is its accept queue, its send queue the backlog.
                    ReceiveQueue = listening ? t.AcceptQueueLength : Math.Max(0, t.Readable),
                    SendQueue = listening ? t.Backlog : t.SndQueued,
                    Retransmits = t.TotalRetrans,
                    Backoff = t.Backoff,
                    SrttNs = t.Srtt,
                    RttVarNs = t.RttVar,
                    RtoNs = t.Rto,
                    Cwnd = t.Cwnd,
                    Ssthresh = t.Ssthresh,
                    Mss = t.SndMss,
                    Orphaned = t.Orphaned,
                };
            }
            var udp = _stack.UdpSockets;
            rows.UdpCount = 0;
            for (int s = 0; s < udp.Capacity; s++)
            {
                if (!udp.IsValid(s))
                    continue;
                ref readonly var u = ref udp[s];
                rows.UdpRows[rows.UdpCount++] = new StackDumpRows.Udp
                {
                    Id = s,
                    LocalAddress = u.LocalAddress,
                    LocalPort = u.LocalPort,
                    RemoteAddress = u.RemoteAddress,
                    RemotePort = u.RemotePort,
                    QueuedDatagrams = u.QueueCount,
                    QueuedBytes = u.QueuedBytes,
                    InDatagrams = u.InDatagrams,
                    Drops = u.Drops,
                };
            }
            rows.Counters.Clear();
            foreach (var counter in _stack.Counters.Snapshot())
                rows.Counters.Add(counter);
            rows.Counters.Add(new("Layer.BackgroundRuns", _backgroundRuns));
            rows.Counters.Add(new("Layer.BackgroundFrames", _backgroundFrames));
            rows.Counters.Add(new("Layer.WaiterWakeups", _waiterWakeups));
            var v = _stack.Vnic.Counters;
            (rows.RxFrames, rows.TxFrames, rows.RxDropNoBuffer, rows.RxDropRingFull, rows.TxDropRingFull, rows.TxErrors) =
                (v.RxFrames, v.TxFrames, v.RxDropNoBuffer, v.RxDropRingFull, v.TxDropRingFull, v.TxErrors);
            rows.Address = _stack.Options.Address;
            rows.Mtu = _stack.Mtu;
            rows.LinkUp = _stack.LinkUp;
            rows.Suspended = _stack.Suspended;
            rows.Removed = _session.Removed;
            rows.Filters = _session.Filters;
        }
    }
}
