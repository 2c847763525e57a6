using System.Text;
using Onload.Vnic.Native;

namespace Onload.Driverlink;

/// <summary>
/// One end of a driverlink connection: an AF_UNIX SOCK_SEQPACKET socket, so that one send is one message with
/// its boundaries kept, and descriptors (ring memfds, the AF_XDP socket, eventfds) ride along as SCM_RIGHTS.
/// The daemon listens on an abstract name, which Linux scopes to the network namespace: one daemon per namespace.
/// </summary>
/// <remarks>
/// Sending and receiving allocate nothing: the message, the iovec and the control buffer live on the stack.
/// Setup failures throw <see cref="DriverlinkSocketException"/>; send and receive report errno and never throw
/// for what the peer did.
/// </remarks>
public sealed unsafe class DriverlinkSocket : IDisposable
{
    /// <summary>The daemon's abstract socket name in every namespace.</summary>
    public const string DefaultName = "onload-driverd";
    /// <summary>The most descriptors one message carries.</summary>
    public const int MaxDescriptors = 16;

    private int _fd;

    private DriverlinkSocket(int fd) => _fd = fd;

    /// <summary>The socket's descriptor, for poll or epoll.</summary>
    public int Fd => _fd >= 0 ? _fd : throw new ObjectDisposedException(nameof(DriverlinkSocket));

    /// <summary>A listening socket bound to the abstract <paramref name="name"/> (unix(7)).</summary>
    public static DriverlinkSocket Listen(string name = DefaultName, int backlog = 64)
    {
        var s = new DriverlinkSocket(NewSocket());
        try
        {
            uint length = AbstractAddress(name, out var addr);
            if (Libc.Bind(s._fd, &addr, length) != 0)
                throw new DriverlinkSocketException($"bind to @{name}", Errno.Last);
            if (Libc.Listen(s._fd, backlog) != 0)
                throw new DriverlinkSocketException("listen", Errno.Last);
            return s;
        }
        catch
        {
            s.Dispose();
            throw;
        }
    }

    /// <summary>Connects to the abstract <paramref name="name"/>; ECONNREFUSED (in the exception) means no daemon there.</summary>
    public static DriverlinkSocket Connect(string name = DefaultName) => Connect(name, timeoutMs: -1);

    /// <summary>
    /// Connects to the abstract <paramref name="name"/>, waiting at most <paramref name="timeoutMs"/> (-1: no limit)
    /// for room in its listen backlog: a blocking connect waits as long as the listener does not accept, which is
    /// forever when its process is stopped. EAGAIN (in the exception) when the time ran out. With a limit the socket
    /// is non-blocking: pass dontWait to Send and Receive, and wait with <see cref="WaitReady"/>.
    /// </summary>
    public static DriverlinkSocket Connect(string name, int timeoutMs)
    {
        var s = new DriverlinkSocket(NewSocket(timeoutMs >= 0 ? LinuxConstants.SOCK_NONBLOCK : 0));
        try
        {
            uint length = AbstractAddress(name, out var addr);
            long deadline = Environment.TickCount64 + timeoutMs;
            while (Libc.Connect(s._fd, &addr, length) != 0)
            {
                int errno = Errno.Last;
                // A full backlog gives a non-blocking AF_UNIX connect EAGAIN (not EINPROGRESS), and nothing to poll
                // for: try again shortly.
                if (errno == Errno.EAGAIN && Environment.TickCount64 < deadline)
                    Thread.Sleep(10);
                else if (errno != Errno.EINTR)
                    throw new DriverlinkSocketException($"connect to @{name}", errno);
            }
            return s;
        }
        catch
        {
            s.Dispose();
            throw;
        }
    }

    /// <summary>Takes the next connection from a listening socket (blocking).</summary>
    public DriverlinkSocket Accept()
    {
        int fd;
        do
            fd = Libc.Accept4(Fd, null, null, LinuxConstants.SOCK_CLOEXEC);
        while (fd < 0 && Errno.Last == Errno.EINTR);
        if (fd < 0)
            throw new DriverlinkSocketException("accept", Errno.Last);
        return new DriverlinkSocket(fd);
    }

    /// <summary>Two connected ends, as socketpair(2) makes them: for tests and for a daemon's helper processes.</summary>
    public static (DriverlinkSocket, DriverlinkSocket) CreatePair()
    {
        int* sv = stackalloc int[2];
        if (Libc.SocketPair(UnixIpcConstants.AF_UNIX, UnixIpcConstants.SOCK_SEQPACKET | LinuxConstants.SOCK_CLOEXEC, 0, sv) != 0)
            throw new DriverlinkSocketException("socketpair", Errno.Last);
        return (new DriverlinkSocket(sv[0]), new DriverlinkSocket(sv[1]));
    }

