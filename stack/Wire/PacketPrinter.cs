using System.Globalization;
using System.Text;

namespace Onload.Stack.Wire;

/// <summary>
/// One line per frame in tcpdump's style, for logs and traces (it allocates: never on the data path unless a
/// trace was asked for). Malformed frames print what is wrong instead of throwing.
/// </summary>
public static class PacketPrinter
{
    public static string Format(ReadOnlySpan<byte> frame)
    {
        // The views are writable; printing copies the frame so a caller's read-only data stays untouched.
        Span<byte> copy = frame.Length <= 2048 ? stackalloc byte[frame.Length] : new byte[frame.Length];
        frame.CopyTo(copy);
        var sb = new StringBuilder(96);
        if (!EthernetFrame.IsLongEnough(copy.Length))
            return $"[truncated ethernet, length {frame.Length}]";
        var eth = new EthernetFrame(copy);
        switch (eth.EtherType)
        {
            case EtherType.Arp:
                FormatArp(sb, eth.Payload);
                break;
            case EtherType.Ipv4:
                FormatIpv4(sb, eth.Payload);
                break;
            default:
                sb.Append(CultureInfo.InvariantCulture, $"{eth.Source} > {eth.Destination}, ethertype 0x{eth.EtherType:x4}, length {frame.Length}");
                break;
        }
        return sb.ToString();
    }

    private static void FormatArp(StringBuilder sb, Span<byte> p)
    {
        var reason = ArpPacket.Validate(p);
        if (reason != DropReason.None)
        {
            sb.Append(CultureInfo.InvariantCulture, $"ARP, [{reason}], length {p.Length}");
            return;
        }
        var arp = new ArpPacket(p);
        if (arp.Operation == ArpOperation.Request)
            sb.Append(CultureInfo.InvariantCulture, $"ARP, Request who-has {arp.TargetProtocol} tell {arp.SenderProtocol}, length {ArpPacket.Length}");
        else
            sb.Append(CultureInfo.InvariantCulture, $"ARP, Reply {arp.SenderProtocol} is-at {arp.SenderHardware}, length {ArpPacket.Length}");
    }

    private static void FormatIpv4(StringBuilder sb, Span<byte> p)
    {
        var reason = Ipv4Packet.Validate(p);
        if (reason != DropReason.None)
        {
            sb.Append(CultureInfo.InvariantCulture, $"IP [{reason}], length {p.Length}");
            return;
        }
        var ip = new Ipv4Packet(p);
        string frag = ip.IsFragment ? $" (frag {ip.Identification}:{ip.Payload.Length}@{ip.FragmentOffset}{(ip.MoreFragments ? "+" : "")})" : "";
        if (ip.IsFragment && ip.FragmentOffset != 0)
        {
            sb.Append(CultureInfo.InvariantCulture, $"IP {ip.Source} > {ip.Destination}: ip-proto-{ip.Protocol}{frag}");
            return;
        }
        var payload = ip.Payload;
        switch (ip.Protocol)
        {
            case IpProtocol.Udp when payload.Length >= UdpDatagram.HeaderLength:
                var udp = new UdpDatagram(payload);
                int len = Math.Max(0, udp.Length - UdpDatagram.HeaderLength);
                sb.Append(CultureInfo.InvariantCulture,
                    $"IP {ip.Source}.{udp.SourcePort} > {ip.Destination}.{udp.DestinationPort}: UDP, length {len}{frag}");
                break;
            case IpProtocol.Icmp when payload.Length >= IcmpPacket.HeaderLength:
                var icmp = new IcmpPacket(payload);
                sb.Append(CultureInfo.InvariantCulture, $"IP {ip.Source} > {ip.Destination}: ICMP {IcmpDescription(icmp)}, length {payload.Length}{frag}");
                break;
            default:
                sb.Append(CultureInfo.InvariantCulture, $"IP {ip.Source} > {ip.Destination}: ip-proto-{ip.Protocol} {payload.Length}{frag}");
                break;
        }
    }

    private static string IcmpDescription(IcmpPacket icmp) => icmp.Type switch
    {
        IcmpType.EchoRequest => string.Create(CultureInfo.InvariantCulture, $"echo request, id {icmp.Identifier}, seq {icmp.SequenceNumber}"),
        IcmpType.EchoReply => string.Create(CultureInfo.InvariantCulture, $"echo reply, id {icmp.Identifier}, seq {icmp.SequenceNumber}"),
        IcmpType.DestinationUnreachable => icmp.Code switch
        {
            IcmpUnreachableCode.Port => "port unreachable",
            IcmpUnreachableCode.Protocol => "protocol unreachable",
            IcmpUnreachableCode.Host => "host unreachable",
            IcmpUnreachableCode.Network => "net unreachable",
            IcmpUnreachableCode.FragmentationNeeded => "need to frag",
            _ => string.Create(CultureInfo.InvariantCulture, $"unreachable code {icmp.Code}"),
        },
        IcmpType.TimeExceeded => "time exceeded in-transit",
        _ => string.Create(CultureInfo.InvariantCulture, $"type {icmp.Type}, code {icmp.Code}"),
    };
}
