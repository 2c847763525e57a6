namespace Onload.Vnic.Netlink;

/// <summary>What a netlink socket dropped or lost, for the daemon's stats. Counts only grow.</summary>
public sealed class NetlinkCounters
{
    /// <summary>Messages skipped because they were malformed: a bad <c>nlmsg_len</c>, a short family header, an
    /// attribute overrunning its message or of the wrong size.</summary>
    public long MalformedMessages { get; private set; }

    /// <summary>Datagrams longer than the receive buffer: the kernel cut them and their tail is lost.</summary>
    public long TruncatedDatagrams { get; private set; }

    /// <summary>Times the socket's receive queue overflowed (recv failed with ENOBUFS): notifications were lost.</summary>
    public long Overruns { get; private set; }

    /// <summary>Datagrams from a sender other than the kernel (port id not 0), dropped unread.</summary>
    public long ForeignSenders { get; private set; }

    /// <summary>Dumps redone because the table changed while the kernel walked it (NLM_F_DUMP_INTR).</summary>
    public long DumpsRetried { get; private set; }

    internal void Malformed(int count = 1) => MalformedMessages += count;
    internal void Truncated() => TruncatedDatagrams++;
    internal void Overrun() => Overruns++;
    internal void Foreign() => ForeignSenders++;
    internal void DumpRetried() => DumpsRetried++;

    public override string ToString() =>
        $"malformed {MalformedMessages}, truncated {TruncatedDatagrams}, overruns {Overruns}, foreign {ForeignSenders}, dumps retried {DumpsRetried}";
}
