using Onload.Stack.Memory;
using Onload.Stack.Wire;
using Onload.Vnic;

namespace Onload.Stack.Ip;

/// <summary>One datagram being put back together (the kernel's struct ipq).</summary>
public struct ReassemblyQueue
{
    public bool InUse;
    /// <summary>Complete and handed to a socket: no timer, freed when the application reads it.</summary>
    public bool Delivered;
    /// <summary>The fragment with MF clear has arrived, so <see cref="Length"/> is final.</summary>
    public bool LastIn;
    public Ipv4Address Source;
    public Ipv4Address Destination;
    public ushort Identification;
    public byte Protocol;
    /// <summary>The payload length: the highest fragment end seen (final once <see cref="LastIn"/>).</summary>
    public int Length;
    /// <summary>Payload bytes held: with overlaps refused, complete when this reaches <see cref="Length"/>.</summary>
    public int Received;
    public int Fragments;
    public long ExpiresAt;
    /// <summary>Next queue in the same hash chain, or -1.</summary>
    public int HashNext;
}

/// <summary>One fragment held: its frame's buffer and where its payload lies in it.</summary>
public struct HeldFragment
{
    public int Buffer;
    public ushort DataStart;
    public ushort Length;
    public int Offset;
    /// <summary>Begins a run (Linux's frag run): fragments that came in order, each at the end of the one before,
    /// form one run, and a later copy anywhere inside a run is a duplicate, whatever fragments it straddles.</summary>
    public bool RunStart;
}

public enum FragmentOutcome
{
    /// <summary>Kept: the buffer belongs to the reassembler now.</summary>
    Held,
    /// <summary>Kept, and the datagram is whole: read it through the queue index.</summary>
    Complete,
    /// <summary>Refused: the caller keeps (and releases) the buffer; the reason says why.</summary>
    Dropped,
}

/// <summary>
/// IPv4 reassembly (RFC 791 §3.2, RFC 815) with Linux's rules and limits: bounded memory (above it every
/// fragment is refused until timeouts free some, like ipfrag_high_thresh), a time limit per datagram
/// (ipfrag_time), a bound on fragments per datagram, duplicates ignored, and any partial overlap discarding the
/// whole datagram (Linux since 4.19, after FragmentSmack; RFC 5722's rule for IPv6). Fragments stay in their
/// receive buffers: nothing is copied until the application reads the datagram.
/// </summary>
public sealed class Ipv4Reassembler : IDisposable
{
    private readonly BufferPool _pool;
    private readonly StructTable<ReassemblyQueue> _queues;
    private readonly StructTable<HeldFragment> _fragments;
    /// <summary>Chains of queues by (source, destination, identification, protocol), so a fragment finds its
    /// datagram without a scan (Linux's ipq hash).</summary>
    private readonly int[] _buckets;
    private readonly int _bucketMask;
    private readonly FreeList _free;
    private readonly int _maxFragments;
    private readonly long _memoryLimit;
    private readonly long _timeoutNs;
    private long _memory;

    public Ipv4Reassembler(BufferPool pool, int queues, int maxFragments, long memoryLimit, long timeoutNs)
    {
        _pool = pool;
        _queues = new StructTable<ReassemblyQueue>(queues);
        _fragments = new StructTable<HeldFragment>(queues * maxFragments);
        int buckets = (int)System.Numerics.BitOperations.RoundUpToPowerOf2((uint)Math.Max(16, queues * 2));
        _buckets = new int[buckets];
        _bucketMask = buckets - 1;
        Array.Fill(_buckets, -1);
        _free = new FreeList(queues);
        _maxFragments = maxFragments;
        _memoryLimit = memoryLimit;
        _timeoutNs = timeoutNs;
    }

    public int Capacity => _queues.Length;
    /// <summary>Bytes of buffers held (charged per buffer, like skb truesize).</summary>
    public long Memory => _memory;
    public int Active { get; private set; }

    public ref ReassemblyQueue this[int queue] => ref _queues[queue];

    /// <summary>The first fragment's buffer (offset 0), whose frame carries the datagram's IP header.</summary>
    public int FirstBuffer(int queue) => _fragments[queue * _maxFragments].Buffer;

