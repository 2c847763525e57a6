using Onload.Vnic.Native;

namespace Onload.Driverlink;

/// <summary>The peer process's identity as the kernel recorded it at connect (SO_PEERCRED), which the peer cannot forge.</summary>
public readonly record struct PeerCredentials(int Pid, uint Uid, uint Gid)
{
    /// <summary>The peer runs as root or as this process's effective user: the only peers a process shows its own
    /// state to (an abstract socket has no file permissions to do it).</summary>
    public bool IsRootOrSameUser => Uid == 0 || Uid == Libc.GetEuid();
}

/// <summary>A socket call that failed while setting up a connection.</summary>
public sealed class DriverlinkSocketException : IOException
{
    public DriverlinkSocketException(string operation, int errno)
        : base($"driverlink: {operation} failed: {System.Runtime.InteropServices.Marshal.GetPInvokeErrorMessage(errno)} (errno {errno})") =>
        Errno = errno;

    public int Errno { get; }
}
