using System.Runtime.InteropServices;

namespace Onload.Vnic.Native;

/// <summary>
/// AF_PACKET constants and ring layouts from uapi/linux/if_packet.h, as used by PACKET_MMAP
/// (Documentation/networking/packet_mmap.rst).
/// </summary>
internal static class PacketMmap
{
    // Socket level and options (if_packet.h; SOL_PACKET from include/linux/socket.h).
    public const int SOL_PACKET = 263;
    public const int PACKET_RX_RING = 5;
    public const int PACKET_STATISTICS = 6;
    public const int PACKET_VERSION = 10;
    public const int PACKET_TX_RING = 13;
    public const int PACKET_LOSS = 14;
    public const int PACKET_QDISC_BYPASS = 20;
    public const int PACKET_IGNORE_OUTGOING = 23;

    /// <summary>enum tpacket_versions: TPACKET_V1 = 0, TPACKET_V2 = 1, TPACKET_V3 = 2.</summary>
    public const int TPACKET_V2 = 1;

    // sll_pkttype values.
    public const byte PACKET_HOST = 0;
    public const byte PACKET_OUTGOING = 4;

    // RX tp_status bits: who owns the slot, and what the kernel knew about the frame.
    public const uint TP_STATUS_KERNEL = 0;
    public const uint TP_STATUS_USER = 1 << 0;
    public const uint TP_STATUS_COPY = 1 << 1;
    public const uint TP_STATUS_LOSING = 1 << 2;
    public const uint TP_STATUS_CSUMNOTREADY = 1 << 3;
    public const uint TP_STATUS_VLAN_VALID = 1 << 4;
    public const uint TP_STATUS_CSUM_VALID = 1 << 7;

    // TX tp_status values.
    public const uint TP_STATUS_AVAILABLE = 0;
    public const uint TP_STATUS_SEND_REQUEST = 1 << 0;
    public const uint TP_STATUS_SENDING = 1 << 1;
    public const uint TP_STATUS_WRONG_FORMAT = 1 << 2;

    /// <summary>TPACKET_ALIGNMENT: frames and the data inside them are aligned to 16 bytes.</summary>
    public const int TPACKET_ALIGNMENT = 16;

    public static int TpacketAlign(int x) => (x + TPACKET_ALIGNMENT - 1) & ~(TPACKET_ALIGNMENT - 1);

    /// <summary>Where the sockaddr_ll sits in an RX slot: TPACKET_ALIGN(sizeof(struct tpacket2_hdr)) = 32.</summary>
    public const int SockaddrOffset = (Tpacket2Hdr.Size + TPACKET_ALIGNMENT - 1) & ~(TPACKET_ALIGNMENT - 1);

    /// <summary>TPACKET2_HDRLEN = TPACKET_ALIGN(sizeof(tpacket2_hdr)) + sizeof(sockaddr_ll) = 52.</summary>
    public const int Tpacket2HdrLen = SockaddrOffset + SockaddrLl.Size;

    /// <summary>
    /// Where TX frame data starts in a slot: tp_hdrlen - sizeof(struct sockaddr_ll) = 32, unless PACKET_TX_HAS_OFF
    /// is set (net/packet/af_packet.c, tpacket_parse_header).
    /// </summary>
    public const int TxDataOffset = Tpacket2HdrLen - SockaddrLl.Size;

    /// <summary>
    /// Where RX frame data can start at the latest for an Ethernet frame: the kernel puts the network header at
    /// TPACKET_ALIGN(tp_hdrlen + max(16, maclen)) (+ PACKET_RESERVE, 0 here), the MAC header just before it
    /// (af_packet.c, tpacket_rcv). The real offset is tp_mac in each slot.
    /// </summary>
    public const int RxNetOffset = (Tpacket2HdrLen + 16 + TPACKET_ALIGNMENT - 1) & ~(TPACKET_ALIGNMENT - 1);
}

/// <summary><c>struct tpacket2_hdr</c>: the head of every TPACKET_V2 ring slot (32 bytes with padding).</summary>
[StructLayout(LayoutKind.Explicit, Size = Size)]
internal struct Tpacket2Hdr
{
    public const int Size = 32;

    /// <summary>Ownership and flags; read with acquire and written with release semantics, it is the handshake.</summary>
    [FieldOffset(0)] public uint Status;
    /// <summary>Length of the frame on the wire.</summary>
    [FieldOffset(4)] public uint Len;
    /// <summary>Bytes of it in the slot (less than <see cref="Len"/> when the slot was too small).</summary>
    [FieldOffset(8)] public uint SnapLen;
    /// <summary>Offset of the Ethernet header from the slot start.</summary>
    [FieldOffset(12)] public ushort Mac;
    [FieldOffset(14)] public ushort Net;
    [FieldOffset(16)] public uint Sec;
    [FieldOffset(20)] public uint Nsec;
    [FieldOffset(24)] public ushort VlanTci;
    [FieldOffset(26)] public ushort VlanTpid;
}

/// <summary><c>struct sockaddr_ll</c> (20 bytes): for bind, and after the header of every RX slot.</summary>
[StructLayout(LayoutKind.Explicit, Size = Size)]
internal unsafe struct SockaddrLl
{
    public const int Size = 20;

    [FieldOffset(0)] public ushort Family;
    /// <summary>Network byte order.</summary>
    [FieldOffset(2)] public ushort Protocol;
    [FieldOffset(4)] public int IfIndex;
    [FieldOffset(8)] public ushort HaType;
    /// <summary>PACKET_HOST, PACKET_OUTGOING, ...: who the frame was for.</summary>
    [FieldOffset(10)] public byte PktType;
    [FieldOffset(11)] public byte HaLen;
    [FieldOffset(12)] public fixed byte Addr[8];
}

/// <summary><c>struct tpacket_req</c>: ring geometry for PACKET_RX_RING / PACKET_TX_RING.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct TpacketReq
{
    /// <summary>Contiguous block size: a multiple of the page size.</summary>
    public uint BlockSize;
    public uint BlockNr;
    /// <summary>Slot size: a multiple of TPACKET_ALIGNMENT; slots never straddle blocks.</summary>
    public uint FrameSize;
    /// <summary>Must equal BlockNr * (BlockSize / FrameSize).</summary>
    public uint FrameNr;
}

/// <summary><c>struct tpacket_stats</c> for PACKET_STATISTICS; reading it resets the kernel's counts.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct TpacketStats
{
    public uint Packets;
    public uint Drops;
}
