using System.Runtime.InteropServices;

namespace Onload.Vnic.Native;

/// <summary>The errno values the backends act on (asm-generic/errno-base.h and asm-generic/errno.h).</summary>
internal static class Errno
{
    public const int EPERM = 1;
    public const int ENOENT = 2;
    public const int EINTR = 4;
    public const int ENXIO = 6;
    public const int E2BIG = 7;
    public const int EBADF = 9;
    public const int EAGAIN = 11;
    public const int ENOMEM = 12;
    public const int EACCES = 13;
    public const int EFAULT = 14;
    public const int EBUSY = 16;
    public const int EEXIST = 17;
    public const int ENODEV = 19;
    public const int EINVAL = 22;
    public const int ENOSPC = 28;
    public const int EPIPE = 32;
    public const int EMSGSIZE = 90;
    public const int EOPNOTSUPP = 95;
    public const int EAFNOSUPPORT = 97;
    public const int EADDRINUSE = 98;
    public const int EADDRNOTAVAIL = 99;
    public const int ENETDOWN = 100;
    public const int ENOBUFS = 105;

    /// <summary>errno of the last P/Invoke made on this thread with <c>SetLastError = true</c>.</summary>
    public static int Last => Marshal.GetLastPInvokeError();

    /// <summary>strerror(3)'s text, e.g. "No such device".</summary>
    public static string Text(int errno) => Marshal.GetPInvokeErrorMessage(errno);

    /// <summary>"Operation not permitted (errno 1)"-style text for exception messages.</summary>
    public static string Describe(int errno) => $"{Text(errno)} (errno {errno})";
}