    /// <summary>The connected peer's pid, uid and gid (SO_PEERCRED), as recorded when it connected.</summary>
    public PeerCredentials PeerCredentials()
    {
        UCred cred;
        uint length = (uint)sizeof(UCred);
        if (Libc.GetSockOpt(Fd, UnixIpcConstants.SOL_SOCKET, UnixIpcConstants.SO_PEERCRED, &cred, &length) != 0)
            throw new DriverlinkSocketException("getsockopt(SO_PEERCRED)", Errno.Last);
        return new PeerCredentials(cred.Pid, cred.Uid, cred.Gid);
    }

    /// <summary>
    /// Waits up to <paramref name="timeoutMs"/> (-1: no limit) until a receive (or, with <paramref name="writable"/>,
    /// a send) would not block; false when the time ran out. An error or a hang-up counts as ready: the call that
    /// follows reports it. For a caller that must not be held up by a peer that neither reads nor writes.
    /// </summary>
    public bool WaitReady(bool writable, int timeoutMs)
    {
        var p = new PollFd { Fd = Fd, Events = writable ? UnixIpcConstants.POLLOUT : UnixIpcConstants.POLLIN };
        int rc;
        do
            rc = Libc.Poll(&p, 1, timeoutMs);
        while (rc < 0 && Errno.Last == Errno.EINTR);
        return rc > 0;
    }

    /// <summary>
    /// Sends one message with <paramref name="descriptors"/> attached (the kernel duplicates them into the
    /// receiver; the caller keeps its own). Returns 0, or the errno (EPIPE when the peer has gone, EMSGSIZE, ...).
    /// With <paramref name="dontWait"/>, a full socket buffer (a peer that does not read) is EAGAIN, not a wait.
    /// </summary>
    public int Send(ReadOnlySpan<byte> message, ReadOnlySpan<int> descriptors = default, bool dontWait = false)
    {
        if (descriptors.Length > MaxDescriptors)
            throw new ArgumentException($"at most {MaxDescriptors} descriptors per message", nameof(descriptors));
        const int controlBytes = CmsgHdr.Size + MaxDescriptors * sizeof(int);
        ulong* control = stackalloc ulong[controlBytes / sizeof(ulong)]; // ulong: cmsghdr is 8-aligned
        fixed (byte* p = message)
        {
            var iov = new IoVec { Base = p, Length = (nuint)message.Length };
            var header = new MsgHdr { Iov = &iov, IovLength = 1 };
            if (!descriptors.IsEmpty)
            {
                int dataBytes = descriptors.Length * sizeof(int);
                var cmsg = (CmsgHdr*)control;
                cmsg->Length = (nuint)CmsgHdr.Len(dataBytes);
                cmsg->Level = UnixIpcConstants.SOL_SOCKET;
                cmsg->Type = UnixIpcConstants.SCM_RIGHTS;
                descriptors.CopyTo(new Span<int>((byte*)control + CmsgHdr.Size, descriptors.Length));
                header.Control = control;
                header.ControlLength = (nuint)CmsgHdr.Space(dataBytes);
            }
            while (true)
            {
                // MSG_NOSIGNAL: a vanished peer is EPIPE, not a SIGPIPE that kills the process.
                if (Libc.SendMsg(Fd, &header, UnixIpcConstants.MSG_NOSIGNAL | (dontWait ? UnixIpcConstants.MSG_DONTWAIT : 0)) >= 0)
                    return 0;
                int errno = Errno.Last;
                if (errno != Errno.EINTR)
                    return errno;
            }
        }
    }

    /// <summary>Encodes and sends <paramref name="message"/>; see <see cref="Send(ReadOnlySpan{byte}, ReadOnlySpan{int})"/>.</summary>
    public int Send(Message message, ReadOnlySpan<int> descriptors = default, bool dontWait = false)
    {
        ArgumentNullException.ThrowIfNull(message);
        Span<byte> buffer = stackalloc byte[MessageHeader.MaxMessageLength];
        return Send(buffer[..message.Encode(buffer)], descriptors, dontWait);
    }

