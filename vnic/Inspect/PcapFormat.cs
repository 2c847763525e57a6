namespace Onload.Vnic.Inspect;

/// <summary>
/// The classic libpcap file format (pcap-savefile(5); draft-ietf-opsawg-pcap): a 24-byte file header, then per frame
/// a 16-byte record header and the captured bytes. Written in the machine's byte order; readers tell which from the magic.
/// </summary>
public static class PcapFormat
{
    /// <summary>Magic of a file whose record timestamps are seconds and microseconds.</summary>
    public const uint MagicMicroseconds = 0xa1b2c3d4;

    /// <summary>Magic of a file whose record timestamps are seconds and nanoseconds (libpcap 1.5 and later read it).</summary>
    public const uint MagicNanoseconds = 0xa1b23c4d;

    public const ushort VersionMajor = 2;
    public const ushort VersionMinor = 4;

    /// <summary>LINKTYPE_ETHERNET: every record starts with a 14-byte Ethernet header.</summary>
    public const uint LinkTypeEthernet = 1;

    public const int FileHeaderLength = 24;
    public const int RecordHeaderLength = 16;

    /// <summary>The largest snapshot length libpcap accepts when reading (MAXIMUM_SNAPLEN).</summary>
    public const int MaxSnapLength = 262144;

    /// <summary>tcpdump's default snapshot length: whole frames.</summary>
    public const int DefaultSnapLength = 65535;
}
