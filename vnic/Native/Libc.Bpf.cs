using System.Runtime.InteropServices;

namespace Onload.Vnic.Native;

/// <summary>The libc calls the AF_XDP backend adds: recvfrom (to wake the driver's RX), syscall (for bpf(2)), and
/// statfs and mount (to find or mount the bpffs that pins live on).</summary>
internal static unsafe partial class Libc
{
    /// <summary>statfs(2) into <paramref name="buf"/>, a <c>struct statfs</c> (120 bytes on x86-64 and arm64,
    /// f_type, a long, first).</summary>
    [LibraryImport(Lib, EntryPoint = "statfs", SetLastError = true)]
    internal static partial int StatFs(byte* path, void* buf);

    [LibraryImport(Lib, EntryPoint = "mount", SetLastError = true)]
    internal static partial int Mount(byte* source, byte* target, byte* fsType, nuint flags, void* data);

    [LibraryImport(Lib, EntryPoint = "recvfrom", SetLastError = true)]
    internal static partial nint RecvFrom(int fd, void* buf, nuint len, int flags, void* srcAddr, uint* addrlen);

    /// <summary>
    /// syscall(2). Variadic in C; glibc implements it in assembly that only moves argument registers, so the
    /// fixed-argument declaration is safe (see the remarks on <see cref="Libc"/>).
    /// </summary>
    [LibraryImport(Lib, EntryPoint = "syscall", SetLastError = true)]
    private static partial nint Syscall(nint number, nint arg1, void* arg2, nint arg3);

    /// <summary>
    /// bpf(2): glibc has no wrapper. Returns what the kernel returns (a new fd, 0) or -1 with errno set.
    /// The system call number differs by architecture (arch/x86/entry/syscalls/syscall_64.tbl: 321;
    /// include/uapi/asm-generic/unistd.h, used by arm64: 280).
    /// </summary>
    internal static int Bpf(int cmd, void* attr, uint size) => (int)Syscall(SysBpf, cmd, attr, (nint)size);

    private static readonly nint SysBpf = RuntimeInformation.ProcessArchitecture switch
    {
        Architecture.X64 => 321,
        Architecture.Arm64 => 280,
        _ => -1, // the kernel answers ENOSYS
    };
}
