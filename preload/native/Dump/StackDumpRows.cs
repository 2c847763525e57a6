using Onload.StackDump;
using Onload.Stack.Tcp;
using Onload.Stack.Wire;

namespace Onload.Native.Dump;

/// <summary>
/// The stack's state as plain rows, copied under the stack lock (<see cref="SocketLayer.CopyForDump"/>) into arrays
/// made once and reused, so that the lock is held for a copy only (the one allocation under it is the counters'
/// enumerator): the strings and the JSON are made afterwards, and the dumping client is written to with the lock
/// released, so a client that stalls never stalls the program.
/// </summary>
internal sealed class StackDumpRows
{
    public struct Tcp
    {
        public int Id;
        public TcpState State;
        public Ipv4Address LocalAddress;
        public ushort LocalPort;
        public Ipv4Address RemoteAddress;
        public ushort RemotePort;
        public int ReceiveQueue;
        public int SendQueue;
        public uint Retransmits;
        public int Backoff;
        public long SrttNs;
        public long RttVarNs;
        public long RtoNs;
        public uint Cwnd;
        public uint Ssthresh;
        public int Mss;
        public bool Orphaned;
    }

    public struct Udp
    {
        public int Id;
        public Ipv4Address LocalAddress;
        public ushort LocalPort;
        public Ipv4Address RemoteAddress;
        public ushort RemotePort;
        public int QueuedDatagrams;
        public int QueuedBytes;
        public long InDatagrams;
        public long Drops;
    }

    public StackDumpRows(int tcpCapacity, int udpCapacity)
    {
        TcpRows = new Tcp[tcpCapacity];
        UdpRows = new Udp[udpCapacity];
    }

    public Tcp[] TcpRows { get; }
    public int TcpCount;
    public Udp[] UdpRows { get; }
    public int UdpCount;
    /// <summary>The counters in <c>StackCounters.Snapshot</c>'s order; cleared and refilled each time.</summary>
    public List<KeyValuePair<string, long>> Counters { get; } = new(128);

    public Ipv4Cidr Address;
    public int Mtu;
    public bool LinkUp;
    public bool Suspended;
    public bool Removed;
    public int Filters;
    public long RxFrames, TxFrames, RxDropNoBuffer, RxDropRingFull, TxDropRingFull, TxErrors;

    /// <summary>The document onload-stackdump reads, made from the rows (outside the lock) and the runtime's figures.</summary>
    public StackSnapshot ToSnapshot(in StackIdentity identity, RuntimeSnapshot runtime)
    {
        var tcp = new List<TcpSocketSnapshot>(TcpCount);
        foreach (ref readonly var t in TcpRows.AsSpan(0, TcpCount))
            tcp.Add(new TcpSocketSnapshot(t.Id, LinuxStateName(t.State), t.LocalAddress.ToString(), t.LocalPort,
                t.RemoteAddress.ToString(), t.RemotePort, t.ReceiveQueue, t.SendQueue, t.Retransmits, t.Backoff,
                t.SrttNs / 1000, t.RttVarNs / 1000, t.RtoNs / 1000, t.Cwnd, t.Ssthresh, t.Mss, t.Orphaned));
        var udp = new List<UdpSocketSnapshot>(UdpCount);
        foreach (ref readonly var u in UdpRows.AsSpan(0, UdpCount))
            udp.Add(new UdpSocketSnapshot(u.Id, u.LocalAddress.ToString(), u.LocalPort, u.RemoteAddress.ToString(), u.RemotePort,
                u.QueuedDatagrams, u.QueuedBytes, u.InDatagrams, u.Drops));
        var counters = new Dictionary<string, long>(Counters.Count);
        foreach (var (name, value) in Counters)
            counters[name] = value;
        var vnic = new VnicSnapshot(identity.VnicSpec, identity.Backend, identity.Mode, identity.VnicId,
            RxFrames, TxFrames, RxDropNoBuffer, RxDropRingFull, TxDropRingFull, TxErrors);
        return new StackSnapshot(identity.Pid, identity.Command, identity.Interface, vnic, identity.MacAddress, Address.ToString(),
            Mtu, LinkUp, Suspended, Removed, Filters, tcp, udp, counters, runtime);
    }

    /// <summary>The state as Linux names it (include/net/tcp_states.h, as netstat prints it).</summary>
    private static string LinuxStateName(TcpState state) => state switch
    {
        TcpState.Closed => "CLOSE",
        TcpState.Listen => "LISTEN",
        TcpState.SynSent => "SYN_SENT",
        TcpState.SynReceived => "SYN_RECV",
        TcpState.Established => "ESTABLISHED",
        TcpState.FinWait1 => "FIN_WAIT1",
        TcpState.FinWait2 => "FIN_WAIT2",
        TcpState.CloseWait => "CLOSE_WAIT",
        TcpState.Closing => "CLOSING",
        TcpState.LastAck => "LAST_ACK",
        TcpState.TimeWait => "TIME_WAIT",
        _ => state.ToString(),
    };
}

/// <summary>What does not change while the stack lives: whose it is and what it runs on.</summary>
internal readonly record struct StackIdentity(int Pid, string Command, string Interface, string MacAddress, string VnicSpec,
    string Backend, string Mode, uint VnicId);
