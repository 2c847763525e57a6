using Onload.Stack.Memory;
using Onload.Stack.Wire;

namespace Onload.Stack.Igmp;

/// <summary>A group the stack belongs to, with its report state (RFC 3376 §5.1, RFC 2236 §3).</summary>
public struct GroupEntry
{
    public bool InUse;
    public Ipv4Address Group;
    /// <summary>Sockets that joined it.</summary>
    public int Members;
    /// <summary>When the next report is due (<see cref="long.MaxValue"/>: none), and how many are still to send.</summary>
    public long ReportAt;
    public int ReportsLeft;
    /// <summary>The record type of the pending report: a state change, or an answer to a query.</summary>
    public byte ReportType;
}

/// <summary>One socket's membership of one group (IP_ADD_MEMBERSHIP).</summary>
public struct Membership
{
    public bool InUse;
    public int Socket;
    public Ipv4Address Group;
}

/// <summary>The stack's multicast groups and which sockets joined them: small fixed tables, scanned only on
/// the control path (join, leave, query); the data path asks <see cref="IsJoined"/>.</summary>
public sealed class MulticastGroups : IDisposable
{
    private readonly StructTable<GroupEntry> _groups;
    private readonly StructTable<Membership> _memberships;

    public MulticastGroups(int groups, int memberships)
    {
        _groups = new StructTable<GroupEntry>(groups);
        _memberships = new StructTable<Membership>(memberships);
    }

    public int Capacity => _groups.Length;
    public int Count { get; private set; }

    public ref GroupEntry this[int index] => ref _groups[index];

    public int Find(Ipv4Address group)
    {
        for (int i = 0; i < _groups.Length; i++)
            if (_groups[i].InUse && _groups[i].Group == group)
                return i;
        return -1;
    }

    public bool IsJoined(Ipv4Address group) => Count > 0 && Find(group) >= 0;

    public bool IsMember(int socket, Ipv4Address group) => FindMembership(socket, group) >= 0;

    private int FindMembership(int socket, Ipv4Address group)
    {
        for (int i = 0; i < _memberships.Length; i++)
        {
            ref var m = ref _memberships[i];
            if (m.InUse && m.Socket == socket && m.Group == group)
                return i;
        }
        return -1;
    }

    /// <summary>Adds a socket's membership; returns the group's entry and whether the stack newly joined it,
    /// or -1 when a table is full.</summary>
    public int Join(int socket, Ipv4Address group, out bool first)
    {
        first = false;
        int m = -1;
        for (int i = 0; i < _memberships.Length && m < 0; i++)
            if (!_memberships[i].InUse)
                m = i;
        if (m < 0)
            return -1;
        int g = Find(group);
        if (g < 0)
        {
            for (int i = 0; i < _groups.Length && g < 0; i++)
                if (!_groups[i].InUse)
                    g = i;
            if (g < 0)
                return -1;
            _groups[g] = new GroupEntry { InUse = true, Group = group, ReportAt = long.MaxValue };
            Count++;
            first = true;
        }
        _groups[g].Members++;
        _memberships[m] = new Membership { InUse = true, Socket = socket, Group = group };
        return g;
    }

    /// <summary>Removes a socket's membership; returns the group's entry, or -1 if the socket had none.
    /// <paramref name="last"/> says the stack left the group (and the entry is free).</summary>
    public int Leave(int socket, Ipv4Address group, out bool last)
    {
        last = false;
        int m = FindMembership(socket, group);
        if (m < 0)
            return -1;
        _memberships[m] = default;
        int g = Find(group);
        if (--_groups[g].Members == 0)
        {
            _groups[g] = default;
            Count--;
            last = true;
        }
        return g;
    }

    /// <summary>The groups <paramref name="socket"/> belongs to, one at a time (for close).</summary>
    public bool TryFirstMembership(int socket, out Ipv4Address group)
    {
        for (int i = 0; i < _memberships.Length; i++)
            if (_memberships[i].InUse && _memberships[i].Socket == socket)
            {
                group = _memberships[i].Group;
                return true;
            }
        group = default;
        return false;
    }

    public void Dispose()
    {
        _groups.Dispose();
        _memberships.Dispose();
    }
}
