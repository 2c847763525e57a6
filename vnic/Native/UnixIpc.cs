using System.Runtime.InteropServices;

namespace Onload.Vnic.Native;

// The libc calls of the shared-memory backend (memfd, eventfd, Unix sockets with SCM_RIGHTS), in a file of their
// own so that other backends can add theirs to Libc at the same time. Same rules as Libc.cs: LibraryImport,
// blittable signatures, SetLastError on every call that can fail.
internal static unsafe partial class Libc
{
    [LibraryImport(Lib, EntryPoint = "memfd_create", SetLastError = true)]
    internal static partial int MemfdCreate(byte* name, uint flags);

    [LibraryImport(Lib, EntryPoint = "ftruncate", SetLastError = true)]
    internal static partial int Ftruncate(int fd, nint length);

    [LibraryImport(Lib, EntryPoint = "lseek", SetLastError = true)]
    internal static partial nint Lseek(int fd, nint offset, int whence);

    /// <summary>fcntl with an int argument (variadic in C; see the note on Libc about fixed-argument declarations).</summary>
    [LibraryImport(Lib, EntryPoint = "fcntl", SetLastError = true)]
    internal static partial int Fcntl(int fd, int cmd, int arg);

    [LibraryImport(Lib, EntryPoint = "eventfd", SetLastError = true)]
    internal static partial int EventFd(uint initval, int flags);

    [LibraryImport(Lib, EntryPoint = "socketpair", SetLastError = true)]
    internal static partial int SocketPair(int domain, int type, int protocol, int* sv);

    [LibraryImport(Lib, EntryPoint = "connect", SetLastError = true)]
    internal static partial int Connect(int fd, void* addr, uint addrlen);

    [LibraryImport(Lib, EntryPoint = "listen", SetLastError = true)]
    internal static partial int Listen(int fd, int backlog);

    [LibraryImport(Lib, EntryPoint = "accept4", SetLastError = true)]
    internal static partial int Accept4(int fd, void* addr, uint* addrlen, int flags);

    [LibraryImport(Lib, EntryPoint = "sendmsg", SetLastError = true)]
    internal static partial nint SendMsg(int fd, MsgHdr* msg, int flags);

    [LibraryImport(Lib, EntryPoint = "recvmsg", SetLastError = true)]
    internal static partial nint RecvMsg(int fd, MsgHdr* msg, int flags);

    [LibraryImport(Lib, EntryPoint = "geteuid")]
    internal static partial uint GetEuid();
}

/// <summary>Constants of the calls above (x86-64 and arm64 share these values).</summary>
internal static class UnixIpcConstants
{
    // include/linux/socket.h, include/linux/net.h
    public const int AF_UNIX = 1;
    public const int SOCK_SEQPACKET = 5;
    public const int SOL_SOCKET = 1;
    public const int SCM_RIGHTS = 1;
    public const int SO_PEERCRED = 17;
    public const int MSG_DONTWAIT = 0x40;
    public const int MSG_NOSIGNAL = 0x4000;
    public const int MSG_CMSG_CLOEXEC = 0x40000000;
    public const int MSG_CTRUNC = 0x8;
    public const int MSG_TRUNC = 0x20;

    // uapi/linux/memfd.h, uapi/linux/fcntl.h
    public const uint MFD_CLOEXEC = 0x1;
    public const uint MFD_ALLOW_SEALING = 0x2;
    public const int F_ADD_SEALS = 1033;
    public const int F_GET_SEALS = 1034;
    public const int F_SEAL_SEAL = 0x1;
    public const int F_SEAL_SHRINK = 0x2;
    public const int F_SEAL_GROW = 0x4;
    public const int SEEK_END = 2;

    // uapi/linux/eventfd.h (EFD_NONBLOCK = O_NONBLOCK, EFD_CLOEXEC = O_CLOEXEC)
    public const int EFD_NONBLOCK = 0x800;
    public const int EFD_CLOEXEC = 0x80000;

    // asm-generic/poll.h, uapi/linux/eventpoll.h
    public const short POLLIN = 0x1;
    public const short POLLOUT = 0x4;
    public const short POLLERR = 0x8;
    public const short POLLHUP = 0x10;
    public const short POLLNVAL = 0x20;
    public const short POLLRDHUP = 0x2000;

    // asm-generic/errno.h
    public const int EADDRINUSE = 98;
    public const int ECONNRESET = 104;
    public const int ETIMEDOUT = 110;
    public const int ECONNREFUSED = 111;
    public const int EPROTO = 71;

    /// <summary>sizeof(sun_path) in struct sockaddr_un.</summary>
    public const int SunPathLength = 108;
}

/// <summary><c>struct msghdr</c> (56 bytes on LP64).</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct MsgHdr
{
    public void* Name;
    public uint NameLength;
    public IoVec* Iov;
    public nuint IovLength;
    public void* Control;
    public nuint ControlLength;
    public int Flags;
}

/// <summary><c>struct iovec</c>.</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct IoVec
{
    public void* Base;
    public nuint Length;
}

/// <summary><c>struct cmsghdr</c> (16 bytes on LP64; the data follows, aligned to 8).</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct CmsgHdr
{
    public nuint Length;
    public int Level;
    public int Type;

    public const int Size = 16;

    /// <summary>CMSG_LEN(n).</summary>
    public static int Len(int dataBytes) => Size + dataBytes;

    /// <summary>CMSG_SPACE(n).</summary>
    public static int Space(int dataBytes) => Size + ((dataBytes + 7) & ~7);
}

/// <summary><c>struct ucred</c> for SO_PEERCRED.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct UCred
{
    public int Pid;
    public uint Uid;
    public uint Gid;
}

/// <summary><c>struct sockaddr_un</c> (110 bytes).</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct SockaddrUn
{
    public ushort Family;
    public fixed byte Path[UnixIpcConstants.SunPathLength];

    /// <summary>
    /// An abstract address (unix(7)): sun_path starts with a NUL and the name is the bytes after it, without a
    /// terminating NUL; the address length counts exactly those bytes. Returns that length.
    /// </summary>
    public static uint Abstract(ReadOnlySpan<byte> name, out SockaddrUn addr)
    {
        if (name.Length > UnixIpcConstants.SunPathLength - 1)
            throw new ArgumentException($"an abstract socket name has at most {UnixIpcConstants.SunPathLength - 1} bytes", nameof(name));
        addr = default;
        addr.Family = UnixIpcConstants.AF_UNIX;
        fixed (byte* p = addr.Path)
            name.CopyTo(new Span<byte>(p + 1, UnixIpcConstants.SunPathLength - 1));
        return (uint)(sizeof(ushort) + 1 + name.Length);
    }
}
