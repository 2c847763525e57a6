using Onload.Stack.Wire;

namespace Onload.Stack;

/// <summary>
/// What the stack counted. Names follow the kernel's SNMP counters (<c>/proc/net/snmp</c>: Ip:, Icmp:, Udp:)
/// where they mean the same thing; <see cref="Drops"/> holds every drop by its <see cref="DropReason"/>.
/// </summary>
public sealed class StackCounters
{
    private readonly long[] _drops = new long[Enum.GetValues<DropReason>().Length];

    public long RxFrames;
    public long TxFrames;
    public long ArpInRequests;
    public long ArpInReplies;
    public long ArpOutRequests;
    public long ArpOutReplies;
    /// <summary>Neighbour resolutions asked of the control plane in driverlink mode, where direct mode would send
    /// an ARP request (<see cref="IStackControl.ResolveNeighbour"/>).</summary>
    public long ArpOutControlResolves;
    /// <summary>Neighbours set or forgotten from outside the stack (<see cref="NetStack.SetNeighbour"/>,
    /// <see cref="NetStack.ForgetNeighbour"/>): in driverlink mode, the control plane's neighbour events.</summary>
    public long ArpInControlUpdates;
    /// <summary>Times the control plane suspended the VNIC (a daemon reconfiguring or resetting it).</summary>
    public long VnicSuspends;
    public long IpInReceives;
    public long IpInDelivers;
    public long IpOutRequests;
    public long IpOutNoRoutes;
    public long IcmpInMsgs;
    public long IcmpInEchos;
    public long IcmpInDestUnreachs;
    public long IcmpOutMsgs;
    public long IcmpOutEchoReps;
    public long IcmpOutDestUnreachs;
    public long IgmpInMsgs;
    public long IgmpInQueries;
    public long IgmpOutReports;
    public long IpReasmReqds;
    public long IpReasmOKs;
    public long IpReasmFails;
    public long IpFragOKs;
    public long IpFragCreates;
    public long TcpActiveOpens;
    public long TcpPassiveOpens;
    public long TcpAttemptFails;
    public long TcpEstabResets;
    public long TcpCurrEstab;
    public long TcpInSegs;
    public long TcpOutSegs;
    public long TcpRetransSegs;
    public long TcpInErrs;
    public long TcpOutRsts;
    public long TcpExtListenOverflows;
    /// <summary>SYNs met with a full SYN queue and answered with a cookie, or (cookies off) dropped.</summary>
    /// <summary>Duplicate ACKs not sent for out-of-window ACKs and SYNs: one per 500 ms per connection.</summary>
    public long TcpExtTCPACKSkippedSeq;
    /// <summary>Challenge ACKs held back by the per-connection 500 ms limit (Linux's TCPACKSkippedChallenge).</summary>
    public long TcpExtTCPACKSkippedChallenge;
    /// <summary>ICMP errors quoting a sequence number we had not sent or had seen acknowledged (Linux's OutOfWindowIcmps).</summary>
    public long TcpExtOutOfWindowIcmps;
    /// <summary>Half-open connections a listener dropped (Linux's ListenDrops; here only those ended by ICMP).</summary>
    public long TcpExtListenDrops;
    /// <summary>ICMP errors kept as a connection's soft error (no Linux counter).</summary>
    public long TcpIcmpSoftErrors;
    /// <summary>Connections whose path MTU an ICMP "fragmentation needed" lowered (no Linux counter).</summary>
    public long TcpPathMtuReductions;
    public long TcpExtTCPReqQFullDoCookies;
    public long TcpExtTCPReqQFullDrop;
    /// <summary>Cookie SYN-ACKs sent; ACKs that carried a good cookie; ACKs to a listener that sent cookies lately
    /// whose cookie was not good.</summary>
    public long TcpExtSyncookiesSent;
    public long TcpExtSyncookiesRecv;
    public long TcpExtSyncookiesFailed;
    /// <summary>TIME_WAIT connections ended early to make room in a full table (Linux counts under this name the
    /// TIME_WAITs it does not keep past net.ipv4.tcp_max_tw_buckets).</summary>
    public long TcpExtTCPTimeWaitOverflow;
    public long TcpExtTCPTimeouts;
    public long TcpExtTCPFastRetrans;
    public long TcpExtTCPChallengeACK;
    public long TcpExtPAWSEstab;
    public long TcpExtDelayedACKs;
    public long TcpExtTCPAbortOnData;
    public long TcpExtTCPAbortOnClose;
    public long TcpExtTCPAbortOnTimeout;
    public long TcpExtTCPSackRecovery;
    public long TcpExtTCPRenoRecovery;
    public long TcpExtTCPLostRetransmit;
    public long TcpExtTCPSACKReorder;
    public long TcpExtTCPDSACKRecv;
    public long TcpExtTCPDSACKOldSent;
    public long TcpExtTCPDSACKOfoSent;
    public long TcpExtTCPOFOQueue;
    public long TcpExtTCPOFODrop;
    public long TcpExtTCPLossProbes;
    public long TcpExtTCPLossProbeRecovery;
    /// <summary>Connections given to the kernel (at fork or exec) with their state and queues; no Linux twin.</summary>
    public long TcpHandedOver;
    public long UdpInDatagrams;
    public long UdpNoPorts;
    public long UdpInErrors;
    public long UdpInCsumErrors;
    public long UdpRcvbufErrors;
    public long UdpOutDatagrams;
    public long UdpSndbufErrors;

