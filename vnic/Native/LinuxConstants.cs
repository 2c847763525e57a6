namespace Onload.Vnic.Native;

/// <summary>Socket, mmap, poll and open constants of Linux (x86-64 and arm64 share these values).</summary>
internal static class LinuxConstants
{
    // include/linux/socket.h
    public const int AF_INET = 2;
    public const int AF_PACKET = 17;
    public const int AF_XDP = 44;

    // include/linux/net.h, asm-generic/fcntl.h
    public const int SOCK_DGRAM = 2;
    public const int SOCK_RAW = 3;
    public const int SOCK_CLOEXEC = 0x80000;
    public const int SOCK_NONBLOCK = 0x800;

    // include/linux/socket.h
    public const int MSG_DONTWAIT = 0x40;

    // asm-generic/socket.h: the socket's address family, read back (to check a socket passed in).
    public const int SOL_SOCKET = 1;
    public const int SO_DOMAIN = 39;

    // asm-generic/fcntl.h
    public const int O_RDWR = 2;
    public const int O_NONBLOCK = 0x800;
    public const int O_CLOEXEC = 0x80000;

    // asm-generic/mman-common.h, uapi/linux/mman.h
    public const int PROT_READ = 1;
    public const int PROT_WRITE = 2;
    public const int MAP_SHARED = 1;
    public const int MAP_ANONYMOUS = 0x20;
    public const int MAP_POPULATE = 0x8000;
    public const int MAP_PRIVATE = 2;
    public const int MAP_NORESERVE = 0x4000;
    public const int MADV_DONTNEED = 4;
    public const int MADV_NOHUGEPAGE = 15;

    // asm-generic/poll.h
    public const short POLLIN = 1;

    // uapi/linux/if_ether.h
    public const ushort ETH_P_ALL = 0x0003;
    public const int ETH_HLEN = 14;
    public const int VLAN_HLEN = 4;

    // uapi/linux/if_arp.h
    public const ushort ARPHRD_ETHER = 1;
    public const ushort ARPHRD_LOOPBACK = 772;

    // uapi/linux/if.h
    public const int IFNAMSIZ = 16;
    public const short IFF_UP = 0x1;
}
