using System.Runtime.InteropServices;

namespace Onload.Native;

/// <summary>
/// Zero-copy TCP (<c>onload_sock_zc_*</c> in onload_stack.h), under the C API's onload_zc_* calls: the stack lends
/// received bytes where they lie in the receive ring and reserves room in the send ring for the program to write
/// into. Pointers stay valid until the bytes are returned or committed: the rings do not grow or move meanwhile.
/// </summary>
public static unsafe partial class SocketExports
{
    /// <summary><c>int onload_sock_zc_lend(int h, int max, void **data)</c>: up to max unread bytes after those lent
    /// (one contiguous run); recv()'s results with nothing to read.</summary>
    [UnmanagedCallersOnly(EntryPoint = "onload_sock_zc_lend")]
    public static int ZcLend(int h, int max, void** data) =>
        Call((h, max, data: (nint)data), static (l, a) =>
        {
            int n = l.ReceiveLend(a.h, a.max, out nint p);
            *(nint*)a.data = p;
            return n;
        });

    /// <summary><c>int onload_sock_zc_return(int h, int n)</c>: the first n lent bytes are done with.</summary>
    [UnmanagedCallersOnly(EntryPoint = "onload_sock_zc_return")]
    public static int ZcReturn(int h, int n) => Call((h, n), static (l, a) => l.ReceiveReturn(a.h, a.n));

    /// <summary><c>int onload_sock_zc_reserve(int h, void **data, uint64_t *position)</c>: the send ring's free run
    /// after the queued bytes and its stream position; send()'s errors otherwise, -EBUSY when one is open.</summary>
    [UnmanagedCallersOnly(EntryPoint = "onload_sock_zc_reserve")]
    public static int ZcReserve(int h, void** data, long* position) =>
        Call((h, data: (nint)data, position: (nint)position), static (l, a) =>
        {
            int n = l.SendReserve(a.h, out nint p, out long at);
            *(nint*)a.data = p;
            *(long*)a.position = at;
            return n;
        });

    /// <summary><c>int onload_sock_zc_commit(int h, int n)</c>: queues the reservation's first n bytes (0: abandons it).</summary>
    [UnmanagedCallersOnly(EntryPoint = "onload_sock_zc_commit")]
    public static int ZcCommit(int h, int n) => Call((h, n), static (l, a) => l.SendCommit(a.h, a.n));

    /// <summary><c>int64_t onload_sock_zc_acked(int h)</c>: data bytes the peer has acknowledged since the
    /// connection opened; -errno.</summary>
    [UnmanagedCallersOnly(EntryPoint = "onload_sock_zc_acked")]
    public static long ZcAcked(int h)
    {
        try
        {
            var layer = SocketLayer.Get(out int errno);
            return layer is null ? -errno : layer.SendAcked(h);
        }
        catch (Exception)
        {
            return -EIO;
        }
    }
}
