using System.Runtime.InteropServices;

namespace Onload.Vnic.Native;

/// <summary>
/// AF_XDP socket constants and structures from include/uapi/linux/if_xdp.h (Documentation/networking/af_xdp.rst),
/// with explicit offsets checked against the C header (offsetof) on x86-64; the layout is the same on arm64.
/// </summary>
internal static class IfXdp
{
    /// <summary>SOL_XDP from include/linux/socket.h.</summary>
    public const int SOL_XDP = 283;

    // sxdp_flags.
    public const ushort XDP_SHARED_UMEM = 1 << 0;
    public const ushort XDP_COPY = 1 << 1;
    public const ushort XDP_ZEROCOPY = 1 << 2;
    public const ushort XDP_USE_NEED_WAKEUP = 1 << 3;

    /// <summary>xdp_umem_reg.flags: chunks may start anywhere. We never set it: chunks are aligned.</summary>
    public const uint XDP_UMEM_UNALIGNED_CHUNK_FLAG = 1 << 0;

    /// <summary>In a ring's flags word: the kernel needs a system call to make progress on this ring.</summary>
    public const uint XDP_RING_NEED_WAKEUP = 1 << 0;

    // Socket options (level SOL_XDP).
    public const int XDP_MMAP_OFFSETS = 1;
    public const int XDP_RX_RING = 2;
    public const int XDP_TX_RING = 3;
    public const int XDP_UMEM_REG = 4;
    public const int XDP_UMEM_FILL_RING = 5;
    public const int XDP_UMEM_COMPLETION_RING = 6;
    public const int XDP_STATISTICS = 7;
    public const int XDP_OPTIONS = 8;

    /// <summary>
    /// Frames a copy-mode sendto may send per call (Linux 6.17+; include/uapi/linux/if_xdp.h). Older kernels send at
    /// most 32 and answer EAGAIN when more remain; this option is best effort.
    /// </summary>
    public const int XDP_MAX_TX_SKB_BUDGET = 9;

    /// <summary>xdp_options.flags: the socket is bound in zero-copy mode.</summary>
    public const uint XDP_OPTIONS_ZEROCOPY = 1 << 0;

    // mmap offsets (pgoff) of the four rings.
    public const long XDP_PGOFF_RX_RING = 0;
    public const long XDP_PGOFF_TX_RING = 0x80000000;
    public const long XDP_UMEM_PGOFF_FILL_RING = 0x100000000;
    public const long XDP_UMEM_PGOFF_COMPLETION_RING = 0x180000000;

    /// <summary>
    /// XDP_PACKET_HEADROOM (include/linux/bpf.h): the kernel puts a received frame this far into its chunk (after
    /// xdp_umem_reg.headroom, 0 here), in copy and zero-copy mode alike (xp_alloc sets data = data_hard_start +
    /// XDP_PACKET_HEADROOM; in aligned mode the RX descriptor's addr is the address of data).
    /// </summary>
    public const int XDP_PACKET_HEADROOM = 256;

    /// <summary>XDP_UMEM_MIN_CHUNK_SIZE (net/xdp/xdp_umem.c); the largest chunk is PAGE_SIZE.</summary>
    public const int XDP_UMEM_MIN_CHUNK_SIZE = 2048;
}

/// <summary><c>struct sockaddr_xdp</c> (16 bytes), for bind.</summary>
[StructLayout(LayoutKind.Explicit, Size = Size)]
internal struct SockaddrXdp
{
    public const int Size = 16;

    [FieldOffset(0)] public ushort Family;
    [FieldOffset(2)] public ushort Flags;
    [FieldOffset(4)] public uint IfIndex;
    [FieldOffset(8)] public uint QueueId;
    [FieldOffset(12)] public uint SharedUmemFd;
}

/// <summary>
/// <c>struct xdp_umem_reg</c> for XDP_UMEM_REG (32 bytes). Linux 6.8 added <c>tx_metadata_len</c> at offset 28,
/// where older headers have padding: it must be zero (no TX metadata), which <c>default</c> gives.
/// </summary>
[StructLayout(LayoutKind.Explicit, Size = Size)]
internal struct XdpUmemReg
{
    public const int Size = 32;

