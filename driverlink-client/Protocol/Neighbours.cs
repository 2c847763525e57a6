using Onload.Vnic;

namespace Onload.Driverlink;

// The kernel owns ARP in driverlink mode: clients learn their neighbours' MACs from the kernel's table, which the
// daemon reads over rtnetlink and forwards.

/// <summary>
/// Asks the daemon to have the kernel resolve an on-link address (it sets the kernel's neighbour entry in use, so
/// the kernel sends the ARP request). No reply: the answer is a <see cref="NeighbourEvent"/> once the kernel has
/// one, or nothing, and the client's own resolution timer gives up. Payload: VNIC id (4), IPv4 address (4,
/// network order).
/// </summary>
public sealed record ResolveNeighbour(uint VnicId, uint Address) : Message
{
    public override MessageKind Kind => MessageKind.ResolveNeighbour;

    private protected override void WritePayload(ref PayloadWriter w) => WritePayload(ref w, VnicId, Address);

    private static void WritePayload(ref PayloadWriter w, uint vnicId, uint address)
    {
        w.U32(vnicId);
        w.Ipv4(address);
    }

    /// <summary>
    /// Writes the request as <see cref="Message.Encode"/> would, without making the record: a stack asks again
    /// whenever a neighbour's entry needs confirming (every few seconds under traffic), on its data path, which
    /// must not allocate. Returns the length.
    /// </summary>
    public static int Encode(Span<byte> destination, uint vnicId, uint address)
    {
        var writer = new PayloadWriter(destination[MessageHeader.Length..]);
        WritePayload(ref writer, vnicId, address);
        MessageHeader.Write(destination, ProtocolVersion.Current, MessageKind.ResolveNeighbour, writer.Length, requestId: 0);
        return MessageHeader.Length + writer.Length;
    }

    internal static ResolveNeighbour Read(ref PayloadReader r)
    {
        uint vnicId = r.U32();
        return new ResolveNeighbour(vnicId, r.Ipv4());
    }
}

/// <summary>
/// A neighbour entry of the VNIC's interface changed in the kernel: reachable with <see cref="Mac"/>, or gone
/// (failed, deleted: <see cref="Reachable"/> false, MAC zero). Sent for every reachable entry at attach, then when
/// the MAC or reachability the daemon last reported for the address changes.
/// Payload: VNIC id (4), IPv4 address (4, network order), MAC (6), reachable (1, 0 or 1), reserved (1).
/// </summary>
public sealed record NeighbourEvent(uint VnicId, uint Address, MacAddress Mac, bool Reachable) : Message
{
    public override MessageKind Kind => MessageKind.Neighbour;

    private protected override void WritePayload(ref PayloadWriter w)
    {
        if (!Reachable && Mac != MacAddress.Zero)
            throw new ArgumentException("a neighbour that is gone carries no MAC", nameof(Mac));
        w.U32(VnicId);
        w.Ipv4(Address);
        w.Mac(Mac);
        w.Bool(Reachable);
        w.Reserved(1);
    }

    internal static NeighbourEvent Read(ref PayloadReader r)
    {
        uint vnicId = r.U32();
        uint address = r.Ipv4();
        var mac = r.Mac();
        bool reachable = r.Bool();
        r.Reserved(1);
        if (!reachable && mac != MacAddress.Zero)
            r.Fail(DecodeError.BadValue);
        return new NeighbourEvent(vnicId, address, mac, reachable);
    }
}
