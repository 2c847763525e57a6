using System.Runtime.InteropServices;

namespace Onload.Vnic.Native;

/// <summary>
/// The few libc calls the VNIC backends make, as source-generated P/Invoke (<see cref="LibraryImportAttribute"/>)
/// with blittable signatures: no runtime marshalling and no reflection, so the assembly stays NativeAOT-clean.
/// </summary>
/// <remarks>
/// Every call sets <c>SetLastError</c>; read errno right after a failing call with <see cref="Errno.Last"/>.
/// Signatures follow the glibc prototypes on LP64 Linux (long and size_t are 64 bits: <see cref="nint"/> and
/// <see cref="nuint"/>). ioctl and open are variadic in C; on x86-64 and arm64 Linux a variadic callee reads its
/// integer and pointer arguments from the same registers as a fixed one, so declaring them with fixed arguments is safe.
/// </remarks>
internal static unsafe partial class Libc
{
    // "libc" resolves to the C library through the runtime's probing (libc.so.6 on glibc); see
    // https://learn.microsoft.com/dotnet/standard/native-interop/native-library-loading
    private const string Lib = "libc";

    [LibraryImport(Lib, EntryPoint = "socket", SetLastError = true)]
    internal static partial int Socket(int domain, int type, int protocol);

    [LibraryImport(Lib, EntryPoint = "bind", SetLastError = true)]
    internal static partial int Bind(int fd, void* addr, uint addrlen);

    [LibraryImport(Lib, EntryPoint = "setsockopt", SetLastError = true)]
    internal static partial int SetSockOpt(int fd, int level, int optname, void* optval, uint optlen);

    [LibraryImport(Lib, EntryPoint = "getsockopt", SetLastError = true)]
    internal static partial int GetSockOpt(int fd, int level, int optname, void* optval, uint* optlen);

    [LibraryImport(Lib, EntryPoint = "mmap", SetLastError = true)]
    internal static partial void* Mmap(void* addr, nuint length, int prot, int flags, int fd, nint offset);

    [LibraryImport(Lib, EntryPoint = "munmap", SetLastError = true)]
    internal static partial int Munmap(void* addr, nuint length);

    [LibraryImport(Lib, EntryPoint = "madvise", SetLastError = true)]
    internal static partial int Madvise(void* addr, nuint length, int advice);

    [LibraryImport(Lib, EntryPoint = "mincore", SetLastError = true)]
    internal static partial int Mincore(void* addr, nuint length, byte* vec);

    [LibraryImport(Lib, EntryPoint = "sendto", SetLastError = true)]
    internal static partial nint SendTo(int fd, void* buf, nuint len, int flags, void* destAddr, uint addrlen);

    [LibraryImport(Lib, EntryPoint = "poll", SetLastError = true)]
    internal static partial int Poll(PollFd* fds, nuint nfds, int timeoutMs);

    [LibraryImport(Lib, EntryPoint = "ioctl", SetLastError = true)]
    internal static partial int Ioctl(int fd, nuint request, void* arg);

    [LibraryImport(Lib, EntryPoint = "open", SetLastError = true)]
    internal static partial int Open(byte* path, int flags, int mode);

    [LibraryImport(Lib, EntryPoint = "read", SetLastError = true)]
    internal static partial nint Read(int fd, void* buf, nuint count);

    [LibraryImport(Lib, EntryPoint = "write", SetLastError = true)]
    internal static partial nint Write(int fd, void* buf, nuint count);

    [LibraryImport(Lib, EntryPoint = "close", SetLastError = true)]
    internal static partial int Close(int fd);

    /// <summary>Returns 0 and sets errno (ENODEV) when there is no such interface.</summary>
    [LibraryImport(Lib, EntryPoint = "if_nametoindex", SetLastError = true)]
    internal static partial uint IfNameToIndex(byte* ifname);

    [LibraryImport(Lib, EntryPoint = "getpagesize")]
    internal static partial int GetPageSize();

    /// <summary>Copies <paramref name="s"/> as a NUL-terminated ASCII string into <paramref name="dest"/>.</summary>
    /// <remarks>For paths and interface names at open time; the caller sizes <paramref name="dest"/>.</remarks>
    internal static void CopyCString(string s, Span<byte> dest)
    {
        if (s.Length >= dest.Length)
            throw new ArgumentException($"'{s}' is longer than {dest.Length - 1} characters", nameof(s));
        dest.Clear();
        for (int i = 0; i < s.Length; i++)
        {
            char c = s[i];
            if (c is '\0' or > '\x7e')
                throw new ArgumentException($"'{s}' has a character that is not printable ASCII", nameof(s));
            dest[i] = (byte)c;
        }
    }
}

/// <summary><c>struct pollfd</c> from poll(2).</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct PollFd
{
    public int Fd;
    public short Events;
    public short Revents;
}
