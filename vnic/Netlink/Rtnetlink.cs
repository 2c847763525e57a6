using System.Buffers.Binary;
using System.Text;
using static Onload.Vnic.Native.Netlink;

namespace Onload.Vnic.Netlink;

/// <summary>What <see cref="Rtnetlink.TryDecode"/> made of a message.</summary>
public enum DecodeResult
{
    /// <summary>A link, IPv4 address, IPv4 route or IPv4 neighbour.</summary>
    Decoded,
    /// <summary>Well formed, but not something read here (another family, another message type).</summary>
    Ignored,
    /// <summary>Short family header, attribute overrunning the message, or an attribute of the wrong size.</summary>
    Malformed,
}

/// <summary>
/// Decodes the rtnetlink messages that carry links, addresses, routes and neighbours (rtnetlink(7)) into
/// <see cref="RtnetlinkObject"/> records. Reads only inside the message it is given and never throws on bad input:
/// a message is either decoded whole, ignored, or reported malformed.
/// </summary>
public static class Rtnetlink
{
    private const byte AF_INET = 2;

    /// <summary>Whether <paramref name="type"/> announces a new or changed object (RTM_NEW*) rather than a removal.</summary>
    public static bool IsNew(ushort type) => type is RTM_NEWLINK or RTM_NEWADDR or RTM_NEWROUTE or RTM_NEWNEIGH;

    public static bool IsRemoval(ushort type) => type is RTM_DELLINK or RTM_DELADDR or RTM_DELROUTE or RTM_DELNEIGH;

    public static DecodeResult TryDecode(NetlinkMessage message, out RtnetlinkObject? decoded)
    {
        decoded = null;
        var payload = message.Payload;
        return message.Type switch
        {
            RTM_NEWLINK or RTM_DELLINK => DecodeLink(payload, ref decoded),
            RTM_NEWADDR or RTM_DELADDR => DecodeAddress(payload, ref decoded),
            RTM_NEWROUTE or RTM_DELROUTE => DecodeRoute(payload, ref decoded),
            RTM_NEWNEIGH or RTM_DELNEIGH => DecodeNeighbour(payload, ref decoded),
            _ => DecodeResult.Ignored,
        };
    }

    /// <summary>Decodes every message of a datagram into <paramref name="into"/>; returns the number that were
    /// malformed (a bad <c>nlmsg_len</c> counts as one and ends the datagram).</summary>
    public static int DecodeAll(ReadOnlySpan<byte> datagram, ICollection<RtnetlinkObject> into)
    {
        ArgumentNullException.ThrowIfNull(into);
        int malformed = 0;
        var reader = new NetlinkMessageReader(datagram);
        while (reader.TryNext(out var m))
        {
            var r = TryDecode(m, out var o);
            if (r == DecodeResult.Decoded)
                into.Add(o!);
            else if (r == DecodeResult.Malformed)
                malformed++;
        }
        return reader.Malformed ? malformed + 1 : malformed;
    }

    private static DecodeResult DecodeLink(ReadOnlySpan<byte> p, ref RtnetlinkObject? decoded)
    {
        if (p.Length < IfInfoMsgSize)
            return DecodeResult.Malformed;
        int index = BinaryPrimitives.ReadInt32LittleEndian(p[4..]);
        uint flags = BinaryPrimitives.ReadUInt32LittleEndian(p[8..]);
        string name = "";
        int mtu = 0;
        var mac = MacAddress.Zero;
        var attrs = new RtAttributeReader(p[IfInfoMsgSize..]);
        while (attrs.TryNext(out var a))
        {
            switch (a.Type)
            {
                case IFLA_IFNAME:
                    name = CString(a.Value);
                    break;
                case IFLA_MTU:
                    if (a.Value.Length < 4)
                        return DecodeResult.Malformed;
                    mtu = BinaryPrimitives.ReadInt32LittleEndian(a.Value);
                    break;
                case IFLA_ADDRESS:
                    // Ethernet-like links carry six octets; others (loopback has six zeros, tunnels four or none) are left at zero.
                    if (a.Value.Length == 6)
                        mac = MacAddress.Read(a.Value);
                    break;
            }
        }
        if (attrs.Malformed)
            return DecodeResult.Malformed;
        decoded = new Link(index, name, flags, mtu, mac);
        return DecodeResult.Decoded;
    }

