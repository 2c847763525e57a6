using System.Runtime.InteropServices;

namespace Onload.Driverlink.Native;

/// <summary>
/// Every libc call of the driverlink client, as source-generated blittable P/Invoke (NativeAOT-clean).
/// </summary>
/// <remarks>
/// vnic/Native has most of these, but as internals of Onload.Vnic; sharing them would mean InternalsVisibleTo
/// across projects, so this small binding stands apart (same rules: LibraryImport, SetLastError, LP64 layouts).
/// </remarks>
internal static unsafe partial class Libc
{
    private const string Lib = "libc";

    [LibraryImport(Lib, EntryPoint = "socket", SetLastError = true)]
    internal static partial int Socket(int domain, int type, int protocol);

    [LibraryImport(Lib, EntryPoint = "socketpair", SetLastError = true)]
    internal static partial int SocketPair(int domain, int type, int protocol, int* sv);

    [LibraryImport(Lib, EntryPoint = "bind", SetLastError = true)]
    internal static partial int Bind(int fd, void* addr, uint addrlen);

    [LibraryImport(Lib, EntryPoint = "listen", SetLastError = true)]
    internal static partial int Listen(int fd, int backlog);

    [LibraryImport(Lib, EntryPoint = "accept4", SetLastError = true)]
    internal static partial int Accept4(int fd, void* addr, uint* addrlen, int flags);

    [LibraryImport(Lib, EntryPoint = "connect", SetLastError = true)]
    internal static partial int Connect(int fd, void* addr, uint addrlen);

    [LibraryImport(Lib, EntryPoint = "sendmsg", SetLastError = true)]
    internal static partial nint SendMsg(int fd, MsgHdr* msg, int flags);

    [LibraryImport(Lib, EntryPoint = "recvmsg", SetLastError = true)]
    internal static partial nint RecvMsg(int fd, MsgHdr* msg, int flags);

    [LibraryImport(Lib, EntryPoint = "getsockopt", SetLastError = true)]
    internal static partial int GetSockOpt(int fd, int level, int optname, void* optval, uint* optlen);

    [LibraryImport(Lib, EntryPoint = "close", SetLastError = true)]
    internal static partial int Close(int fd);

    internal static int LastErrno => Marshal.GetLastPInvokeError();

    // include/linux/socket.h, include/linux/net.h, asm-generic/errno*.h (x86-64 and arm64 share these values)
    internal const int AF_UNIX = 1;
    internal const int SOCK_SEQPACKET = 5;
    internal const int SOCK_CLOEXEC = 0x80000;
    internal const int SOL_SOCKET = 1;
    internal const int SCM_RIGHTS = 1;
    internal const int SO_PEERCRED = 17;
    internal const int MSG_TRUNC = 0x20;
    internal const int MSG_CTRUNC = 0x8;
    internal const int MSG_DONTWAIT = 0x40;
    internal const int MSG_NOSIGNAL = 0x4000;
    internal const int MSG_CMSG_CLOEXEC = 0x40000000;
    internal const int EINTR = 4;
    internal const int EAGAIN = 11;
    internal const int SunPathLength = 108;
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
    public fixed byte Path[Libc.SunPathLength];
}
