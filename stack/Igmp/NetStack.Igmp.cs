using Onload.Stack.Igmp;
using Onload.Stack.Wire;
using Onload.Vnic;

namespace Onload.Stack;

// IGMP (RFC 3376 version 3 by default, RFC 2236 version 2 when a v2 querier is heard): reports on join and
// leave, answers to queries. Direct mode only: in driverlink mode the kernel does IGMP for the interface.
public sealed partial class NetStack
{
    /// <summary>Robustness Variable (RFC 3376 §8.1): unsolicited reports are sent this many times.</summary>
    private const int IgmpRobustness = 2;
    /// <summary>Unsolicited Report Interval: 1 s for IGMPv3 (§8.11), 10 s for v2 (RFC 2236 §8.10).</summary>
    private const long IgmpUnsolicitedIntervalNs = 1_000_000_000;
    /// <summary>Older Version Querier Present Timeout: Robustness × Query Interval + Query Response Interval (§8.12).</summary>
    private const long IgmpOlderQuerierTimeoutNs = (IgmpRobustness * 125L + 10) * 1_000_000_000;
    /// <summary>IP option Router Alert (RFC 2113), which IGMP messages carry (RFC 3376 §4).</summary>
    private static ReadOnlySpan<byte> RouterAlert => [0x94, 0x04, 0x00, 0x00];

    private const long NoReport = long.MaxValue;

    private readonly MulticastGroups _groups;
    private long _igmpV2Until;

    public MulticastGroups MulticastGroups => _groups;

    /// <summary>Whether reports go out as IGMPv2 (a v2 querier was heard recently).</summary>
    public bool IgmpV2Compatibility => _now < _igmpV2Until;

    private void StackJoinedGroup(int g)
    {
        ref var e = ref _groups[g];
        _vnic.JoinMulticast(e.Group.Value);
        if (e.Group == IgmpMessage.AllHosts || _control is not null)
            return; // RFC 3376 §5: never reported; in driverlink mode the kernel reports for the host
        e.ReportType = IgmpRecordType.ChangeToExcludeMode;
        e.ReportsLeft = IgmpRobustness;
        e.ReportAt = _now;
        IgmpTimerExpired(g); // the first report goes at once
    }

    private void StackLeftGroup(int g, Ipv4Address group)
    {
        _timers.Cancel(IgmpTimerId(g));
        _vnic.LeaveMulticast(group.Value);
        if (group == IgmpMessage.AllHosts || _control is not null)
            return;
        if (IgmpV2Compatibility)
            SendIgmp(IgmpMessage.AllRouters, IgmpType.V2LeaveGroup, 0, group);
        else
            SendIgmp(IgmpMessage.AllIgmpv3Routers, IgmpType.V3MembershipReport, IgmpRecordType.ChangeToIncludeMode, group);
    }

    private bool IgmpInput(Ipv4Packet ip)
    {
        var message = ip.Payload;
        var reason = IgmpMessage.Validate(message);
        if (reason != DropReason.None)
            return Dropped(reason);
        Counters.IgmpInMsgs++;
        var igmp = new IgmpMessage(message);
        if (igmp.Type != IgmpType.MembershipQuery)
            return false; // other hosts' reports: IGMPv3 hosts do not suppress theirs, and v2 suppression is optional
        Counters.IgmpInQueries++;
        long maxResponseNs;
        if (message.Length >= IgmpMessage.V3QueryMinLength)
            maxResponseNs = igmp.MaxResponseDeciseconds * 100_000_000L;
        else
        {
            // An 8-byte query is IGMPv2 (or v1 with a zero max response time, RFC 2236 §4): answer in v2 for a while.
            _igmpV2Until = _now + IgmpOlderQuerierTimeoutNs;
            int code = message[1];
            maxResponseNs = (code == 0 ? 100 : code) * 100_000_000L;
        }
        var target = igmp.Group;
        for (int g = 0; g < _groups.Capacity; g++)
        {
            ref var e = ref _groups[g];
            if (!e.InUse || e.Group == IgmpMessage.AllHosts || (!target.IsAny && e.Group != target))
                continue;
            // Answer after a random delay within the max response time, unless a report is due sooner (§5.2).
            long at = _now + (long)(_random.NextUInt64() % (ulong)Math.Max(1, maxResponseNs));
            if (at < e.ReportAt)
            {
                e.ReportAt = at;
                if (e.ReportsLeft == 0)
                {
                    e.ReportsLeft = 1;
                    e.ReportType = IgmpRecordType.ModeIsExclude;
                }
                _timers.Schedule(IgmpTimerId(g), at);
            }
        }
        return false;
    }

    /// <summary>A group's report is due: send it, and arm the next while robustness asks for more.</summary>
    private void IgmpTimerExpired(int g)
    {
        ref var e = ref _groups[g];
        if (!e.InUse || e.ReportAt > _now)
            return;
        if (IgmpV2Compatibility)
            SendIgmp(e.Group, IgmpType.V2MembershipReport, 0, e.Group);
        else
            SendIgmp(IgmpMessage.AllIgmpv3Routers, IgmpType.V3MembershipReport, e.ReportType, e.Group);
        e.ReportsLeft--;
        e.ReportAt = e.ReportsLeft > 0
            ? _now + 1 + (long)(_random.NextUInt64() % IgmpUnsolicitedIntervalNs)
            : NoReport;
        if (e.ReportAt != NoReport)
            _timers.Schedule(IgmpTimerId(g), e.ReportAt);
    }

    /// <summary>Sends one IGMP message with TTL 1 and Router Alert, straight to the group's link address.</summary>
    private void SendIgmp(Ipv4Address destination, byte type, byte recordType, Ipv4Address group)
    {
        int buffer = AllocateTx();
        if (buffer < 0)
            return;
        var frame = _pool.Span(buffer);
        RouterAlert.CopyTo(frame[IpPayloadOffset..]);
        var message = frame[(IpPayloadOffset + 4)..];
        int length = type == IgmpType.V3MembershipReport
            ? IgmpMessage.WriteV3Report(message, recordType, group)
            : IgmpMessage.WriteV2(message, type, group);
        new Ipv4Packet(frame[EthernetFrame.HeaderLength..]).WriteHeader(_address, destination, IpProtocol.Igmp, length,
            _ipIdentification++, ttl: 1, Ipv4Packet.FlagDontFragment, tos: 0xC0, optionWords: 1);
        new EthernetFrame(frame).WriteHeader(MulticastMac(destination), _mac, EtherType.Ipv4);
        Counters.IpOutRequests++;
        Counters.IgmpOutReports++;
        Transmit(buffer, IpPayloadOffset + 4 + length);
    }

    internal static MacAddress MulticastMac(Ipv4Address group) => MacAddress.ForIpv4Multicast(group.Value);
}
