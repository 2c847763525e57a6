namespace Onload.Driverlink;

/// <summary>The transport a filter matches (IANA protocol numbers, as in the IPv4 header).</summary>
public enum FilterProtocol : byte
{
    Tcp = 6,
    Udp = 17,
}

/// <summary>The outcome of a filter insert or remove.</summary>
public enum FilterStatus : ushort
{
    Ok = 0,
    /// <summary>Another client's filter already covers these addresses and ports.</summary>
    Conflict = 1,
    /// <summary>The port is not this client's: its kernel socket does not hold it.</summary>
    NotOwner = 2,
    NoSuchVnic = 3,
    /// <summary>The VNIC's share of filters is used up.</summary>
    TableFull = 4,
    /// <summary>Remove of a filter that is not installed.</summary>
    NotFound = 5,
    InvalidRequest = 6,
}

/// <summary>The remote end of a connected filter; address in host byte order.</summary>
public readonly record struct FilterRemote(uint Address, ushort Port);

/// <summary>
/// What the XDP program matches: (protocol, local address, local port [, remote address, remote port]) to a VNIC.
/// Addresses in host byte order; a local address of 0 matches every address of the interface.
/// </summary>
/// <remarks>
/// On the wire (20 bytes): VNIC id (4), protocol (1), has remote (1, 0 or 1), reserved (2), local address (4),
/// local port (2), remote port (2), remote address (4). Without a remote, its fields are zero.
/// </remarks>
public readonly record struct FilterSpec(FilterProtocol Protocol, uint LocalAddress, ushort LocalPort, FilterRemote? Remote = null)
{
    internal void Write(ref PayloadWriter w, uint vnicId)
    {
        if (LocalPort == 0 || Remote is { Port: 0 })
            throw new ArgumentException("a filter's ports are not 0", "filter");
        w.U32(vnicId);
        w.U8((byte)Protocol);
        w.Bool(Remote.HasValue);
        w.Reserved(2);
        w.Ipv4(LocalAddress);
        w.U16(LocalPort);
        w.U16(Remote?.Port ?? 0);
        w.Ipv4(Remote?.Address ?? 0);
    }

    internal static FilterSpec Read(ref PayloadReader r, out uint vnicId)
    {
        vnicId = r.U32();
        var protocol = r.Enum<FilterProtocol>();
        bool hasRemote = r.Bool();
        r.Reserved(2);
        uint local = r.Ipv4();
        ushort localPort = r.U16();
        ushort remotePort = r.U16();
        uint remote = r.Ipv4();
        if (localPort == 0 || (hasRemote ? remotePort == 0 : remotePort != 0 || remote != 0))
            r.Fail(DecodeError.BadValue);
        return new FilterSpec(protocol, local, localPort, hasRemote ? new FilterRemote(remote, remotePort) : null);
    }
}

/// <summary>Steer a flow to a VNIC. Answered by <see cref="FilterReply"/>.</summary>
public sealed record FilterInsert(uint VnicId, FilterSpec Filter) : Message
{
    public override MessageKind Kind => MessageKind.FilterInsert;

    private protected override void WritePayload(ref PayloadWriter w) => Filter.Write(ref w, VnicId);

    internal static FilterInsert Read(ref PayloadReader r)
    {
        var spec = FilterSpec.Read(ref r, out uint vnicId);
        return new FilterInsert(vnicId, spec);
    }
}

/// <summary>Stop steering a flow. Answered by <see cref="FilterReply"/>.</summary>
public sealed record FilterRemove(uint VnicId, FilterSpec Filter) : Message
{
    public override MessageKind Kind => MessageKind.FilterRemove;

    private protected override void WritePayload(ref PayloadWriter w) => Filter.Write(ref w, VnicId);

    internal static FilterRemove Read(ref PayloadReader r)
    {
        var spec = FilterSpec.Read(ref r, out uint vnicId);
        return new FilterRemove(vnicId, spec);
    }
}

/// <summary>The answer to a filter insert or remove. Payload: status (2), reserved (2).</summary>
public sealed record FilterReply(FilterStatus Status) : Message
{
    public override MessageKind Kind => MessageKind.FilterReply;

    private protected override void WritePayload(ref PayloadWriter w)
    {
        w.U16((ushort)Status);
        w.Reserved(2);
    }

    internal static FilterReply Read(ref PayloadReader r)
    {
        var status = r.Enum<FilterStatus>();
        r.Reserved(2);
        return new FilterReply(status);
    }
}
