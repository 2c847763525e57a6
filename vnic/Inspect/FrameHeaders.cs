using System.Buffers.Binary;

namespace Onload.Vnic.Inspect;

/// <summary>
/// The few header fields a <see cref="VetoRule"/> matches on, read once from a frame with every offset checked against
/// its length: a short, truncated or otherwise odd frame yields fewer fields, never an exception. Untagged Ethernet
/// only (a VLAN-tagged frame is neither IPv4 nor ARP here).
/// </summary>
internal readonly ref struct FrameHeaders
{
    public const byte Icmp = 1;
    public const byte Tcp = 6;
    public const byte Udp = 17;

    private const int EthernetHeader = 14;
    private const ushort EtherTypeIpv4 = 0x0800;
    private const ushort EtherTypeArp = 0x0806;

    /// <summary>EtherType 0x0800 with at least an IPv4 header's 20 bytes, version 4 (RFC 791 §3.1).</summary>
    public bool IsIpv4 { get; }

    public bool IsArp { get; }
    public byte IpProtocol { get; }

    /// <summary>Whether <see cref="Source"/> and <see cref="Destination"/> were read (IPv4, or ARP for IPv4 over Ethernet).</summary>
    public bool HasAddresses { get; }

    /// <summary>IPv4 source, or ARP sender protocol address (host byte order).</summary>
    public uint Source { get; }

    /// <summary>IPv4 destination, or ARP target protocol address (host byte order).</summary>
    public uint Destination { get; }

    /// <summary>Whether a TCP or UDP header's ports were in the frame: a first (or only) fragment with its options in.</summary>
    public bool HasPorts { get; }

    public ushort SourcePort { get; }
    public ushort DestinationPort { get; }

    public FrameHeaders(ReadOnlySpan<byte> frame)
    {
        if (frame.Length < EthernetHeader)
            return;
        ushort etherType = BinaryPrimitives.ReadUInt16BigEndian(frame[12..]);
        var l3 = frame[EthernetHeader..];
        if (etherType == EtherTypeArp)
        {
            IsArp = true;
            // RFC 826 for IPv4 over Ethernet: htype 1, ptype 0x0800, hlen 6, plen 4; 28 bytes.
            if (l3.Length >= 28 && BinaryPrimitives.ReadUInt16BigEndian(l3) == 1 && BinaryPrimitives.ReadUInt16BigEndian(l3[2..]) == EtherTypeIpv4
                && l3[4] == 6 && l3[5] == 4)
            {
                HasAddresses = true;
                Source = BinaryPrimitives.ReadUInt32BigEndian(l3[14..]);
                Destination = BinaryPrimitives.ReadUInt32BigEndian(l3[24..]);
            }
            return;
        }
        if (etherType != EtherTypeIpv4 || l3.Length < 20 || l3[0] >> 4 != 4)
            return;
        IsIpv4 = true;
        IpProtocol = l3[9];
        HasAddresses = true;
        Source = BinaryPrimitives.ReadUInt32BigEndian(l3[12..]);
        Destination = BinaryPrimitives.ReadUInt32BigEndian(l3[16..]);
        int ihl = (l3[0] & 0x0f) * 4;
        bool laterFragment = (BinaryPrimitives.ReadUInt16BigEndian(l3[6..]) & 0x1fff) != 0;
        if (ihl < 20 || laterFragment || (IpProtocol != Tcp && IpProtocol != Udp) || l3.Length < ihl + 4)
            return;
        HasPorts = true;
        SourcePort = BinaryPrimitives.ReadUInt16BigEndian(l3[ihl..]);
        DestinationPort = BinaryPrimitives.ReadUInt16BigEndian(l3[(ihl + 2)..]);
    }
}
