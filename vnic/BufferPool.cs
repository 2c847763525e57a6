using System.Runtime.InteropServices;

namespace Onload.Vnic;

/// <summary>
/// The packet buffer area of one VNIC: <see cref="Count"/> buffers of <see cref="BufferSize"/> bytes in one
/// unmanaged block, named by index. A buffer has one owner at a time (the backend, the stack, a socket
/// queue or, later, an application borrowing it zero-copy) and goes back with an explicit <see cref="Release"/>.
/// </summary>
/// <remarks>Allocation is a pop from a free stack and release a push: O(1), no locks, no garbage. Single-threaded
/// by design, like the stack that drives it.</remarks>
public sealed unsafe class BufferPool : IDisposable
{
    public const int DefaultBufferSize = 2048;

    private byte* _area;
    private int* _freeStack;
    private byte* _owned;
    private int _freeCount;
    private readonly int _stride;
    private readonly bool _ownsArea;

    public BufferPool(int count, int bufferSize = DefaultBufferSize)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(count, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(bufferSize, 64);
        Count = count;
        BufferSize = bufferSize;
        _stride = bufferSize;
        _ownsArea = true;
        _area = (byte*)NativeMemory.AlignedAlloc((nuint)count * (nuint)bufferSize, 64);
        InitFreeStack(out _freeStack, out _owned, out _freeCount);
    }

    /// <summary>
    /// A pool over memory someone else owns and frees (an AF_XDP UMEM): buffer <c>i</c> is the
    /// <paramref name="bufferSize"/> bytes at <c>area + i * stride</c>. Dispose leaves the area alone.
    /// </summary>
    public BufferPool(byte* area, int count, int bufferSize, int stride)
    {
        ArgumentNullException.ThrowIfNull(area);
        ArgumentOutOfRangeException.ThrowIfLessThan(count, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(bufferSize, 64);
        ArgumentOutOfRangeException.ThrowIfLessThan(stride, bufferSize);
        Count = count;
        BufferSize = bufferSize;
        _stride = stride;
        _area = area;
        InitFreeStack(out _freeStack, out _owned, out _freeCount);
    }

    private void InitFreeStack(out int* freeStack, out byte* owned, out int freeCount)
    {
        int count = Count;
        freeStack = (int*)NativeMemory.Alloc((nuint)count, sizeof(int));
        owned = (byte*)NativeMemory.AllocZeroed((nuint)count);
        // Lowest indices on top, so a quiet stack keeps reusing the same few cache-warm buffers.
        for (int i = 0; i < count; i++)
            freeStack[i] = count - 1 - i;
        freeCount = count;
    }

    public int Count { get; }
    public int BufferSize { get; }
    public int Available => _freeCount;

    /// <summary>Times an allocation found the pool empty.</summary>
    public long Exhausted { get; private set; }

    public bool TryAllocate(out int buffer)
    {
        if (_freeCount == 0)
        {
            Exhausted++;
            buffer = -1;
            return false;
        }
        buffer = _freeStack[--_freeCount];
        _owned[buffer] = 1;
        return true;
    }

    public void Release(int buffer)
    {
        if ((uint)buffer >= (uint)Count || _owned[buffer] == 0)
            throw new InvalidOperationException($"buffer {buffer} released but not allocated");
        _owned[buffer] = 0;
        _freeStack[_freeCount++] = buffer;
    }

    public Span<byte> Span(int buffer)
    {
        if ((uint)buffer >= (uint)Count)
            throw new ArgumentOutOfRangeException(nameof(buffer));
        return new Span<byte>(_area + (long)buffer * _stride, BufferSize);
    }

    public Span<byte> Span(in PacketDescriptor d) => Span(d.Buffer)[..d.Length];

    public byte* Pointer(int buffer) => _area + (long)buffer * _stride;

    public void Dispose()
    {
        if (_area == null)
            return;
        if (_ownsArea)
            NativeMemory.AlignedFree(_area);
        NativeMemory.Free(_freeStack);
        NativeMemory.Free(_owned);
        _area = null;
        _freeStack = null;
        _owned = null;
    }
}