    /// <summary>Takes one fragment. <paramref name="dataStart"/> is where its payload starts in the buffer.</summary>
    public FragmentOutcome Add(Ipv4Packet ip, int buffer, int dataStart, long now, out int queue, out DropReason reason)
    {
        reason = DropReason.None;
        queue = -1;
        if (_memory + _pool.BufferSize > _memoryLimit)
        {
            reason = DropReason.IpReassemblyMemoryFull;
            return FragmentOutcome.Dropped;
        }
        int offset = ip.FragmentOffset;
        int end = offset + ip.Payload.Length;
        bool more = ip.MoreFragments;
        if (more)
            end &= ~7; // a fragment that is not the last carries a multiple of 8 bytes; Linux trims the rest
        if (end > ushort.MaxValue - ip.HeaderLength)
        {
            reason = DropReason.IpReassemblyOversize; // the "ping of death"
            return FragmentOutcome.Dropped;
        }
        queue = Find(ip.Source, ip.Destination, ip.Identification, ip.Protocol);
        if (queue < 0)
        {
            queue = Create(ip, now);
            if (queue < 0)
            {
                reason = DropReason.IpReassemblyNoQueue;
                return FragmentOutcome.Dropped;
            }
        }
        ref var q = ref _queues[queue];
        if (q.Delivered)
        {
            // The datagram is already whole and waiting in a socket: a late copy of one of its fragments.
            reason = DropReason.IpFragmentDuplicate;
            return FragmentOutcome.Dropped;
        }

        // ip_frag_queue(): the last fragment fixes the length, and nothing may lie beyond it.
        if (!more)
        {
            if (end < q.Length || (q.LastIn && end != q.Length))
                return Kill(queue, DropReason.IpReassemblyInconsistent, out reason);
            q.LastIn = true;
            q.Length = end;
        }
        else if (end > q.Length)
        {
            if (q.LastIn)
                return Kill(queue, DropReason.IpReassemblyInconsistent, out reason);
            q.Length = end;
        }
        if (end == offset)
            return Kill(queue, DropReason.IpReassemblyInconsistent, out reason);

        // inet_frag_queue_insert(): fragments are kept sorted, in runs. One that ends past the last fragment goes at
        // the end (continuing the last run if it starts where that ends) unless it overlaps it; any other must lie
        // wholly inside a run (a duplicate, ignored, whatever its bytes) or touch none, else the datagram is condemned.
        int baseIndex = queue * _maxFragments;
        int at = q.Fragments;
        bool runStart = true;
        if (q.Fragments > 0)
        {
            ref var last = ref _fragments[baseIndex + q.Fragments - 1];
            int lastEnd = last.Offset + last.Length;
            if (lastEnd < end)
            {
                if (offset < lastEnd)
                    return Kill(queue, DropReason.IpReassemblyOverlap, out reason);
                runStart = offset != lastEnd;
            }
            else
            {
                for (int i = 0; i < q.Fragments;)
                {
                    int head = i;
                    int runOffset = _fragments[baseIndex + i].Offset;
                    int runEnd = runOffset + _fragments[baseIndex + i].Length;
                    for (i++; i < q.Fragments && !_fragments[baseIndex + i].RunStart; i++)
                        runEnd = _fragments[baseIndex + i].Offset + _fragments[baseIndex + i].Length;
                    if (end <= runOffset)
                    {
                        at = head;
                        break;
                    }
                    if (offset >= runEnd)
                        continue;
                    if (offset >= runOffset && end <= runEnd)
                    {
                        reason = DropReason.IpFragmentDuplicate;
                        return FragmentOutcome.Dropped;
                    }
                    return Kill(queue, DropReason.IpReassemblyOverlap, out reason);
                }
            }
        }
        if (q.Fragments == _maxFragments)
            return Kill(queue, DropReason.IpReassemblyTooManyFragments, out reason);

        for (int i = q.Fragments; i > at; i--)
            _fragments[baseIndex + i] = _fragments[baseIndex + i - 1];
        _fragments[baseIndex + at] = new HeldFragment
        {
            Buffer = buffer,
            DataStart = (ushort)dataStart,
            Length = (ushort)(end - offset),
            Offset = offset,
            RunStart = runStart,
        };
        q.Fragments++;
        q.Received += end - offset;
        _memory += _pool.BufferSize;
        if (q.LastIn && q.Received == q.Length && _fragments[baseIndex].Offset == 0)
        {
            q.Delivered = true; // the caller either hands it on or frees it
            return FragmentOutcome.Complete;
        }
        return FragmentOutcome.Held;
    }

