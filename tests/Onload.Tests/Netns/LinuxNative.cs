using System.Runtime.InteropServices;

namespace Onload.Tests.Netns;

/// <summary>The libc calls the namespace helpers need that .NET does not wrap.</summary>
internal static unsafe partial class LinuxNative
{
    /// <summary>CLONE_NEWNET from uapi/linux/sched.h: setns to a network namespace.</summary>
    public const int CLONE_NEWNET = 0x40000000;
    public const int O_RDONLY = 0;
    public const int O_CLOEXEC = 0x80000;
    public const short POLLIN = 1;

    [LibraryImport("libc", EntryPoint = "setns", SetLastError = true)]
    public static partial int SetNs(int fd, int nstype);

    [LibraryImport("libc", EntryPoint = "open", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int Open(string path, int flags);

    [LibraryImport("libc", EntryPoint = "close", SetLastError = true)]
    public static partial int Close(int fd);

    [LibraryImport("libc", EntryPoint = "geteuid")]
    public static partial uint GetEuid();

    [LibraryImport("libc", EntryPoint = "poll", SetLastError = true)]
    public static partial int Poll(PollFd* fds, nuint nfds, int timeoutMs);

    [StructLayout(LayoutKind.Sequential)]
    public struct PollFd
    {
        public int Fd;
        public short Events;
        public short Revents;
    }

    /// <summary>True when <paramref name="fd"/> polls readable within <paramref name="timeoutMs"/>.</summary>
    public static bool PollReadable(int fd, int timeoutMs)
    {
        var p = new PollFd { Fd = fd, Events = POLLIN };
        int r = Poll(&p, 1, timeoutMs);
        return r > 0 && (p.Revents & POLLIN) != 0;
    }

    public static string ErrnoText(int errno) => $"{Marshal.GetPInvokeErrorMessage(errno)} (errno {errno})";
}
