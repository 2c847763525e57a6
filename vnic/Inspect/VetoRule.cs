using System.Globalization;
using System.Text;

namespace Onload.Vnic.Inspect;

/// <summary>What a matching <see cref="VetoRule"/> does with the frame.</summary>
public enum VetoAction
{
    Drop,

    /// <summary>Lets the frame through and ends the search: an exception to a broader drop after it.</summary>
    Pass,
}

/// <summary>Which frames a <see cref="VetoRule"/>'s protocol clause matches.</summary>
public enum VetoProtocol
{
    /// <summary>No protocol clause: every frame.</summary>
    Any,

    /// <summary>Every IPv4 packet.</summary>
    Ip,
    Tcp,
    Udp,
    Icmp,
    Arp,
}

/// <summary>
/// One rule of a <see cref="VetoRules"/> set: an action and the clauses a frame must all match. Clauses the rule does not
/// have match anything; a port clause matches only a TCP or UDP header that is in the frame (not a later fragment's),
/// a host clause only an IPv4 source or destination or an ARP sender or target address.
/// </summary>
public sealed class VetoRule
{
    public VetoAction Action { get; init; }

    /// <summary>The direction matched, or null for both (<c>any</c>).</summary>
    public FrameDirection? Direction { get; init; }

    public VetoProtocol Protocol { get; init; }

    /// <summary>TCP or UDP source port, or null.</summary>
    public ushort? SourcePort { get; init; }

    /// <summary>TCP or UDP destination port, or null.</summary>
    public ushort? DestinationPort { get; init; }

    /// <summary>TCP or UDP port on either side, or null.</summary>
    public ushort? Port { get; init; }

    /// <summary>IPv4 address on either side (host byte order), or null.</summary>
    public uint? Host { get; init; }

    /// <summary>Frames this rule decided (it was the first to match).</summary>
    public long Hits { get; internal set; }

    internal bool HasPortClause => SourcePort.HasValue || DestinationPort.HasValue || Port.HasValue;

    internal bool Matches(FrameDirection direction, in FrameHeaders f)
    {
        if (Direction is { } d && d != direction)
            return false;
        bool protocol = Protocol switch
        {
            VetoProtocol.Any => true,
            VetoProtocol.Ip => f.IsIpv4,
            VetoProtocol.Tcp => f.IsIpv4 && f.IpProtocol == FrameHeaders.Tcp,
            VetoProtocol.Udp => f.IsIpv4 && f.IpProtocol == FrameHeaders.Udp,
            VetoProtocol.Icmp => f.IsIpv4 && f.IpProtocol == FrameHeaders.Icmp,
            VetoProtocol.Arp => f.IsArp,
            _ => false,
        };
        if (!protocol)
            return false;
        if (HasPortClause)
        {
            if (!f.HasPorts)
                return false;
            if (SourcePort is { } sp && f.SourcePort != sp)
                return false;
            if (DestinationPort is { } dp && f.DestinationPort != dp)
                return false;
            if (Port is { } p && f.SourcePort != p && f.DestinationPort != p)
                return false;
        }
        if (Host is { } h && !(f.HasAddresses && (f.Source == h || f.Destination == h)))
            return false;
        return true;
    }

    /// <summary>The rule in the grammar it was parsed from, e.g. <c>drop rx udp dport 7001</c>.</summary>
    public override string ToString()
    {
        var sb = new StringBuilder(Action == VetoAction.Drop ? "drop" : "pass");
        sb.Append(Direction switch { FrameDirection.Receive => " rx", FrameDirection.Transmit => " tx", _ => " any" });
        if (Protocol != VetoProtocol.Any)
            sb.Append(' ').Append(Protocol.ToString().ToLowerInvariant());
        if (SourcePort is { } sp)
            sb.Append(CultureInfo.InvariantCulture, $" sport {sp}");
        if (DestinationPort is { } dp)
            sb.Append(CultureInfo.InvariantCulture, $" dport {dp}");
        if (Port is { } p)
            sb.Append(CultureInfo.InvariantCulture, $" port {p}");
        if (Host is { } h)
            sb.Append(CultureInfo.InvariantCulture, $" host {h >> 24}.{(h >> 16) & 0xff}.{(h >> 8) & 0xff}.{h & 0xff}");
        return sb.ToString();
    }
}
