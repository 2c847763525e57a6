using System.Runtime.InteropServices;

namespace Onload.Vnic.Native;

/// <summary>The libc calls the driverlink client and daemon add: epoll (a stack's wait set, the kernel sockets'
/// watcher), getsockname (what a backing socket holds) and shutdown.</summary>
internal static unsafe partial class Libc
{
    [LibraryImport(Lib, EntryPoint = "epoll_create1", SetLastError = true)]
    internal static partial int EpollCreate1(int flags);

    [LibraryImport(Lib, EntryPoint = "epoll_ctl", SetLastError = true)]
    internal static partial int EpollCtl(int epfd, int op, int fd, EpollEvent* ev);

    [LibraryImport(Lib, EntryPoint = "epoll_wait", SetLastError = true)]
    internal static partial int EpollWait(int epfd, EpollEvent* events, int maxEvents, int timeoutMs);

    [LibraryImport(Lib, EntryPoint = "getsockname", SetLastError = true)]
    internal static partial int GetSockName(int fd, void* addr, uint* addrlen);

    [LibraryImport(Lib, EntryPoint = "shutdown", SetLastError = true)]
    internal static partial int Shutdown(int fd, int how);

    /// <summary>Adds <paramref name="fd"/> to an epoll set for <paramref name="events"/>, its own number as the data.
    /// Returns 0 or -1 (errno in Marshal.GetLastPInvokeError).</summary>
    internal static int EpollAdd(int epfd, int fd, uint events)
    {
        var ev = new EpollEvent { Events = events, Data = (ulong)fd };
        return EpollCtl(epfd, EpollConstants.EPOLL_CTL_ADD, fd, &ev);
    }

    /// <summary>Removes <paramref name="fd"/> from an epoll set. Returns 0 or -1.</summary>
    internal static int EpollDel(int epfd, int fd) => EpollCtl(epfd, EpollConstants.EPOLL_CTL_DEL, fd, null);

    /// <summary>Reads an eventfd's counter, emptying it (EAGAIN on an empty non-blocking one is no error).</summary>
    internal static void DrainEventFd(int fd)
    {
        ulong value;
        _ = Read(fd, &value, sizeof(ulong));
    }

    /// <summary>Adds one to an eventfd's counter, making it readable.</summary>
    internal static void SignalEventFd(int fd)
    {
        ulong one = 1;
        _ = Write(fd, &one, sizeof(ulong));
    }
}

/// <summary><c>struct epoll_event</c> (packed on x86-64: 12 bytes).</summary>
[StructLayout(LayoutKind.Sequential, Pack = 4)]
internal struct EpollEvent
{
    public uint Events;
    public ulong Data;
}

internal static class EpollConstants
{
    public const int EPOLL_CLOEXEC = 0x80000;
    public const int EPOLL_CTL_ADD = 1;
    public const int EPOLL_CTL_DEL = 2;
    public const uint EPOLLIN = 1;
    public const uint EPOLLET = 1u << 31;
}

/// <summary><c>struct sockaddr_in</c> (16 bytes), with the address and port converted from and to host order.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct SockAddrIn
{
    public ushort Family;
    public ushort PortNetworkOrder;
    public uint AddressNetworkOrder;
    public ulong Zero;

    public static SockAddrIn Create(uint address, ushort port) => new()
    {
        Family = LinuxConstants.AF_INET,
        PortNetworkOrder = System.Buffers.Binary.BinaryPrimitives.ReverseEndianness(port),
        AddressNetworkOrder = System.Buffers.Binary.BinaryPrimitives.ReverseEndianness(address),
    };

    public readonly uint Address => System.Buffers.Binary.BinaryPrimitives.ReverseEndianness(AddressNetworkOrder);

    public readonly ushort Port => System.Buffers.Binary.BinaryPrimitives.ReverseEndianness(PortNetworkOrder);
}