    private FragmentOutcome Kill(int queue, DropReason why, out DropReason reason)
    {
        reason = why;
        Free(queue);
        return FragmentOutcome.Dropped;
    }

    private int Bucket(Ipv4Address source, Ipv4Address destination, ushort id, byte protocol) =>
        (int)((source.Value * 0x9E37_79B1u ^ destination.Value * 0x85EB_CA6Bu ^ ((uint)id << 8 | protocol) * 0xC2B2_AE35u) >> 8)
        & _bucketMask;

    private int Find(Ipv4Address source, Ipv4Address destination, ushort id, byte protocol)
    {
        for (int i = _buckets[Bucket(source, destination, id, protocol)]; i >= 0; i = _queues[i].HashNext)
        {
            ref var q = ref _queues[i];
            if (q.Identification == id && q.Source == source && q.Destination == destination && q.Protocol == protocol)
                return i;
        }
        return -1;
    }

    private int Create(Ipv4Packet ip, long now)
    {
        int i = _free.Take();
        if (i < 0)
            return -1;
        int b = Bucket(ip.Source, ip.Destination, ip.Identification, ip.Protocol);
        _queues[i] = new ReassemblyQueue
        {
            InUse = true,
            Source = ip.Source,
            Destination = ip.Destination,
            Identification = ip.Identification,
            Protocol = ip.Protocol,
            ExpiresAt = now + _timeoutNs,
            HashNext = _buckets[b],
        };
        _buckets[b] = i;
        Active++;
        return i;
    }

    /// <summary>Whether the first fragment (which carries the transport header) is held.</summary>
    public bool HasFirst(int queue) => _queues[queue].Fragments > 0 && _fragments[queue * _maxFragments].Offset == 0;

    /// <summary>Adds the whole payload of a complete datagram to a running checksum.</summary>
    public ulong ChecksumAdd(int queue, ulong sum)
    {
        int baseIndex = queue * _maxFragments;
        for (int i = 0; i < _queues[queue].Fragments; i++)
        {
            ref var f = ref _fragments[baseIndex + i];
            // Every fragment but the last is a multiple of 8 bytes long, so the 16-bit words line up across them.
            sum = Checksum.Add(sum, _pool.Span(f.Buffer).Slice(f.DataStart, f.Length));
        }
        return sum;
    }

    /// <summary>Copies payload bytes from <paramref name="skip"/> on into <paramref name="destination"/>; returns
    /// how many were copied.</summary>
    public int CopyOut(int queue, int skip, Span<byte> destination)
    {
        int baseIndex = queue * _maxFragments;
        int copied = 0;
        for (int i = 0; i < _queues[queue].Fragments && copied < destination.Length; i++)
        {
            ref var f = ref _fragments[baseIndex + i];
            int fragmentEnd = f.Offset + f.Length;
            int from = Math.Max(f.Offset, skip + copied);
            if (from >= fragmentEnd)
                continue;
            int n = Math.Min(fragmentEnd - from, destination.Length - copied);
            _pool.Span(f.Buffer).Slice(f.DataStart + from - f.Offset, n).CopyTo(destination[copied..]);
            copied += n;
        }
        return copied;
    }

    /// <summary>Releases a queue and every buffer it holds.</summary>
    public void Free(int queue)
    {
        ref var q = ref _queues[queue];
        if (!q.InUse)
            return;
        int baseIndex = queue * _maxFragments;
        for (int i = 0; i < q.Fragments; i++)
            _pool.Release(_fragments[baseIndex + i].Buffer);
        _memory -= (long)q.Fragments * _pool.BufferSize;
        int b = Bucket(q.Source, q.Destination, q.Identification, q.Protocol);
        if (_buckets[b] == queue)
            _buckets[b] = q.HashNext;
        else
        {
            int p = _buckets[b];
            while (_queues[p].HashNext != queue)
                p = _queues[p].HashNext;
            _queues[p].HashNext = q.HashNext;
        }
        q = default;
        _free.Return(queue);
        Active--;
    }

    public void Dispose()
    {
        for (int i = 0; i < _queues.Length; i++)
            Free(i);
        _queues.Dispose();
        _fragments.Dispose();
    }
}
