using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Onload.Stack.Memory;

/// <summary>
/// A fixed-size table of unmanaged structs in unmanaged memory, addressed by index. Stack state lives in these
/// (not in managed objects) so the data path allocates nothing and the state can later move into a region shared
/// with other processes.
/// </summary>
public sealed unsafe class StructTable<T> : IDisposable where T : unmanaged
{
    private T* _items;

    public StructTable(int length)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(length, 1);
        Length = length;
        _items = (T*)NativeMemory.AllocZeroed((nuint)length, (nuint)sizeof(T));
    }

    public int Length { get; }

    public long Bytes => (long)Length * sizeof(T);

    public ref T this[int index]
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get
        {
            if ((uint)index >= (uint)Length)
                ThrowIndex(index);
            return ref _items[index];
        }
    }

    private void ThrowIndex(int index) =>
        throw new IndexOutOfRangeException($"index {index} outside a table of {Length} {typeof(T).Name}");

    public void Clear() => NativeMemory.Clear(_items, (nuint)Length * (nuint)sizeof(T));

    public void Dispose()
    {
        if (_items == null)
            return;
        NativeMemory.Free(_items);
        _items = null;
    }
}
