using Onload.Vnic.Native;

namespace Onload.Vnic;

/// <summary>
/// An eventfd another thread rings to wake a thread asleep in <see cref="VnicWait.Wait(IVnic, WakeEvent, int)"/>:
/// how application threads reach a stack thread that sleeps on its VNIC.
/// </summary>
public sealed class WakeEvent : IDisposable
{
    private int _fd;

    public WakeEvent()
    {
        _fd = Libc.EventFd(0, UnixIpcConstants.EFD_NONBLOCK | UnixIpcConstants.EFD_CLOEXEC);
        if (_fd < 0)
            throw new IOException($"eventfd: {Errno.Text(System.Runtime.InteropServices.Marshal.GetLastPInvokeError())}");
    }

    public int Fd => _fd;

    /// <summary>Makes the eventfd readable (a write of 1: no allocation, one system call).</summary>
    public void Set() => Libc.SignalEventFd(_fd);

    /// <summary>Empties the counter, so the next wait sleeps until the next <see cref="Set"/>.</summary>
    public void Reset() => Libc.DrainEventFd(_fd);

    public void Dispose()
    {
        int fd = Interlocked.Exchange(ref _fd, -1);
        if (fd >= 0)
            _ = Libc.Close(fd);
    }
}
