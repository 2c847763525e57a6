using System.Runtime.InteropServices;
using System.Text;
using Onload.Stack;
using Onload.Stack.Wire;

namespace Onload.Native;

/// <summary>
/// The socket layer's C ABI (<c>onload_sock_*</c> in onload_stack.h), which the preload shim calls: TCP over the
/// process's one driverlink stack (<see cref="SocketLayer"/>); UDP is in SocketExports.Udp.cs. Handles are the stack's connection rows; addresses
/// and ports are in host byte order; results are counts or negated Linux errnos. Every call is non-blocking.
/// </summary>
public static unsafe partial class SocketExports
{
    private const int EIO = 5;

    /// <summary><c>int onload_sock_init(void)</c>: starts the stack if need be. 0, or -errno when it cannot start
    /// (<c>onload_sock_start_failure</c> says why).</summary>
    [UnmanagedCallersOnly(EntryPoint = "onload_sock_init")]
    public static int Init()
    {
        try
        {
            return SocketLayer.Get(out int errno) is null ? -errno : 0;
        }
        catch (Exception)
        {
            return -EIO;
        }
    }

    /// <summary><c>int onload_sock_start_failure(char *buf, int len)</c>: why the stack did not start, snprintf-style.</summary>
    [UnmanagedCallersOnly(EntryPoint = "onload_sock_start_failure")]
    public static int StartFailure(byte* buf, int len)
    {
        try
        {
            byte[] text = Encoding.UTF8.GetBytes(SocketLayer.StartFailure);
            if (buf != null && len > 0)
            {
                int n = Math.Min(text.Length, len - 1);
                text.AsSpan(0, n).CopyTo(new Span<byte>(buf, n));
                buf[n] = 0;
            }
            return text.Length;
        }
        catch (Exception)
        {
            return -EIO;
        }
    }

    /// <summary><c>uint32_t onload_sock_local_address(void)</c>: the stack's IPv4 address (0 before init).</summary>
    [UnmanagedCallersOnly(EntryPoint = "onload_sock_local_address")]
    public static uint LocalAddress()
    {
        try
        {
            return SocketLayer.Get(out _)?.Address.Value ?? 0;
        }
        catch (Exception)
        {
            return 0;
        }
    }

    [UnmanagedCallersOnly(EntryPoint = "onload_sock_open")]
    public static int Open() => Call(static l => l.Open());

    [UnmanagedCallersOnly(EntryPoint = "onload_sock_bind")]
    public static int Bind(int h, uint address, ushort port) =>
        Call((h, local: Endpoint(address, port)), static (l, a) => l.Bind(a.h, a.local));

    [UnmanagedCallersOnly(EntryPoint = "onload_sock_listen")]
    public static int Listen(int h, int backlog) => Call((h, backlog), static (l, a) => l.Listen(a.h, a.backlog));

    /// <summary><c>int onload_sock_accept(int h, uint32_t *address, uint16_t *port)</c>: the new connection's handle
    /// and its peer, or -EAGAIN.</summary>
    [UnmanagedCallersOnly(EntryPoint = "onload_sock_accept")]
    public static int Accept(int h, uint* address, ushort* port)
    {
        try
        {
            var layer = SocketLayer.Get(out int errno);
            if (layer is null)
                return -errno;
            int c = layer.Accept(h, out var remote);
            if (c >= 0)
            {
                if (address != null)
                    *address = remote.Address.Value;
                if (port != null)
                    *port = remote.Port;
            }
            return c;
        }
        catch (Exception)
        {
            return -EIO;
        }
    }

    /// <summary>-EINPROGRESS when the SYN went out; then poll for POLLOUT and take the error.</summary>
    [UnmanagedCallersOnly(EntryPoint = "onload_sock_connect")]
    public static int Connect(int h, uint address, ushort port) =>
        Call((h, remote: Endpoint(address, port)), static (l, a) => l.Connect(a.h, a.remote));

    [UnmanagedCallersOnly(EntryPoint = "onload_sock_send")]
    public static int Send(int h, byte* data, nint length)
    {
        try
        {
            var layer = SocketLayer.Get(out int errno);
            if (layer is null)
                return -errno;
            return layer.Send(h, new ReadOnlySpan<byte>(data, (int)Math.Min(length, int.MaxValue)));
        }
        catch (Exception)
        {
            return -EIO;
        }
    }

    [UnmanagedCallersOnly(EntryPoint = "onload_sock_recv")]
    public static int Receive(int h, byte* buffer, nint length)
    {
        try
        {
            var layer = SocketLayer.Get(out int errno);
            if (layer is null)
                return -errno;
            return layer.Receive(h, new Span<byte>(buffer, (int)Math.Min(length, int.MaxValue)));
        }
        catch (Exception)
        {
            return -EIO;
        }
    }

