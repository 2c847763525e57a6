using Onload.Stack.Memory;
using Onload.Stack.Wire;
using Onload.Vnic;

namespace Onload.Stack.Arp;

public enum NeighbourState : byte
{
    Free,
    /// <summary>Requests sent, no answer yet; frames wait in the entry's queue.</summary>
    Incomplete,
    /// <summary>Confirmed within the reachable time.</summary>
    Reachable,
    /// <summary>Known but not confirmed lately: still used, and re-probed on use.</summary>
    Stale,
}

/// <summary>One neighbour: the IPv4 to MAC mapping and its resolution state (a row of the kernel's neigh table).</summary>
public struct NeighbourEntry
{
    public Ipv4Address Address;
    public MacAddress Mac;
    public NeighbourState State;
    public int Probes;
    /// <summary>When the entry was last confirmed by the neighbour.</summary>
    public long ConfirmedAt;
    /// <summary>When the entry was last used to send.</summary>
    public long UsedAt;
    /// <summary>When the next request goes out (Incomplete, or a Stale entry being re-probed); 0 = none.</summary>
    public long ProbeAt;
    public int QueueHead;
    public int QueueTail;
    public int QueueLength;
    /// <summary>Next entry in the same hash chain, or -1.</summary>
    public int Next;
}

/// <summary>A frame waiting for its neighbour's MAC.</summary>
public struct PendingFrame
{
    public int Buffer;
    public int Length;
    public int Next;
}

/// <summary>
/// The neighbour table: a fixed table of entries hashed by address, plus a bounded pool of frames waiting for
/// resolution. Pure bookkeeping; <see cref="NetStack"/> decides what to send.
/// </summary>
public sealed class ArpCache : IDisposable
{
    private readonly StructTable<NeighbourEntry> _entries;
    private readonly StructTable<PendingFrame> _pending;
    private readonly int[] _buckets;
    private readonly int _bucketMask;
    private int _freeEntry;
    private int _freePending;

    public ArpCache(int entries, int pendingFrames)
    {
        _entries = new StructTable<NeighbourEntry>(entries);
        _pending = new StructTable<PendingFrame>(Math.Max(1, pendingFrames));
        int buckets = (int)System.Numerics.BitOperations.RoundUpToPowerOf2((uint)Math.Max(16, entries));
        _buckets = new int[buckets];
        _bucketMask = buckets - 1;
        Array.Fill(_buckets, -1);
        for (int i = 0; i < entries; i++)
            _entries[i].Next = i + 1 < entries ? i + 1 : -1;
        _freeEntry = 0;
        for (int i = 0; i < _pending.Length; i++)
            _pending[i].Next = i + 1 < _pending.Length ? i + 1 : -1;
        _freePending = 0;
    }

    public int Capacity => _entries.Length;
    public int Count { get; private set; }
    public int PendingCount { get; private set; }

    public ref NeighbourEntry this[int index] => ref _entries[index];

    private int Bucket(Ipv4Address a) => (int)((a.Value * 0x9E37_79B1u) >> 16) & _bucketMask;

    /// <summary>The entry for <paramref name="address"/>, or -1.</summary>
    public int Find(Ipv4Address address)
    {
        for (int i = _buckets[Bucket(address)]; i >= 0; i = _entries[i].Next)
            if (_entries[i].Address == address)
                return i;
        return -1;
    }

    /// <summary>Adds an entry in <paramref name="state"/>; when the table is full, evicts the least recently
    /// used entry that has no frames waiting. Returns -1 if nothing could be evicted.</summary>
    public int Add(Ipv4Address address, NeighbourState state, long now)
    {
        if (_freeEntry < 0 && !EvictOne())
            return -1;
        int i = _freeEntry;
        ref var e = ref _entries[i];
        _freeEntry = e.Next;
        e = default;
        e.Address = address;
        e.State = state;
        e.UsedAt = now;
        e.QueueHead = e.QueueTail = -1;
        int b = Bucket(address);
        e.Next = _buckets[b];
        _buckets[b] = i;
        Count++;
        return i;
    }

    private bool EvictOne()
    {
        int victim = -1;
        for (int i = 0; i < _entries.Length; i++)
        {
            ref var e = ref _entries[i];
            if (e.State == NeighbourState.Free || e.QueueLength > 0)
                continue;
            if (victim < 0 || e.UsedAt < _entries[victim].UsedAt)
                victim = i;
        }
        if (victim < 0)
            return false;
        Remove(victim);
        return true;
    }

    /// <summary>Removes an entry whose queue is empty (the caller drains it first).</summary>
    public void Remove(int index)
    {
        ref var e = ref _entries[index];
        if (e.QueueLength != 0)
            throw new InvalidOperationException("neighbour removed with frames still queued");
        int b = Bucket(e.Address);
        if (_buckets[b] == index)
            _buckets[b] = e.Next;
        else
        {
            int p = _buckets[b];
            while (_entries[p].Next != index)
                p = _entries[p].Next;
            _entries[p].Next = e.Next;
        }
        e = default;
        e.Next = _freeEntry;
        _freeEntry = index;
        Count--;
    }

    /// <summary>Queues a frame on an unresolved entry. When the entry's queue or the pool is full the oldest
    /// frame of this entry is pushed out and returned in <paramref name="evictedBuffer"/> for the caller to release.</summary>
    public bool Enqueue(int index, int buffer, int length, int perEntryLimit, out int evictedBuffer)
    {
        evictedBuffer = -1;
        ref var e = ref _entries[index];
        if (e.QueueLength >= perEntryLimit || _freePending < 0)
        {
            if (e.QueueLength == 0)
                return false; // the pool is used up by other neighbours
            evictedBuffer = Dequeue(index, out _);
        }
        int p = _freePending;
        _freePending = _pending[p].Next;
        _pending[p] = new PendingFrame { Buffer = buffer, Length = length, Next = -1 };
        if (e.QueueTail >= 0)
            _pending[e.QueueTail].Next = p;
        else
            e.QueueHead = p;
        e.QueueTail = p;
        e.QueueLength++;
        PendingCount++;
        return true;
    }

    /// <summary>Takes the oldest waiting frame of an entry; returns its buffer or -1.</summary>
    public int Dequeue(int index, out int length)
    {
        ref var e = ref _entries[index];
        int p = e.QueueHead;
        if (p < 0)
        {
            length = 0;
            return -1;
        }
        ref var f = ref _pending[p];
        e.QueueHead = f.Next;
        if (e.QueueHead < 0)
            e.QueueTail = -1;
        e.QueueLength--;
        PendingCount--;
        length = f.Length;
        int buffer = f.Buffer;
        f.Next = _freePending;
        _freePending = p;
        return buffer;
    }

    public void Dispose()
    {
        _entries.Dispose();
        _pending.Dispose();
    }
}
