using Onload.Vnic.Native;

namespace Onload.Vnic.AfXdp;

/// <summary>
/// One of the four single-producer single-consumer rings of an AF_XDP socket, mapped from the kernel: a producer
/// index, a consumer index, a flags word and a power-of-two array of slots (<see cref="XdpDesc"/> for RX and TX,
/// a u64 UMEM address for fill and completion). Indices are free-running u32s; a slot is <c>index &amp; mask</c>.
/// </summary>
/// <remarks>
/// The protocol is libxdp's (xsk.h): the side that produces writes slots, then publishes its index with a release
/// store; the other side reads that index with an acquire load before reading the slots. Each side keeps a cached
/// copy of the other's index and reloads it only when the cache says the ring is full (producer) or empty
/// (consumer), so the shared cache line is touched about once per batch.
/// </remarks>
internal unsafe struct XskRing
{
    private uint* _producer;
    private uint* _consumer;
    private uint* _flags;
    private byte* _slots;
    private uint _mask;
    private uint _cachedProducer;
    private uint _cachedConsumer;

    public byte* Map { get; private set; }
    public nuint MapLength { get; private set; }
    public uint Size { get; private set; }

    /// <summary>Maps ring <paramref name="pgoff"/> of socket <paramref name="fd"/>; returns 0 or errno.</summary>
    public int MapFrom(int fd, long pgoff, in XdpRingOffset off, uint size, int slotSize)
    {
        nuint length = (nuint)(off.Desc + (ulong)size * (ulong)slotSize);
        var map = (byte*)Libc.Mmap(null, length, LinuxConstants.PROT_READ | LinuxConstants.PROT_WRITE,
            LinuxConstants.MAP_SHARED | LinuxConstants.MAP_POPULATE, fd, (nint)pgoff);
        if (map == (byte*)-1)
            return Errno.Last;
        Map = map;
        MapLength = length;
        Size = size;
        _mask = size - 1;
        _producer = (uint*)(map + off.Producer);
        _consumer = (uint*)(map + off.Consumer);
        _flags = (uint*)(map + off.Flags);
        _slots = map + off.Desc;
        // A fresh ring is empty, but read the indices rather than assume it.
        _cachedProducer = Volatile.Read(ref *_producer);
        _cachedConsumer = Volatile.Read(ref *_consumer);
        return 0;
    }

    public void Unmap()
    {
        if (Map != null)
            Libc.Munmap(Map, MapLength);
        Map = null;
        _producer = _consumer = _flags = null;
        _slots = null;
    }

    /// <summary>The kernel set XDP_RING_NEED_WAKEUP: it makes progress on this ring only after a system call.</summary>
    public readonly bool NeedsWakeup => (Volatile.Read(ref *_flags) & IfXdp.XDP_RING_NEED_WAKEUP) != 0;

    // ---- Producer side (fill, TX) ----

    /// <summary>Free slots, at least <paramref name="wanted"/> if there are (reloads the consumer index only when the
    /// cached one shows fewer).</summary>
    public uint Free(uint wanted)
    {
        uint free = Size - (_cachedProducer - _cachedConsumer);
        if (free >= wanted)
            return free;
        _cachedConsumer = Volatile.Read(ref *_consumer); // acquire: the kernel is done with those slots
        return Size - (_cachedProducer - _cachedConsumer);
    }

    /// <summary>Writes the next address slot (fill ring); visible to the kernel after <see cref="Submit"/>.</summary>
    public void PutAddress(ulong addr)
    {
        ((ulong*)_slots)[_cachedProducer & _mask] = addr;
        _cachedProducer++;
    }

    /// <summary>Writes the next descriptor slot (TX ring); visible to the kernel after <see cref="Submit"/>.</summary>
    public void PutDesc(ulong addr, uint len)
    {
        var d = (XdpDesc*)_slots + (_cachedProducer & _mask);
        d->Addr = addr;
        d->Len = len;
        d->Options = 0;
        _cachedProducer++;
    }

    /// <summary>Publishes the slots written since the last call (release: slot contents first, then the index).</summary>
    public readonly void Submit() => Volatile.Write(ref *_producer, _cachedProducer);

    // ---- Consumer side (RX, completion) ----

    /// <summary>Slots ready to read (reloads the producer index when the cached view is empty).</summary>
    public uint Available()
    {
        uint available = _cachedProducer - _cachedConsumer;
        if (available != 0)
            return available;
        _cachedProducer = Volatile.Read(ref *_producer); // acquire: the slots up to it are written
        return _cachedProducer - _cachedConsumer;
    }

    /// <summary>The next address slot (completion ring); call <see cref="Release"/> when done with the batch.</summary>
    public ulong TakeAddress() => ((ulong*)_slots)[_cachedConsumer++ & _mask];

    /// <summary>The next descriptor slot (RX ring); call <see cref="Release"/> when done with the batch.</summary>
    public XdpDesc TakeDesc() => ((XdpDesc*)_slots)[_cachedConsumer++ & _mask];

    /// <summary>Hands the slots read so far back to the kernel (release: our reads of them happen first).</summary>
    public readonly void Release() => Volatile.Write(ref *_consumer, _cachedConsumer);
}
