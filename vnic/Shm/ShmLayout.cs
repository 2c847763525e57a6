using System.Runtime.InteropServices;

namespace Onload.Vnic.Shm;

/// <summary>
/// The layout of the shared region (one memfd, mapped MAP_SHARED by both ends):
/// <code>
///   0                      RegionHeader (one page)
///   PageBytes              ring 0: control page, then SlotCount slots of SlotSize bytes
///   PageBytes + RingBytes  ring 1: the same
/// </code>
/// Each ring carries one direction and has exactly one producer and one consumer. Ring control:
/// <code>
///   +0    long Producer   next slot to fill; written only by the producer (release), read by the consumer (acquire)
///   +128  long Consumer   next slot to empty; written only by the consumer (release), read by the producer (acquire)
///   +256  int  Sleeping   1 = the consumer is about to sleep on its eventfd and wants a doorbell
/// </code>
/// Indices count frames since the ring was made and never wrap (64 bits); a slot is <c>index &amp; (SlotCount - 1)</c>.
/// They sit 128 bytes apart so that the two ends never write the same cache line (nor its adjacent-line prefetch
/// pair). A slot holds a 4-byte frame length, then the frame at <see cref="SlotDataOffset"/>.
/// </summary>
internal static unsafe class ShmLayout
{
    /// <summary>"ONLDSHM1", little-endian.</summary>
    public const ulong Magic = 0x314D_4853_444C_4E4FUL;
    public const uint Version = 1;

    public const int PageBytes = 4096;
    public const int ProducerOffset = 0;
    public const int ConsumerOffset = 128;
    public const int SleepingOffset = 256;
    /// <summary>Where the frame starts in a slot: a cache line after the length word.</summary>
    public const int SlotDataOffset = 64;

    /// <summary>Bytes per slot for a given largest frame: header line plus frame, rounded up to 1 KiB.</summary>
    public static int SlotSizeFor(int maxFrame) => (SlotDataOffset + maxFrame + 1023) & ~1023;

    public static long RingBytes(int slotCount, int slotSize) => PageBytes + (long)slotCount * slotSize;

    public static long RegionBytes(int slotCount, int slotSize) => PageBytes + 2 * RingBytes(slotCount, slotSize);

    public static byte* Ring(byte* region, int ring, long ringBytes) => region + PageBytes + ring * ringBytes;

    public static ref long Producer(byte* ring) => ref *(long*)(ring + ProducerOffset);

    public static ref long Consumer(byte* ring) => ref *(long*)(ring + ConsumerOffset);

    public static ref int Sleeping(byte* ring) => ref *(int*)(ring + SleepingOffset);

    public static byte* Slot(byte* ring, long index, int mask, int slotSize) => ring + PageBytes + (index & mask) * slotSize;
}

/// <summary>The first bytes of the region: what the creator chose, checked by every joiner.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct RegionHeader
{
    public ulong Magic;
    public uint Version;
    public uint Mtu;
    public uint SlotCount;
    public uint SlotSize;
    public ulong RegionBytes;
}

/// <summary>Kinds of <see cref="RendezvousMessage"/>.</summary>
internal enum MessageKind : uint
{
    /// <summary>Listener to joiner, with SCM_RIGHTS [memfd, joiner's doorbell, listener's doorbell].</summary>
    Hello = 1,
    /// <summary>Listener to joiner: two endpoints are live already.</summary>
    Busy = 2,
    /// <summary>Either way: the peer runs as another user.</summary>
    Refused = 3,
    /// <summary>Joiner to listener: mapped and ready; carries the joiner's MAC.</summary>
    Ack = 4,
    /// <summary>Listener to joiner: the listener counts the joiner as its peer from now on.</summary>
    Ready = 5,
    /// <summary>Joiner to listener: the joiner gives up (its MAC clashes, the region is unusable).</summary>
    Abort = 6,
}

/// <summary>The handshake's one message shape (sent on a SOCK_SEQPACKET socket: one send, one receive).</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct RendezvousMessage
{
    public ulong Magic;
    public uint Version;
    public MessageKind Kind;
    /// <summary>Hello: the region's size.</summary>
    public ulong RegionBytes;
    /// <summary>Hello: the ring the joiner consumes (0 or 1); it produces on the other.</summary>
    public uint JoinerRxRing;
    public uint Reserved;
    /// <summary>Hello: the listener's MAC; Ack: the joiner's.</summary>
    public ulong Mac;
}