    private static DecodeResult DecodeAddress(ReadOnlySpan<byte> p, ref RtnetlinkObject? decoded)
    {
        if (p.Length < IfAddrMsgSize)
            return DecodeResult.Malformed;
        if (p[0] != AF_INET)
            return DecodeResult.Ignored;
        int prefix = p[1];
        int index = BinaryPrimitives.ReadInt32LittleEndian(p[4..]);
        uint? local = null, address = null;
        var attrs = new RtAttributeReader(p[IfAddrMsgSize..]);
        while (attrs.TryNext(out var a))
        {
            if (a.Type is not (IFA_LOCAL or IFA_ADDRESS))
                continue;
            if (a.Value.Length != 4)
                return DecodeResult.Malformed;
            uint v = BinaryPrimitives.ReadUInt32BigEndian(a.Value);
            if (a.Type == IFA_LOCAL)
                local = v;
            else
                address = v;
        }
        if (attrs.Malformed || prefix > 32)
            return DecodeResult.Malformed;
        // IFA_LOCAL is the interface's own address; IFA_ADDRESS is the same except on point-to-point links,
        // where it is the peer's (if_addr.h).
        if ((local ?? address) is not uint own)
            return DecodeResult.Malformed;
        decoded = new Address(index, own, prefix);
        return DecodeResult.Decoded;
    }

    private static DecodeResult DecodeRoute(ReadOnlySpan<byte> p, ref RtnetlinkObject? decoded)
    {
        if (p.Length < RtMsgSize)
            return DecodeResult.Malformed;
        if (p[0] != AF_INET)
            return DecodeResult.Ignored;
        int prefix = p[1];
        uint table = p[4];
        byte type = p[7];
        uint destination = 0, gateway = 0, metric = 0;
        int oif = 0;
        var attrs = new RtAttributeReader(p[RtMsgSize..]);
        while (attrs.TryNext(out var a))
        {
            if (a.Type is not (RTA_DST or RTA_GATEWAY or RTA_OIF or RTA_TABLE or RTA_PRIORITY))
                continue;
            if (a.Value.Length != 4)
                return DecodeResult.Malformed;
            switch (a.Type)
            {
                case RTA_DST: destination = BinaryPrimitives.ReadUInt32BigEndian(a.Value); break;
                case RTA_GATEWAY: gateway = BinaryPrimitives.ReadUInt32BigEndian(a.Value); break;
                case RTA_OIF: oif = BinaryPrimitives.ReadInt32LittleEndian(a.Value); break;
                // rtm_table holds only 8 bits; tables above 255 are in RTA_TABLE (rtnetlink.h).
                case RTA_TABLE: table = BinaryPrimitives.ReadUInt32LittleEndian(a.Value); break;
                case RTA_PRIORITY: metric = BinaryPrimitives.ReadUInt32LittleEndian(a.Value); break;
            }
        }
        if (attrs.Malformed || prefix > 32)
            return DecodeResult.Malformed;
        decoded = new Route(destination, prefix, gateway, oif, table, type, metric);
        return DecodeResult.Decoded;
    }

    private static DecodeResult DecodeNeighbour(ReadOnlySpan<byte> p, ref RtnetlinkObject? decoded)
    {
        if (p.Length < NdMsgSize)
            return DecodeResult.Malformed;
        if (p[0] != AF_INET)
            return DecodeResult.Ignored;
        int index = BinaryPrimitives.ReadInt32LittleEndian(p[4..]);
        var state = (NeighbourState)BinaryPrimitives.ReadUInt16LittleEndian(p[8..]);
        uint? ip = null;
        var mac = MacAddress.Zero;
        var attrs = new RtAttributeReader(p[NdMsgSize..]);
        while (attrs.TryNext(out var a))
        {
            switch (a.Type)
            {
                case NDA_DST:
                    if (a.Value.Length != 4)
                        return DecodeResult.Malformed;
                    ip = BinaryPrimitives.ReadUInt32BigEndian(a.Value);
                    break;
                case NDA_LLADDR:
                    if (a.Value.Length == 6)
                        mac = MacAddress.Read(a.Value);
                    break;
            }
        }
        if (attrs.Malformed || ip is not uint dst)
            return DecodeResult.Malformed;
        decoded = new Neighbour(index, dst, mac, state);
        return DecodeResult.Decoded;
    }

    /// <summary>IFLA_IFNAME is NUL-terminated; a name without one is taken to the attribute's end.</summary>
    private static string CString(ReadOnlySpan<byte> value)
    {
        int nul = value.IndexOf((byte)0);
        return Encoding.ASCII.GetString(nul < 0 ? value : value[..nul]);
    }
}