    /// <summary>Start of the packet data area: page aligned.</summary>
    [FieldOffset(0)] public ulong Addr;
    /// <summary>Its length: a multiple of the chunk size in aligned mode.</summary>
    [FieldOffset(8)] public ulong Len;
    /// <summary>A power of two from 2048 to PAGE_SIZE in aligned mode.</summary>
    [FieldOffset(16)] public uint ChunkSize;
    /// <summary>Bytes the kernel leaves free before XDP_PACKET_HEADROOM in each chunk.</summary>
    [FieldOffset(20)] public uint Headroom;
    [FieldOffset(24)] public uint Flags;
    [FieldOffset(28)] public uint TxMetadataLen;
}

/// <summary><c>struct xdp_ring_offset</c>: where a ring's producer, consumer, descriptors and flags sit in its mapping.</summary>
[StructLayout(LayoutKind.Explicit, Size = 32)]
internal struct XdpRingOffset
{
    [FieldOffset(0)] public ulong Producer;
    [FieldOffset(8)] public ulong Consumer;
    [FieldOffset(16)] public ulong Desc;
    [FieldOffset(24)] public ulong Flags;
}

/// <summary><c>struct xdp_mmap_offsets</c> (128 bytes) from getsockopt(XDP_MMAP_OFFSETS).</summary>
[StructLayout(LayoutKind.Explicit, Size = Size)]
internal struct XdpMmapOffsets
{
    public const int Size = 128;

    [FieldOffset(0)] public XdpRingOffset Rx;
    [FieldOffset(32)] public XdpRingOffset Tx;
    /// <summary>The fill ring.</summary>
    [FieldOffset(64)] public XdpRingOffset Fr;
    /// <summary>The completion ring.</summary>
    [FieldOffset(96)] public XdpRingOffset Cr;
}

/// <summary><c>struct xdp_desc</c> (16 bytes): one slot of the RX or TX ring. Fill and completion slots are a bare u64 address.</summary>
[StructLayout(LayoutKind.Explicit, Size = Size)]
internal struct XdpDesc
{
    public const int Size = 16;

    /// <summary>Offset of the frame's first byte from the start of the UMEM.</summary>
    [FieldOffset(0)] public ulong Addr;
    [FieldOffset(8)] public uint Len;
    /// <summary>XDP_PKT_CONTD (multi-buffer) and TX metadata bits; 0 here.</summary>
    [FieldOffset(12)] public uint Options;
}

/// <summary><c>struct xdp_statistics</c> (48 bytes) from getsockopt(XDP_STATISTICS): running totals since bind.</summary>
[StructLayout(LayoutKind.Explicit, Size = Size)]
public struct XdpStatistics
{
    public const int Size = 48;

    /// <summary>Frames dropped for other reasons: too long for a chunk, and (copy mode) no fill ring entry.</summary>
    [FieldOffset(0)] public ulong RxDropped;
    /// <summary>Fill ring entries the kernel found invalid (an address outside the UMEM).</summary>
    [FieldOffset(8)] public ulong RxInvalidDescs;
    /// <summary>TX descriptors the kernel refused (address outside the UMEM, frame crossing a chunk, bad length).</summary>
    [FieldOffset(16)] public ulong TxInvalidDescs;
    /// <summary>Frames dropped because the RX ring was full.</summary>
    [FieldOffset(24)] public ulong RxRingFull;
    /// <summary>Times the kernel wanted a buffer and found the fill ring empty.</summary>
    [FieldOffset(32)] public ulong RxFillRingEmptyDescs;
    /// <summary>Times the kernel looked for a TX descriptor and found none.</summary>
    [FieldOffset(40)] public ulong TxRingEmptyDescs;
}

/// <summary><c>struct xdp_options</c> for getsockopt(XDP_OPTIONS).</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct XdpOptions
{
    /// <summary>XDP_OPTIONS_ZEROCOPY.</summary>
    public uint Flags;
}
