using Onload.Vnic.Native;

namespace Onload.Vnic;

/// <summary>
/// Address space reserved for memory touched only as it is used: private anonymous pages mapped with
/// MAP_NORESERVE, so a table sized for its largest rows (10,000 TCP rows of 4 MiB rings are 80 GiB) costs what its
/// rows use, not what they might. A plain malloc of that size fails under the kernel's default heuristic overcommit,
/// which refuses one allocation larger than RAM and swap. Pages a row gave back (<see cref="Discard"/>) read as zeros
/// and are faulted in again when next written.
/// </summary>
public static unsafe class ReservedMemory
{
    private const nuint PageSize = 4096;

    /// <summary>Reserves <paramref name="bytes"/>, page-aligned and zero. Throws OutOfMemoryException if the address
    /// space cannot be had (RLIMIT_AS, vm.max_map_count).</summary>
    public static byte* Reserve(nuint bytes)
    {
        void* p = Libc.Mmap(null, bytes, LinuxConstants.PROT_READ | LinuxConstants.PROT_WRITE,
            LinuxConstants.MAP_PRIVATE | LinuxConstants.MAP_ANONYMOUS | LinuxConstants.MAP_NORESERVE, -1, 0);
        if (p == (void*)-1)
            throw new OutOfMemoryException($"cannot reserve {bytes} bytes of address space: errno {Errno.Last}");
        // Small pages only: with transparent huge pages "always" (RHEL, Fedora) a row's first write would fault in
        // 2 MiB, and a row touched in three places would cost megabytes, not kilobytes. Best effort (no THP: EINVAL).
        _ = Libc.Madvise(p, bytes, LinuxConstants.MADV_NOHUGEPAGE);
        return (byte*)p;
    }

    public static void Release(byte* at, nuint bytes) => _ = Libc.Munmap(at, bytes);

    /// <summary>Bytes of [<paramref name="at"/>, +<paramref name="bytes"/>) that are memory now (mincore), for
    /// inspection: it walks the range a chunk at a time.</summary>
    public static long Resident(byte* at, nuint bytes)
    {
        const int ChunkPages = 16384; // 64 MiB a call
        byte* vector = stackalloc byte[ChunkPages];
        long resident = 0;
        for (nuint done = 0; done < bytes;)
        {
            nuint chunk = Math.Min(bytes - done, (nuint)ChunkPages * PageSize);
            if (Libc.Mincore(at + done, chunk, vector) != 0)
                return -1;
            int pages = (int)((chunk + PageSize - 1) / PageSize);
            for (int i = 0; i < pages; i++)
                resident += vector[i] & 1;
            done += chunk;
        }
        return resident * (long)PageSize;
    }

    /// <summary>Gives back the whole pages inside [<paramref name="at"/>, +<paramref name="bytes"/>) (MADV_DONTNEED):
    /// they stop counting in the process's memory and read as zeros.</summary>
    public static void Discard(byte* at, nuint bytes)
    {
        nuint start = ((nuint)at + PageSize - 1) & ~(PageSize - 1);
        nuint end = ((nuint)at + bytes) & ~(PageSize - 1);
        if (end > start)
            _ = Libc.Madvise((void*)start, end - start, LinuxConstants.MADV_DONTNEED);
    }
}
