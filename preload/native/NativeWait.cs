using System.Runtime.InteropServices;

namespace Onload.Native;

/// <summary>
/// The libc calls the socket layer sleeps and wakes with: poll, eventfd, timerfd, read, write and close. Through
/// <c>LibraryImport("libc")</c>, which the runtime binds with dlsym on libc's own handle, so none of them passes the
/// preload shim (docs/PRELOAD-NOTES.md).
/// </summary>
internal static unsafe partial class NativeWait
{
    public const short PollIn = 0x001;
    private const int EfdNonblock = 0x800, EfdCloexec = 0x80000;
    private const int TfdNonblock = 0x800, TfdCloexec = 0x80000, TfdTimerAbstime = 1;
    private const int ClockMonotonic = 1;

    public struct PollFd
    {
        public int Fd;
        public short Events;
        public short Revents;
    }

    private struct TimeSpec
    {
        public long Seconds;
        public long Nanoseconds;
    }

    private struct ITimerSpec
    {
        public TimeSpec Interval;
        public TimeSpec Value;
    }

    [LibraryImport("libc", EntryPoint = "poll")]
    public static partial int Poll(PollFd* fds, nuint count, int timeoutMs);

    [LibraryImport("libc", EntryPoint = "eventfd")]
    private static partial int EventFd(uint initial, int flags);

    [LibraryImport("libc", EntryPoint = "timerfd_create")]
    private static partial int TimerFdCreate(int clock, int flags);

    [LibraryImport("libc", EntryPoint = "timerfd_settime")]
    private static partial int TimerFdSetTime(int fd, int flags, ITimerSpec* value, ITimerSpec* old);

    [LibraryImport("libc", EntryPoint = "read")]
    private static partial nint Read(int fd, void* buffer, nuint count);

    [LibraryImport("libc", EntryPoint = "write")]
    private static partial nint Write(int fd, void* buffer, nuint count);

    [LibraryImport("libc", EntryPoint = "close")]
    public static partial int Close(int fd);

    [LibraryImport("libc", EntryPoint = "getpid")]
    public static partial int GetPid();

    public static int NewEventFd() => EventFd(0, EfdNonblock | EfdCloexec);

    /// <summary>A non-blocking timerfd on CLOCK_MONOTONIC, the clock the stack's timers run on.</summary>
    public static int NewTimerFd() => TimerFdCreate(ClockMonotonic, TfdNonblock | TfdCloexec);

    /// <summary>Arms <paramref name="fd"/> to fire at <paramref name="atNs"/> (CLOCK_MONOTONIC nanoseconds; a time
    /// already past fires at once), or disarms it for <see cref="long.MaxValue"/>.</summary>
    public static void ArmTimer(int fd, long atNs)
    {
        var spec = default(ITimerSpec);
        if (atNs != long.MaxValue)
        {
            atNs = Math.Max(atNs, 1); // zero would disarm
            spec.Value = new TimeSpec { Seconds = atNs / 1_000_000_000, Nanoseconds = atNs % 1_000_000_000 };
        }
        _ = TimerFdSetTime(fd, TfdTimerAbstime, &spec, null);
    }

    /// <summary>Adds one to an eventfd's counter, making it readable.</summary>
    public static void Signal(int fd)
    {
        ulong one = 1;
        _ = Write(fd, &one, sizeof(ulong));
    }

    /// <summary>Empties an eventfd or a fired timerfd (EAGAIN on an empty one is no error).</summary>
    public static void Drain(int fd)
    {
        ulong value;
        _ = Read(fd, &value, sizeof(ulong));
    }
}