    /// <summary>
    /// Receives one message into <paramref name="buffer"/> and up to <paramref name="descriptors"/>.Length
    /// descriptors (opened close-on-exec). Blocks unless <paramref name="dontWait"/>.
    /// </summary>
    public ReceiveResult Receive(Span<byte> buffer, Span<int> descriptors, bool dontWait = false)
    {
        int capacity = Math.Min(descriptors.Length, MaxDescriptors);
        const int controlBytes = CmsgHdr.Size + MaxDescriptors * sizeof(int);
        ulong* control = stackalloc ulong[controlBytes / sizeof(ulong)];
        fixed (byte* p = buffer)
        {
            var iov = new IoVec { Base = p, Length = (nuint)buffer.Length };
            var header = new MsgHdr { Iov = &iov, IovLength = 1 };
            if (capacity > 0)
            {
                header.Control = control;
                header.ControlLength = (nuint)CmsgHdr.Space(capacity * sizeof(int));
            }
            int flags = UnixIpcConstants.MSG_CMSG_CLOEXEC | (dontWait ? UnixIpcConstants.MSG_DONTWAIT : 0);
            nint n;
            while ((n = Libc.RecvMsg(Fd, &header, flags)) < 0)
            {
                int errno = Errno.Last;
                if (errno == Errno.EAGAIN)
                    return new ReceiveResult(ReceiveStatus.WouldBlock, 0, 0, errno);
                if (errno != Errno.EINTR)
                    return new ReceiveResult(ReceiveStatus.Error, 0, 0, errno);
            }
            int count = TakeDescriptors(&header, descriptors);
            var status = (header.Flags & UnixIpcConstants.MSG_TRUNC) != 0 ? ReceiveStatus.MessageTruncated
                : (header.Flags & UnixIpcConstants.MSG_CTRUNC) != 0 ? ReceiveStatus.DescriptorsTruncated
                : n == 0 && count == 0 ? ReceiveStatus.PeerClosed
                : ReceiveStatus.Ok;
            return new ReceiveResult(status, (int)n, count, 0);
        }
    }

    /// <summary>
    /// Receives and decodes one message. <paramref name="message"/> is set only on <see cref="ReceiveStatus.Ok"/>;
    /// a message that does not decode is <see cref="ReceiveStatus.Malformed"/>, one too long for the protocol
    /// <see cref="ReceiveStatus.Malformed"/> with <see cref="DecodeError.Oversized"/>.
    /// </summary>
    public ReceiveResult Receive(Span<int> descriptors, out Message? message, bool dontWait = false)
    {
        message = null;
        // One byte more than the largest message, so that an oversized one shows as such rather than as a short one.
        Span<byte> buffer = stackalloc byte[MessageHeader.MaxMessageLength + 1];
        var result = Receive(buffer, descriptors, dontWait);
        if (result.Status == ReceiveStatus.MessageTruncated)
            return result with { Status = ReceiveStatus.Malformed, DecodeError = DecodeError.Oversized };
        if (result.Status != ReceiveStatus.Ok)
            return result;
        if (!Message.TryDecode(buffer[..result.Length], out message, out var error))
            return result with { Status = ReceiveStatus.Malformed, DecodeError = error };
        return result;
    }

    private static int TakeDescriptors(MsgHdr* header, Span<int> descriptors)
    {
        int count = 0;
        if (header->Control == null || header->ControlLength < CmsgHdr.Size)
            return 0;
        byte* control = (byte*)header->Control;
        byte* end = control + header->ControlLength;
        for (byte* c = control; c + CmsgHdr.Size <= end;)
        {
            var cmsg = (CmsgHdr*)c;
            if (cmsg->Length < CmsgHdr.Size || c + cmsg->Length > end)
                break;
            if (cmsg->Level == UnixIpcConstants.SOL_SOCKET && cmsg->Type == UnixIpcConstants.SCM_RIGHTS)
            {
                int n = (int)(cmsg->Length - CmsgHdr.Size) / sizeof(int);
                var fds = new ReadOnlySpan<int>(c + CmsgHdr.Size, n);
                foreach (int fd in fds)
                {
                    if (count < descriptors.Length)
                        descriptors[count++] = fd;
                    else
                        Libc.Close(fd); // cannot happen: the control buffer was sized to the span
                }
            }
            c += CmsgHdr.Space((int)cmsg->Length - CmsgHdr.Size);
        }
        return count;
    }

    private static int NewSocket(int flags = 0)
    {
        int fd = Libc.Socket(UnixIpcConstants.AF_UNIX, UnixIpcConstants.SOCK_SEQPACKET | LinuxConstants.SOCK_CLOEXEC | flags, 0);
        if (fd < 0)
            throw new DriverlinkSocketException("socket(AF_UNIX, SOCK_SEQPACKET)", Errno.Last);
        return fd;
    }

    /// <summary>
    /// An abstract address (unix(7)): sun_path starts with a NUL and the name is the bytes after it, without a
    /// terminating NUL; the address length counts exactly those bytes.
    /// </summary>
    private static uint AbstractAddress(string name, out SockaddrUn addr)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        int length = Encoding.UTF8.GetByteCount(name);
        if (length > UnixIpcConstants.SunPathLength - 1)
            throw new ArgumentException($"an abstract socket name has at most {UnixIpcConstants.SunPathLength - 1} bytes", nameof(name));
        addr = default;
        addr.Family = UnixIpcConstants.AF_UNIX;
        fixed (byte* p = addr.Path)
            Encoding.UTF8.GetBytes(name, new Span<byte>(p + 1, UnixIpcConstants.SunPathLength - 1));
        return (uint)(sizeof(ushort) + 1 + length);
    }

    public void Dispose()
    {
        int fd = Interlocked.Exchange(ref _fd, -1);
        if (fd >= 0)
            Libc.Close(fd);
    }
}