    public long Drop(DropReason reason) => _drops[(int)reason];

    internal void Count(DropReason reason) => _drops[(int)reason]++;

    /// <summary>Every counter with its value, drops as <c>Drop.REASON</c>; zero drops left out.</summary>
    public IEnumerable<KeyValuePair<string, long>> Snapshot()
    {
        yield return new(nameof(RxFrames), RxFrames);
        yield return new(nameof(TxFrames), TxFrames);
        yield return new(nameof(ArpInRequests), ArpInRequests);
        yield return new(nameof(ArpInReplies), ArpInReplies);
        yield return new(nameof(ArpOutRequests), ArpOutRequests);
        yield return new(nameof(ArpOutReplies), ArpOutReplies);
        yield return new(nameof(ArpOutControlResolves), ArpOutControlResolves);
        yield return new(nameof(ArpInControlUpdates), ArpInControlUpdates);
        yield return new(nameof(VnicSuspends), VnicSuspends);
        yield return new(nameof(IpInReceives), IpInReceives);
        yield return new(nameof(IpInDelivers), IpInDelivers);
        yield return new(nameof(IpOutRequests), IpOutRequests);
        yield return new(nameof(IpOutNoRoutes), IpOutNoRoutes);
        yield return new(nameof(IcmpInMsgs), IcmpInMsgs);
        yield return new(nameof(IcmpInEchos), IcmpInEchos);
        yield return new(nameof(IcmpInDestUnreachs), IcmpInDestUnreachs);
        yield return new(nameof(IcmpOutMsgs), IcmpOutMsgs);
        yield return new(nameof(IcmpOutEchoReps), IcmpOutEchoReps);
        yield return new(nameof(IcmpOutDestUnreachs), IcmpOutDestUnreachs);
        yield return new(nameof(IgmpInMsgs), IgmpInMsgs);
        yield return new(nameof(IgmpInQueries), IgmpInQueries);
        yield return new(nameof(IgmpOutReports), IgmpOutReports);
        yield return new(nameof(IpReasmReqds), IpReasmReqds);
        yield return new(nameof(IpReasmOKs), IpReasmOKs);
        yield return new(nameof(IpReasmFails), IpReasmFails);
        yield return new(nameof(IpFragOKs), IpFragOKs);
        yield return new(nameof(IpFragCreates), IpFragCreates);
        yield return new(nameof(TcpActiveOpens), TcpActiveOpens);
        yield return new(nameof(TcpPassiveOpens), TcpPassiveOpens);
        yield return new(nameof(TcpAttemptFails), TcpAttemptFails);
        yield return new(nameof(TcpEstabResets), TcpEstabResets);
        yield return new(nameof(TcpCurrEstab), TcpCurrEstab);
        yield return new(nameof(TcpInSegs), TcpInSegs);
        yield return new(nameof(TcpOutSegs), TcpOutSegs);
        yield return new(nameof(TcpRetransSegs), TcpRetransSegs);
        yield return new(nameof(TcpInErrs), TcpInErrs);
        yield return new(nameof(TcpOutRsts), TcpOutRsts);
        yield return new(nameof(TcpExtListenOverflows), TcpExtListenOverflows);
        yield return new(nameof(TcpExtTCPACKSkippedSeq), TcpExtTCPACKSkippedSeq);
        yield return new(nameof(TcpExtTCPACKSkippedChallenge), TcpExtTCPACKSkippedChallenge);
        yield return new(nameof(TcpExtOutOfWindowIcmps), TcpExtOutOfWindowIcmps);
        yield return new(nameof(TcpExtListenDrops), TcpExtListenDrops);
        yield return new(nameof(TcpIcmpSoftErrors), TcpIcmpSoftErrors);
        yield return new(nameof(TcpPathMtuReductions), TcpPathMtuReductions);
        yield return new(nameof(TcpExtTCPReqQFullDoCookies), TcpExtTCPReqQFullDoCookies);
        yield return new(nameof(TcpExtTCPReqQFullDrop), TcpExtTCPReqQFullDrop);
        yield return new(nameof(TcpExtSyncookiesSent), TcpExtSyncookiesSent);
        yield return new(nameof(TcpExtSyncookiesRecv), TcpExtSyncookiesRecv);
        yield return new(nameof(TcpExtSyncookiesFailed), TcpExtSyncookiesFailed);
        yield return new(nameof(TcpExtTCPTimeWaitOverflow), TcpExtTCPTimeWaitOverflow);
        yield return new(nameof(TcpExtTCPTimeouts), TcpExtTCPTimeouts);
        yield return new(nameof(TcpExtTCPFastRetrans), TcpExtTCPFastRetrans);
        yield return new(nameof(TcpExtTCPChallengeACK), TcpExtTCPChallengeACK);
        yield return new(nameof(TcpExtPAWSEstab), TcpExtPAWSEstab);
        yield return new(nameof(TcpExtDelayedACKs), TcpExtDelayedACKs);
        yield return new(nameof(TcpExtTCPAbortOnData), TcpExtTCPAbortOnData);
        yield return new(nameof(TcpExtTCPAbortOnClose), TcpExtTCPAbortOnClose);
        yield return new(nameof(TcpExtTCPAbortOnTimeout), TcpExtTCPAbortOnTimeout);
        yield return new(nameof(TcpExtTCPSackRecovery), TcpExtTCPSackRecovery);
        yield return new(nameof(TcpExtTCPRenoRecovery), TcpExtTCPRenoRecovery);
        yield return new(nameof(TcpExtTCPLostRetransmit), TcpExtTCPLostRetransmit);
        yield return new(nameof(TcpExtTCPSACKReorder), TcpExtTCPSACKReorder);
        yield return new(nameof(TcpExtTCPDSACKRecv), TcpExtTCPDSACKRecv);
        yield return new(nameof(TcpExtTCPDSACKOldSent), TcpExtTCPDSACKOldSent);
        yield return new(nameof(TcpExtTCPDSACKOfoSent), TcpExtTCPDSACKOfoSent);
        yield return new(nameof(TcpExtTCPOFOQueue), TcpExtTCPOFOQueue);
        yield return new(nameof(TcpExtTCPOFODrop), TcpExtTCPOFODrop);
        yield return new(nameof(TcpExtTCPLossProbes), TcpExtTCPLossProbes);
        yield return new(nameof(TcpExtTCPLossProbeRecovery), TcpExtTCPLossProbeRecovery);
        yield return new(nameof(TcpHandedOver), TcpHandedOver);
        yield return new(nameof(UdpInDatagrams), UdpInDatagrams);
        yield return new(nameof(UdpNoPorts), UdpNoPorts);
        yield return new(nameof(UdpInErrors), UdpInErrors);
        yield return new(nameof(UdpInCsumErrors), UdpInCsumErrors);
        yield return new(nameof(UdpRcvbufErrors), UdpRcvbufErrors);
        yield return new(nameof(UdpOutDatagrams), UdpOutDatagrams);
        yield return new(nameof(UdpSndbufErrors), UdpSndbufErrors);
        foreach (var reason in Enum.GetValues<DropReason>())
            if (reason != DropReason.None && _drops[(int)reason] != 0)
                yield return new("Drop." + reason, _drops[(int)reason]);
    }

    public long TotalDrops
    {
        get
        {
            long t = 0;
            foreach (long d in _drops)
                t += d;
            return t;
        }
    }
}
