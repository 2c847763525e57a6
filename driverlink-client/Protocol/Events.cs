namespace Onload.Driverlink;

// Events the daemon sends unasked (request id 0), each about one VNIC. Payloads start with the VNIC id (4).

/// <summary>The interface went up or down. Payload: VNIC id (4), up (1, 0 or 1), reserved (3).</summary>
public sealed record LinkStateEvent(uint VnicId, bool Up) : Message
{
    public override MessageKind Kind => MessageKind.LinkState;

    private protected override void WritePayload(ref PayloadWriter w)
    {
        w.U32(VnicId);
        w.Bool(Up);
        w.Reserved(3);
    }

    internal static LinkStateEvent Read(ref PayloadReader r)
    {
        uint vnicId = r.U32();
        bool up = r.Bool();
        r.Reserved(3);
        return new LinkStateEvent(vnicId, up);
    }
}

/// <summary>
/// The kernel changed the interface's MTU (reported after the fact: the client clamps its MSS and sends nothing
/// larger from now on). Payload: VNIC id (4), MTU (2, at least 68), reserved (2).
/// </summary>
public sealed record MtuChangedEvent(uint VnicId, ushort Mtu) : Message
{
    public override MessageKind Kind => MessageKind.MtuChanged;

    private protected override void WritePayload(ref PayloadWriter w)
    {
        if (Mtu < AttachReply.MinMtu)
            throw new ArgumentException($"an MTU of {Mtu} is below {AttachReply.MinMtu}", nameof(Mtu));
        w.U32(VnicId);
        w.U16(Mtu);
        w.Reserved(2);
    }

    internal static MtuChangedEvent Read(ref PayloadReader r)
    {
        uint vnicId = r.U32();
        ushort mtu = r.U16();
        if (mtu < AttachReply.MinMtu)
            r.Fail(DecodeError.BadValue);
        r.Reserved(2);
        return new MtuChangedEvent(vnicId, mtu);
    }
}

/// <summary>The daemon is about to reconfigure (reload the program, resize rings, switch mode): stop touching the
/// rings until <see cref="ResumeEvent"/>. Payload: VNIC id (4).</summary>
public sealed record SuspendEvent(uint VnicId) : Message
{
    public override MessageKind Kind => MessageKind.Suspend;

    private protected override void WritePayload(ref PayloadWriter w) => w.U32(VnicId);

    internal static SuspendEvent Read(ref PayloadReader r) => new(r.U32());
}

/// <summary>The client's answer to <see cref="SuspendEvent"/>: it has stopped touching the VNIC's rings (and will
/// not until <see cref="ResumeEvent"/>). The daemon reconfigures once every client has answered, or after a deadline.
/// Payload: VNIC id (4).</summary>
public sealed record Suspended(uint VnicId) : Message
{
    public override MessageKind Kind => MessageKind.Suspended;

    private protected override void WritePayload(ref PayloadWriter w) => w.U32(VnicId);

    internal static Suspended Read(ref PayloadReader r) => new(r.U32());
}

/// <summary>The reconfiguration is over: the rings may be used again. Payload: VNIC id (4).</summary>
public sealed record ResumeEvent(uint VnicId) : Message
{
    public override MessageKind Kind => MessageKind.Resume;

    private protected override void WritePayload(ref PayloadWriter w) => w.U32(VnicId);

    internal static ResumeEvent Read(ref PayloadReader r) => new(r.U32());
}

/// <summary>Hot-unplug: the VNIC is gone (its interface vanished or the daemon is stopping). Payload: VNIC id (4).</summary>
public sealed record RemoveEvent(uint VnicId) : Message
{
    public override MessageKind Kind => MessageKind.Remove;

    private protected override void WritePayload(ref PayloadWriter w) => w.U32(VnicId);

    internal static RemoveEvent Read(ref PayloadReader r) => new(r.U32());
}
