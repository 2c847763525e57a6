using System.Buffers.Binary;
using System.Runtime.InteropServices;
using Onload.Vnic.Native;

namespace Onload.Driverlink;

/// <summary>
/// The kernel socket behind each accelerated port. Bound to the port the stack uses, it reserves that port against
/// every kernel program, lets the kernel choose ephemeral ports (it never hands one out twice), is freed by the
/// kernel when its process dies, and proves to the daemon that the port is the client's: the client passes it with
/// its filter insert, and the daemon reads with getsockname what it holds.
/// </summary>
public static unsafe class BackingSocket
{
    private const int AF_INET = 2;
    private const int SOCK_STREAM = 1;
    private const int SOCK_DGRAM = 2;
    private const int SOCK_CLOEXEC = 0x80000;
    private const int SOL_SOCKET = 1;
    private const int SO_REUSEADDR = 2;
    private const int SO_TYPE = 3;
    private const int SO_DOMAIN = 39;

    /// <summary>
    /// Opens a kernel socket of <paramref name="protocol"/> bound to <paramref name="localAddress"/> (host order; 0
    /// for any) and <paramref name="port"/> (0: the kernel chooses, and <paramref name="port"/> is set to its
    /// choice). Returns the descriptor, or a negated errno (EADDRINUSE, EACCES for a privileged port, ...).
    /// </summary>
    public static int Open(FilterProtocol protocol, uint localAddress, ref ushort port)
    {
        int type = protocol == FilterProtocol.Tcp ? SOCK_STREAM : SOCK_DGRAM;
        int fd = Libc.Socket(AF_INET, type | SOCK_CLOEXEC, 0);
        if (fd < 0)
            return -Marshal.GetLastPInvokeError();
        // IP_RECVERR: ICMP errors about what the port sent (the stack's datagrams too: the kernel matches the quoted
        // header to this socket) queue on the socket, for KernelSideChannel to hand to the stack; without it the
        // kernel drops them for an unconnected socket.
        int on = 1;
        var addr = SockAddrIn.Create(localAddress, port);
        if ((type == SOCK_DGRAM && Libc.SetSockOpt(fd, IPPROTO_IP, IP_RECVERR, &on, sizeof(int)) != 0) ||
            Libc.Bind(fd, &addr, (uint)sizeof(SockAddrIn)) != 0 || !TryLocal(fd, out _, out ushort bound))
        {
            int e = Marshal.GetLastPInvokeError();
            Libc.Close(fd);
            return -e;
        }
        port = bound;
        return fd;
    }

    /// <summary>SO_REUSEADDR on a bound socket: from here on another socket setting it too may bind the port and
    /// listen there while this one stays bound. 0, or a negated errno.</summary>
    public static int AllowReuse(int fd)
    {
        int on = 1;
        return Libc.SetSockOpt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(int)) == 0 ? 0 : -Marshal.GetLastPInvokeError();
    }

    /// <summary>
    /// Whether <paramref name="fd"/> is an IPv4 socket of <paramref name="protocol"/> bound to
    /// <paramref name="port"/> on <paramref name="localAddress"/> (or on any address): what the daemon checks before
    /// steering a port to the client that passed it.
    /// </summary>
    public static bool Holds(int fd, FilterProtocol protocol, uint localAddress, ushort port)
    {
        int domain = 0, type = 0;
        uint length = sizeof(int);
        if (Libc.GetSockOpt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &length) != 0 || domain != AF_INET)
            return false;
        length = sizeof(int);
        if (Libc.GetSockOpt(fd, SOL_SOCKET, SO_TYPE, &type, &length) != 0)
            return false;
        if (type != (protocol == FilterProtocol.Tcp ? SOCK_STREAM : SOCK_DGRAM))
            return false;
        return TryLocal(fd, out uint address, out ushort bound) && bound == port && (address == 0 || address == localAddress);
    }

    /// <summary>sendto(2) of one datagram on a UDP backing socket (MSG_DONTWAIT). Returns the bytes sent or a
    /// negated errno.</summary>
    public static int SendTo(int fd, ReadOnlySpan<byte> payload, uint address, ushort port)
    {
        var to = SockAddrIn.Create(address, port);
        nint sent;
        fixed (byte* p = payload)
            sent = Libc.SendTo(fd, p, (nuint)payload.Length, MSG_DONTWAIT, &to, (uint)sizeof(SockAddrIn));
        return sent >= 0 ? (int)sent : -Marshal.GetLastPInvokeError();
    }

    private const int MSG_DONTWAIT = 0x40;
    private const int IPPROTO_IP = 0;
    private const int IP_ADD_MEMBERSHIP = 35;
    private const int IP_DROP_MEMBERSHIP = 36;
    private const int IP_RECVERR = 11;

    /// <summary>IP_ADD_MEMBERSHIP or IP_DROP_MEMBERSHIP of <paramref name="group"/> on the interface holding
    /// <paramref name="localAddress"/> (host order both). Returns 0 or a negated errno.</summary>
    public static int Membership(int fd, uint group, uint localAddress, bool join)
    {
        uint* mreq = stackalloc uint[2];
        mreq[0] = BinaryPrimitives.ReverseEndianness(group);
        mreq[1] = BinaryPrimitives.ReverseEndianness(localAddress);
        return Libc.SetSockOpt(fd, IPPROTO_IP, join ? IP_ADD_MEMBERSHIP : IP_DROP_MEMBERSHIP, mreq, 8) == 0 ? 0 : -Marshal.GetLastPInvokeError();
    }



    /// <summary>Closes a descriptor this class opened or the daemon received.</summary>
    public static void Release(int fd)
    {
        if (fd >= 0)
            Libc.Close(fd);
    }

    private static bool TryLocal(int fd, out uint address, out ushort port)
    {
        SockAddrIn a;
        uint length = (uint)sizeof(SockAddrIn);
        if (Libc.GetSockName(fd, &a, &length) != 0 || a.Family != AF_INET)
        {
            address = 0;
            port = 0;
            return false;
        }
        address = a.Address;
        port = a.Port;
        return true;
    }
}
