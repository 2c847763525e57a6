using System.Collections;
using System.Runtime.InteropServices;
using System.Text;

namespace Onload.Driverlink;

/// <summary>
/// Starts <c>onload-driverd</c> detached, with posix_spawn(3) rather than <see cref="System.Diagnostics.Process"/>.
/// </summary>
/// <remarks>
/// The client runs inside other people's programs (libonload_stack.so under onload-run). <c>Process</c> would install
/// the runtime's SIGCHLD, SIGINT, SIGQUIT and SIGCONT handlers in that program, and its WaitForExit depends on
/// SIGCHLD reaching the runtime, which the preload shim blocks while the stack starts (so the program's signals never
/// land on the runtime's threads): it waited for ever. Here the child is reaped with waitpid, and it starts with
/// an empty signal mask and default dispositions, whatever the program had.
/// </remarks>
internal static unsafe partial class DaemonLauncher
{
    private const short POSIX_SPAWN_SETSIGDEF = 0x04;
    private const short POSIX_SPAWN_SETSIGMASK = 0x08;
    private const int EINTR = 4;
    private const int SigsetWords = 16;     // sigset_t: 1024 bits
    private const int SpawnAttrBytes = 512; // posix_spawnattr_t is 336 bytes on glibc x86-64 and aarch64

    /// <summary>
    /// Runs <c>/bin/sh -c SCRIPT ARG0 ARGS...</c> without the interposer in its environment (the daemon's own port
    /// sockets must not go to a stack of its own) and waits for the shell, which backgrounds the daemon.
    /// Returns the shell's wait status; throws <see cref="DriverlinkException"/> when it cannot be started.
    /// </summary>
    public static int RunShell(string script, params string[] args)
    {
        string[] argv = ["/bin/sh", "-c", script, .. args];
        var env = new List<string>();
        foreach (DictionaryEntry e in Environment.GetEnvironmentVariables())
            if ((string)e.Key != "LD_PRELOAD")
                env.Add($"{e.Key}={e.Value}");

        var argvBlock = CStrings(argv, out var argvHandles);
        var envBlock = CStrings([.. env], out var envHandles);
        try
        {
            byte* attr = stackalloc byte[SpawnAttrBytes];
            ulong* empty = stackalloc ulong[SigsetWords];
            ulong* all = stackalloc ulong[SigsetWords];
            new Span<ulong>(empty, SigsetWords).Clear();
            new Span<ulong>(all, SigsetWords).Fill(ulong.MaxValue);
            if (SpawnAttrInit(attr) != 0)
                throw new DriverlinkException("driverlink: posix_spawnattr_init failed");
            try
            {
                SpawnAttrSetFlags(attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
                SpawnAttrSetSigMask(attr, empty);
                SpawnAttrSetSigDefault(attr, all);
                int pid;
                fixed (byte* path = "/bin/sh\0"u8)
                {
                    int rc = Spawn(&pid, path, null, attr, argvBlock, envBlock);
                    if (rc != 0)
                        throw new DriverlinkException($"driverlink: could not start /bin/sh to start the daemon: {Marshal.GetPInvokeErrorMessage(rc)}", rc);
                }
                int status;
                while (WaitPid(pid, &status, 0) < 0)
                    if (Marshal.GetLastPInvokeError() != EINTR)
                        throw new DriverlinkException("driverlink: lost the shell that starts the daemon");
                return status;
            }
            finally
            {
                SpawnAttrDestroy(attr);
            }
        }
        finally
        {
            Free(argvBlock, argvHandles);
            Free(envBlock, envHandles);
        }
    }

    /// <summary>A NULL-terminated array of NUL-terminated UTF-8 strings in unmanaged memory.</summary>
    private static byte** CStrings(string[] strings, out IntPtr[] owned)
    {
        owned = new IntPtr[strings.Length];
        var block = (byte**)NativeMemory.Alloc((nuint)(strings.Length + 1), (nuint)sizeof(byte*));
        for (int i = 0; i < strings.Length; i++)
        {
            byte[] bytes = Encoding.UTF8.GetBytes(strings[i] + "\0");
            owned[i] = (IntPtr)NativeMemory.Alloc((nuint)bytes.Length);
            bytes.CopyTo(new Span<byte>((void*)owned[i], bytes.Length));
            block[i] = (byte*)owned[i];
        }
        block[strings.Length] = null;
        return block;
    }

    private static void Free(byte** block, IntPtr[] owned)
    {
        foreach (var p in owned)
            NativeMemory.Free((void*)p);
        NativeMemory.Free(block);
    }

    [LibraryImport("libc", EntryPoint = "posix_spawn")]
    private static partial int Spawn(int* pid, byte* path, void* fileActions, byte* attr, byte** argv, byte** envp);

    [LibraryImport("libc", EntryPoint = "posix_spawnattr_init")]
    private static partial int SpawnAttrInit(byte* attr);

    [LibraryImport("libc", EntryPoint = "posix_spawnattr_destroy")]
    private static partial int SpawnAttrDestroy(byte* attr);

    [LibraryImport("libc", EntryPoint = "posix_spawnattr_setflags")]
    private static partial int SpawnAttrSetFlags(byte* attr, short flags);

    [LibraryImport("libc", EntryPoint = "posix_spawnattr_setsigmask")]
    private static partial int SpawnAttrSetSigMask(byte* attr, ulong* mask);

    [LibraryImport("libc", EntryPoint = "posix_spawnattr_setsigdefault")]
    private static partial int SpawnAttrSetSigDefault(byte* attr, ulong* set);

    [LibraryImport("libc", EntryPoint = "waitpid", SetLastError = true)]
    private static partial int WaitPid(int pid, int* status, int options);
}
