using System.Runtime.InteropServices;

namespace Onload.Vnic;

/// <summary>Sleeping until a VNIC has frames: the slow half of spin-then-sleep.</summary>
public static partial class VnicWait
{
    [StructLayout(LayoutKind.Sequential)]
    private struct PollFd
    {
        public int Fd;
        public short Events;
        public short Revents;
    }

    private const short PollIn = 0x001;

    [LibraryImport("libc", EntryPoint = "poll", SetLastError = true)]
    private static unsafe partial int Poll(PollFd* fds, nuint count, int timeoutMs);

    /// <summary>Blocks until the VNIC's wait handle is readable or <paramref name="timeoutMs"/> passes
    /// (-1 = no limit). Returns true if it became readable, or at once if <see cref="IVnic.PrepareToSleep"/> says
    /// frames are waiting. A VNIC without a handle just sleeps.</summary>
    public static unsafe bool Wait(IVnic vnic, int timeoutMs)
    {
        ArgumentNullException.ThrowIfNull(vnic);
        if (!vnic.PrepareToSleep())
            return true;
        var fd = new PollFd { Fd = vnic.WaitHandle, Events = PollIn };
        if (fd.Fd < 0)
        {
            Thread.Sleep(Math.Max(0, timeoutMs));
            return false;
        }
        int rc = Poll(&fd, 1, timeoutMs);
        return rc > 0;
    }

    /// <summary>
    /// As <see cref="Wait(IVnic, int)"/>, but also wakes when <paramref name="wake"/> is set (by another thread).
    /// Returns true if either became readable. The caller resets <paramref name="wake"/> when it has looked at what
    /// the setter left for it.
    /// </summary>
    public static unsafe bool Wait(IVnic vnic, WakeEvent wake, int timeoutMs)
    {
        ArgumentNullException.ThrowIfNull(vnic);
        ArgumentNullException.ThrowIfNull(wake);
        if (!vnic.PrepareToSleep())
            return true;
        PollFd* fds = stackalloc PollFd[2];
        fds[0] = new PollFd { Fd = wake.Fd, Events = PollIn };
        fds[1] = new PollFd { Fd = vnic.WaitHandle, Events = PollIn };
        // A VNIC without a handle (the simulated link) is polled by the timeout alone.
        int rc = Poll(fds, fds[1].Fd < 0 ? 1u : 2u, timeoutMs);
        return rc > 0;
    }
}
