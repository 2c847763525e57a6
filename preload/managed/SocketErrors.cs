using System.Net.Sockets;
using Onload.Stack;

namespace Onload.Sockets;

/// <summary>
/// Linux's errno, as the stack's calls return it (negated), to the <see cref="SocketError"/> a .NET program sees
/// from a kernel socket with the same errno (System.Net.Sockets' SocketErrorPal does the same mapping for kernel
/// sockets on Linux), so code catching SocketException behaves the same over both transports.
/// </summary>
internal static class SocketErrors
{
    public static SocketError FromErrno(int negatedErrno) => (Errno)(-negatedErrno) switch
    {
        Errno.ECONNREFUSED => SocketError.ConnectionRefused,
        Errno.ECONNRESET => SocketError.ConnectionReset,
        Errno.ETIMEDOUT => SocketError.TimedOut,
        Errno.EHOSTUNREACH => SocketError.HostUnreachable,
        Errno.ENETUNREACH => SocketError.NetworkUnreachable,
        Errno.ENETDOWN => SocketError.NetworkDown,
        Errno.EHOSTDOWN => SocketError.HostDown,
        Errno.EADDRINUSE => SocketError.AddressAlreadyInUse,
        Errno.EADDRNOTAVAIL => SocketError.AddressNotAvailable,
        Errno.EAFNOSUPPORT => SocketError.AddressFamilyNotSupported,
        Errno.EACCES => SocketError.AccessDenied,
        Errno.EMSGSIZE => SocketError.MessageSize,
        Errno.ENOBUFS or Errno.ENOMEM => SocketError.NoBufferSpaceAvailable,
        Errno.EMFILE => SocketError.TooManyOpenSockets,
        Errno.EINVAL => SocketError.InvalidArgument,
        Errno.ENOTCONN => SocketError.NotConnected,
        Errno.EISCONN => SocketError.IsConnected,
        Errno.EPIPE => SocketError.Shutdown,
        Errno.EAGAIN => SocketError.WouldBlock,
        Errno.EINPROGRESS => SocketError.InProgress,
        Errno.EALREADY => SocketError.AlreadyInProgress,
        Errno.EOPNOTSUPP => SocketError.OperationNotSupported,
        Errno.EDESTADDRREQ => SocketError.DestinationAddressRequired,
        _ => SocketError.SocketError,
    };

    public static SocketException Exception(int negatedErrno) => new((int)FromErrno(negatedErrno));
}
