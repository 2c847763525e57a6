using BenchmarkDotNet.Attributes;
using Onload.Vnic;

namespace Onload.Perf.Vnic;

/// <summary>
/// The VNIC data-path primitives: a buffer's round trip through the pool, and a 32-descriptor batch (a
/// typical poll budget) through a descriptor ring. Both must allocate nothing: the memory columns say so.
/// </summary>
[MemoryDiagnoser]
public class RingBenchmarks
{
    public const int BatchSize = 32;

    private BufferPool _pool = null!;
    private DescriptorRing _ring = null!;
    private readonly PacketDescriptor[] _produce = new PacketDescriptor[BatchSize];
    private readonly PacketDescriptor[] _consume = new PacketDescriptor[BatchSize];

    [Params(256)]
    public int RingCapacity { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        _pool = new BufferPool(4096);
        _ring = new DescriptorRing(RingCapacity);
        for (int i = 0; i < BatchSize; i++)
            _produce[i] = new PacketDescriptor(i, 60 + i);
    }

    [GlobalCleanup]
    public void Cleanup() => _pool.Dispose();

    /// <summary>One buffer allocated and released: the pool's pop and push.</summary>
    [Benchmark]
    public int BufferPool_AllocateRelease()
    {
        if (!_pool.TryAllocate(out int buffer))
            throw new InvalidOperationException("pool exhausted");
        _pool.Release(buffer);
        return buffer;
    }

    /// <summary>32 buffers allocated, then released: the shape of an RX refill and a TX completion.</summary>
    [Benchmark(OperationsPerInvoke = BatchSize)]
    public int BufferPool_AllocateRelease_Batch32()
    {
        Span<int> held = stackalloc int[BatchSize];
        for (int i = 0; i < BatchSize; i++)
        {
            if (!_pool.TryAllocate(out held[i]))
                throw new InvalidOperationException("pool exhausted");
        }
        for (int i = 0; i < BatchSize; i++)
            _pool.Release(held[i]);
        return held[0];
    }

    /// <summary>A batch of 32 produced with one call and consumed with one call.</summary>
    [Benchmark(OperationsPerInvoke = BatchSize)]
    public int DescriptorRing_ProduceConsume_Batch32()
    {
        int produced = _ring.Produce(_produce);
        int consumed = _ring.Consume(_consume);
        if (produced != BatchSize || consumed != BatchSize)
            throw new InvalidOperationException("ring lost descriptors");
        return _consume[BatchSize - 1].Length;
    }

    /// <summary>The same 32 descriptors one at a time, TryProduce then TryConsume.</summary>
    [Benchmark(OperationsPerInvoke = BatchSize)]
    public int DescriptorRing_ProduceConsume_Single32()
    {
        for (int i = 0; i < BatchSize; i++)
            _ring.TryProduce(in _produce[i]);
        int sum = 0;
        while (_ring.TryConsume(out PacketDescriptor d))
            sum += d.Length;
        return sum;
    }
}
