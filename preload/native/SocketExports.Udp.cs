using System.Runtime.InteropServices;
using Onload.Stack;
using Onload.Stack.Wire;

namespace Onload.Native;

// The UDP part of the C ABI (onload_sock_udp_* in onload_stack.h). UDP handles are numbered apart from TCP
// connections; onload_sock_poll takes them with ONLOAD_SOCK_UDP set.
public static unsafe partial class SocketExports
{
    [UnmanagedCallersOnly(EntryPoint = "onload_sock_udp_open")]
    public static int UdpOpen() => Call(static l => l.UdpOpen());

    [UnmanagedCallersOnly(EntryPoint = "onload_sock_udp_bind")]
    public static int UdpBind(int h, uint address, ushort port) =>
        Call((h, local: Endpoint(address, port)), static (l, a) => l.UdpBind(a.h, a.local));

    /// <summary>Sets the default peer (binding to an ephemeral port first if need be).</summary>
    [UnmanagedCallersOnly(EntryPoint = "onload_sock_udp_connect")]
    public static int UdpConnect(int h, uint address, ushort port) =>
        Call((h, remote: Endpoint(address, port)), static (l, a) => l.UdpConnect(a.h, a.remote));

    /// <summary>connect(AF_UNSPEC): forgets the peer.</summary>
    [UnmanagedCallersOnly(EntryPoint = "onload_sock_udp_disconnect")]
    public static int UdpDisconnect(int h) => Call(h, static (l, h) => l.UdpDisconnect(h));

    /// <summary><c>int onload_sock_udp_send(int h, const struct iovec *iov, int iovcnt, int to, uint32_t address,
    /// uint16_t port)</c>: one datagram, to address:port when <c>to</c> is set, else to the connected peer.</summary>
    [UnmanagedCallersOnly(EntryPoint = "onload_sock_udp_send")]
    public static int UdpSend(int h, IoVec* iov, int iovcnt, int to, uint address, ushort port)
    {
        try
        {
            if (iovcnt < 0)
                return -(int)Errno.EINVAL;
            var layer = SocketLayer.Get(out int errno);
            if (layer is null)
                return -errno;
            Ipv4Endpoint? destination = to != 0 ? Endpoint(address, port) : null;
            return layer.UdpSend(h, new ReadOnlySpan<IoVec>(iov, iovcnt), destination);
        }
        catch (Exception)
        {
            return -EIO;
        }
    }

    /// <summary><c>int onload_sock_udp_recv(int h, const struct iovec *iov, int iovcnt, int peek, uint32_t *address,
    /// uint16_t *port, int *datagram_len)</c>: the bytes copied of the next datagram, its sender and its full length;
    /// -EAGAIN when none is queued.</summary>
    [UnmanagedCallersOnly(EntryPoint = "onload_sock_udp_recv")]
    public static int UdpReceive(int h, IoVec* iov, int iovcnt, int peek, uint* address, ushort* port, int* datagramLength)
    {
        try
        {
            if (iovcnt < 0)
                return -(int)Errno.EINVAL;
            var layer = SocketLayer.Get(out int errno);
            if (layer is null)
                return -errno;
            int n = layer.UdpReceive(h, new ReadOnlySpan<IoVec>(iov, iovcnt), peek != 0, out var from, out int length);
            if (n >= 0)
            {
                *address = from.Address.Value;
                *port = from.Port;
                *datagramLength = length;
            }
            return n;
        }
        catch (Exception)
        {
            return -EIO;
        }
    }

    /// <summary>FIONREAD: the next datagram's length, 0 when none.</summary>
    [UnmanagedCallersOnly(EntryPoint = "onload_sock_udp_next_length")]
    public static int UdpNextLength(int h) => Call(h, static (l, h) => l.UdpNextLength(h));

    [UnmanagedCallersOnly(EntryPoint = "onload_sock_udp_close")]
    public static int UdpClose(int h) => Call(h, static (l, h) => l.UdpClose(h));

    [UnmanagedCallersOnly(EntryPoint = "onload_sock_udp_name")]
    public static int UdpName(int h, int peer, uint* address, ushort* port)
    {
        try
        {
            var layer = SocketLayer.Get(out int errno);
            if (layer is null)
                return -errno;
            int rc = layer.UdpName(h, peer != 0, out var e);
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

    [UnmanagedCallersOnly(EntryPoint = "onload_sock_udp_take_error")]
    public static int UdpTakeError(int h) => Call(h, static (l, h) => l.UdpTakeError(h));

    /// <summary><c>int onload_sock_udp_setopt(int h, int option, uint32_t value)</c>: ONLOAD_UDP_OPT_*; a group is an
    /// address in host byte order, a TTL of -1 as (uint32_t)-1.</summary>
    [UnmanagedCallersOnly(EntryPoint = "onload_sock_udp_setopt")]
    public static int UdpSetOption(int h, int option, uint value) =>
        Call((h, option: (UdpOption)option, value), static (l, a) => l.UdpSetOption(a.h, a.option, a.value));
}
