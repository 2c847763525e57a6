using System.Numerics;

namespace Onload.Vnic;

/// <summary>
/// A single-producer single-consumer ring of <see cref="PacketDescriptor"/>s: the shape of every VNIC's RX and
/// TX queues. Producer and consumer move in batches; capacity is a power of two so indices wrap with a mask.
/// </summary>
public sealed class DescriptorRing
{
    private readonly PacketDescriptor[] _slots;
    private readonly int _mask;
    private long _head; // next slot to consume
    private long _tail; // next slot to produce

    public DescriptorRing(int capacity)
    {
        if (capacity < 2 || !BitOperations.IsPow2(capacity))
            throw new ArgumentOutOfRangeException(nameof(capacity), "capacity must be a power of two, at least 2");
        _slots = GC.AllocateArray<PacketDescriptor>(capacity, pinned: true);
        _mask = capacity - 1;
    }

    public int Capacity => _slots.Length;
    public int Count => (int)(_tail - _head);
    public int Space => Capacity - Count;
    public bool IsEmpty => _tail == _head;

    public bool TryProduce(in PacketDescriptor d)
    {
        if (Count == Capacity)
            return false;
        _slots[(int)(_tail & _mask)] = d;
        _tail++;
        return true;
    }

    /// <summary>Produces as many of <paramref name="batch"/> as fit; returns how many.</summary>
    public int Produce(ReadOnlySpan<PacketDescriptor> batch)
    {
        int n = Math.Min(batch.Length, Space);
        for (int i = 0; i < n; i++)
            _slots[(int)((_tail + i) & _mask)] = batch[i];
        _tail += n;
        return n;
    }

    public bool TryConsume(out PacketDescriptor d)
    {
        if (_tail == _head)
        {
            d = default;
            return false;
        }
        d = _slots[(int)(_head & _mask)];
        _head++;
        return true;
    }

    /// <summary>Consumes up to <c>batch.Length</c> descriptors into <paramref name="batch"/>; returns how many.</summary>
    public int Consume(Span<PacketDescriptor> batch)
    {
        int n = Math.Min(batch.Length, Count);
        for (int i = 0; i < n; i++)
            batch[i] = _slots[(int)((_head + i) & _mask)];
        _head += n;
        return n;
    }

    public ref PacketDescriptor Peek() => ref _slots[(int)(_head & _mask)];
}