    /// <summary><c>int onload_sock_peek(int h, void *buf, intptr_t len)</c>: recv(MSG_PEEK), leaving the bytes
    /// queued.</summary>
    [UnmanagedCallersOnly(EntryPoint = "onload_sock_peek")]
    public static int Peek(int h, byte* buffer, nint length)
    {
        try
        {
            var layer = SocketLayer.Get(out int errno);
            if (layer is null)
                return -errno;
            return layer.Peek(h, new Span<byte>(buffer, (int)Math.Min(length, int.MaxValue)));
        }
        catch (Exception)
        {
            return -EIO;
        }
    }

    /// <summary><c>int onload_sock_queued(int h, int send)</c>: FIONREAD (send 0) or SIOCOUTQ (send 1).</summary>
    [UnmanagedCallersOnly(EntryPoint = "onload_sock_queued")]
    public static int Queued(int h, int send) => Call((h, send: send != 0), static (l, a) => l.Queued(a.h, a.send));

    /// <summary><c>how</c> as shutdown(2)'s: SHUT_RD 0, SHUT_WR 1, SHUT_RDWR 2.</summary>
    [UnmanagedCallersOnly(EntryPoint = "onload_sock_shutdown")]
    public static int Shutdown(int h, int how) =>
        how is < 0 or > 2 ? -(int)Errno.EINVAL : Call((h, how), static (l, a) => l.Shutdown(a.h, a.how != 1, a.how != 0));

    [UnmanagedCallersOnly(EntryPoint = "onload_sock_close")]
    public static int Close(int h) => Call(h, static (l, h) => l.Close(h));

    /// <summary><c>int onload_sock_name(int h, int peer, uint32_t *address, uint16_t *port)</c>.</summary>
    [UnmanagedCallersOnly(EntryPoint = "onload_sock_name")]
    public static int Name(int h, int peer, uint* address, ushort* port)
    {
        try
        {
            var layer = SocketLayer.Get(out int errno);
            if (layer is null)
                return -errno;
            int rc = layer.Name(h, peer != 0, out var e);
            if (rc == 0)
            {
                *address = e.Address.Value;
                *port = e.Port;
            }
            return rc;
        }
        catch (Exception)
        {
            return -EIO;
        }
    }

    /// <summary><c>int onload_sock_tcp_info(int h, void *info, int len)</c>: Linux's struct tcp_info of the connection,
    /// cut to <c>len</c>; returns its full size (232), or -errno.</summary>
    [UnmanagedCallersOnly(EntryPoint = "onload_sock_tcp_info")]
    public static int GetTcpInfo(int h, byte* info, int len)
    {
        if (info == null || len < 0)
            return -(int)Errno.EFAULT;
        try
        {
            var layer = SocketLayer.Get(out int errno);
            if (layer is null)
                return -errno;
            Span<byte> full = stackalloc byte[TcpInfo.Size];
            int rc = layer.TcpInfo(h, full);
            if (rc > 0)
                full[..Math.Min(len, rc)].CopyTo(new Span<byte>(info, len));
            return rc;
        }
        catch (Exception)
        {
            return -EIO;
        }
    }

    /// <summary>getsockopt(SO_ERROR): the pending errno (positive), cleared; 0 when none.</summary>
    [UnmanagedCallersOnly(EntryPoint = "onload_sock_take_error")]
    public static int TakeError(int h) => Call(h, static (l, h) => l.TakeError(h));

    /// <summary><c>int onload_sock_tcp_setopt(int h, int option, int64_t value)</c>: ONLOAD_TCP_OPT_*; 0 or -errno.</summary>
    [UnmanagedCallersOnly(EntryPoint = "onload_sock_tcp_setopt")]
    public static int TcpSetOption(int h, int option, long value) =>
        Call((h, option: (TcpOption)option, value), static (l, a) => l.TcpSetOption(a.h, a.option, a.value));

    /// <summary><c>int onload_sock_tcp_getopt(int h, int option)</c>: the stack's value of ONLOAD_TCP_OPT_RCVBUF, _SNDBUF or
    /// _CONGESTION, or -errno (-ENOPROTOOPT: the placeholder has it).</summary>
    [UnmanagedCallersOnly(EntryPoint = "onload_sock_tcp_getopt")]
    public static int TcpGetOption(int h, int option) =>
        Call((h, option: (TcpOption)option), static (l, a) => l.TcpGetOption(a.h, a.option));

    /// <summary><c>int onload_sock_poll(const int *handles, const short *events, short *revents, int n)</c>: polls the
    /// stack once and reports each handle's events (poll(2)'s bits); returns how many have some.</summary>
    [UnmanagedCallersOnly(EntryPoint = "onload_sock_poll")]
    public static int PollSockets(int* handles, short* events, short* revents, int n)
    {
        try
        {
            if (n < 0)
                return -(int)Errno.EINVAL;
            var layer = SocketLayer.Get(out int errno);
            if (layer is null)
                return -errno;
            return layer.PollSockets(new ReadOnlySpan<int>(handles, n), new ReadOnlySpan<short>(events, n), new Span<short>(revents, n));
        }
        catch (Exception)
        {
            return -EIO;
        }
    }

    /// <summary><c>int onload_sock_wait_begin(int wake_fd, const int *handles, const short *events, short *revents,
    /// int n, int *waiter, int *vnic_fd, int *timeout_ms)</c>: before sleeping (see SocketLayer.BeginWait). How many
    /// handles are ready (revents filled), or 0 with the caller registered as *waiter: the stack writes wake_fd when
    /// one of them has one of its events (matched exactly). *vnic_fd is -1, or the fd the caller sleeps on too, with
    /// *timeout_ms cut to the next timer. -EAGAIN: frames are waiting, poll instead.</summary>
    [UnmanagedCallersOnly(EntryPoint = "onload_sock_wait_begin")]
    public static int WaitBegin(int wakeFd, int* handles, short* events, short* revents, int n, int* waiter, int* vnicFd, int* timeoutMs)
    {
        try
        {
            if (n < 0 || waiter == null || vnicFd == null || timeoutMs == null)
                return -(int)Errno.EINVAL;
            var layer = SocketLayer.Get(out int errno);
            if (layer is null)
                return -errno;
            return layer.BeginWait(wakeFd, new ReadOnlySpan<int>(handles, n), new ReadOnlySpan<short>(events, n),
                new Span<short>(revents, n), out *waiter, out *vnicFd, ref *timeoutMs);
        }
        catch (Exception)
        {
            return -EIO;
        }
    }

    /// <summary><c>int onload_sock_wait_end(int waiter)</c>: after the sleep. 1 when the stack wrote the waiter's
    /// wake_fd (read it before the next wait), 0 when not.</summary>
    [UnmanagedCallersOnly(EntryPoint = "onload_sock_wait_end")]
    public static int WaitEnd(int waiter) => Call(waiter, static (l, waiter) => l.EndWait(waiter));

    /// <summary><c>int onload_sock_drain(int timeout_ms)</c>: at exit, runs the stack until closed connections have
    /// sent everything (see SocketLayer.Drain); returns how many had not. 0 when the stack never started.</summary>
    [UnmanagedCallersOnly(EntryPoint = "onload_sock_drain")]
    public static int Drain(int timeoutMs) => Call(timeoutMs, static (l, timeoutMs) => l.Drain(timeoutMs));

    /// <summary><c>int onload_sock_handover(int h, int fd)</c>: connection h becomes kernel socket fd, an unconnected
    /// TCP socket (the program's placeholder): 0, or a negated errno with the connection still on the stack.</summary>
    [UnmanagedCallersOnly(EntryPoint = "onload_sock_handover")]
    public static int HandOver(int h, int fd) => Call((h, fd), static (l, a) => l.HandOver(a.h, a.fd));

    /// <summary><c>int onload_sock_handover_listener(int h)</c>: listener h leaves the stack and its port is free for
    /// the kernel to listen on: the port, or a negated errno with the listener still on the stack.</summary>
    [UnmanagedCallersOnly(EntryPoint = "onload_sock_handover_listener")]
    public static int HandOverListener(int h) => Call(h, static (l, h) => l.HandOverListener(h));

    /// <summary><c>int onload_sock_share_listener_port(int h)</c>: before listener h's hand-over, a kernel socket
    /// setting SO_REUSEADDR may bind and listen on its port (still the stack's): 0, or a negated errno.</summary>
    [UnmanagedCallersOnly(EntryPoint = "onload_sock_share_listener_port")]
    public static int ShareListenerPort(int h) => Call(h, static (l, h) => l.ShareListenerPort(h));

    /// <summary><c>int onload_sock_udp_handover(int h, int *dropped)</c>: UDP socket h leaves the stack for the kernel
    /// socket holding its port, which it returns (or a negated errno with the socket still on the stack); *dropped:
    /// datagrams that were queued on the stack, lost.</summary>
    [UnmanagedCallersOnly(EntryPoint = "onload_sock_udp_handover")]
    public static int UdpHandOver(int h, int* dropped)
    {
        try
        {
            var layer = SocketLayer.Get(out int errno);
            if (layer is null)
                return -errno;
            int fd = layer.UdpHandOver(h, out int lost);
            if (dropped != null)
                *dropped = lost;
            return fd;
        }
        catch (Exception)
        {
            return -EIO;
        }
    }

    private static int Call(Func<SocketLayer, int> op) => Call(op, static (l, op) => op(l));

    /// <summary>
    /// Runs <paramref name="op"/> on the process's stack with its arguments in <paramref name="args"/>: -errno when
    /// the stack cannot start, -EIO for an exception (none may leave an export). <paramref name="op"/> is a static
    /// lambda so that it is one cached delegate; a lambda capturing the arguments would allocate a closure and a
    /// delegate per call, and programs make some of these calls (FIONREAD, SO_ERROR, setsockopt) per message.
    /// </summary>
    private static int Call<TArgs>(TArgs args, Func<SocketLayer, TArgs, int> op)
    {
        try
        {
            var layer = SocketLayer.Get(out int errno);
            return layer is null ? -errno : op(layer, args);
        }
        catch (Exception)
        {
            return -EIO;
        }
    }

    private static Ipv4Endpoint Endpoint(uint address, ushort port) => new(new Ipv4Address(address), port);
}
