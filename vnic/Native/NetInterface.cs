using static Onload.Vnic.Native.LinuxConstants;

namespace Onload.Vnic.Native;

/// <summary>What <see cref="NetInterface.ReadLink"/> learns of an interface: its MTU, its hardware address and the
/// ARPHRD_* type of that address.</summary>
internal readonly record struct LinkInfo(int Mtu, MacAddress Mac, ushort LinkType);

/// <summary>
/// The steps every backend on a kernel interface takes when it opens (af_xdp, af_packet, tap): check the name,
/// find the index, read MTU and MAC, open a socket. Each failure is an exception whose message starts with the
/// spec (which names the interface) and, for a failed system call, gives errno.
/// </summary>
internal static unsafe class NetInterface
{
    /// <summary>
    /// Throws <see cref="ArgumentException"/> unless <paramref name="name"/> fits <c>ifr_name</c>: 1 to
    /// IFNAMSIZ - 1 (15) characters, each ASCII from U+0001 to U+007E (what <see cref="Libc.CopyCString"/> copies).
    /// </summary>
    public static void CheckName(string spec, string name, string paramName)
    {
        if (name.Length is 0 or >= IFNAMSIZ)
            throw new ArgumentException($"{spec}: an interface name has 1 to {IFNAMSIZ - 1} characters", paramName);
        for (int i = 0; i < name.Length; i++)
        {
            char c = name[i];
            if (c is '\0' or > '\x7e')
                throw new ArgumentException(
                    $"{spec}: an interface name holds ASCII characters U+0001 to U+007E; character {i} is U+{(int)c:X4}", paramName);
        }
    }

    /// <summary>The interface's index (if_nametoindex), or an <see cref="IOException"/>: "no such interface" with
    /// HResult ENODEV when the namespace has none of that name.</summary>
    public static int Index(string spec, string name)
    {
        uint index = IndexOrZero(name);
        if (index != 0)
            return (int)index;
        int e = Errno.Last;
        throw e is Errno.ENODEV or Errno.ENXIO or 0
            ? OpenFailure.Message(spec, "no such interface (in this network namespace)", Errno.ENODEV)
            : OpenFailure.Call(spec, "if_nametoindex", e);
    }

    /// <summary>Whether the calling thread's network namespace has an interface of that name.</summary>
    public static bool Exists(string name) => IndexOrZero(name) != 0;

    /// <summary>MTU and hardware address through the interface ioctls (SIOCGIFMTU, SIOCGIFHWADDR) on
    /// <paramref name="fd"/>, any socket of the interface's namespace that takes them (see <see cref="OpenControlSocket"/>).</summary>
    public static LinkInfo ReadLink(string spec, int fd, string name)
    {
        int err = InterfaceIoctl.GetMtu(fd, name, out int mtu);
        if (err != 0)
            throw OpenFailure.Call(spec, "ioctl(SIOCGIFMTU)", err);
        err = InterfaceIoctl.GetHardwareAddress(fd, name, out var mac, out ushort linkType);
        if (err != 0)
            throw OpenFailure.Call(spec, "ioctl(SIOCGIFHWADDR)", err);
        return new LinkInfo(mtu, mac, linkType);
    }

    /// <summary>A UDP socket for the interface ioctls, where the backend's own socket does not take them
    /// (AF_XDP) or it has none (a tap's fd is a file). The caller closes it.</summary>
    public static int OpenControlSocket(string spec) => OpenSocket(spec, AF_INET, SOCK_DGRAM);

    /// <summary>
    /// socket(<paramref name="family"/>, <paramref name="type"/> | SOCK_CLOEXEC, 0), or an <see cref="IOException"/>
    /// that says why: a raw socket refused for want of CAP_NET_RAW, a family this kernel lacks, or errno's text.
    /// </summary>
    public static int OpenSocket(string spec, int family, int type)
    {
        int fd = Libc.Socket(family, type | SOCK_CLOEXEC, 0);
        if (fd >= 0)
            return fd;
        int e = Errno.Last;
        string familyName = family switch
        {
            AF_INET => "AF_INET",
            AF_PACKET => "AF_PACKET",
            AF_XDP => "AF_XDP",
            _ => $"family {family}",
        };
        string typeName = type switch
        {
            SOCK_DGRAM => "SOCK_DGRAM",
            SOCK_RAW => "SOCK_RAW",
            _ => $"type {type}",
        };
        // The kernel option that provides the family (net/packet/Kconfig, net/xdp/Kconfig).
        string option = family switch
        {
            AF_PACKET => " (CONFIG_PACKET)",
            AF_XDP => " (CONFIG_XDP_SOCKETS)",
            _ => "",
        };
        throw e switch
        {
            Errno.EPERM or Errno.EACCES when type == SOCK_RAW => OpenFailure.Message(spec,
                $"socket({familyName}, SOCK_RAW) needs CAP_NET_RAW (run as root): {Errno.Describe(e)}", e),
            Errno.EAFNOSUPPORT => OpenFailure.Message(spec,
                $"this kernel has no {familyName} sockets{option}: {Errno.Describe(e)}", e),
            _ => OpenFailure.Call(spec, $"socket({familyName}, {typeName})", e),
        };
    }

    /// <summary>if_nametoindex(3): 0 with errno set when there is no such interface.</summary>
    private static uint IndexOrZero(string name)
    {
        Span<byte> cName = stackalloc byte[IFNAMSIZ];
        Libc.CopyCString(name, cName);
        fixed (byte* p = cName)
            return Libc.IfNameToIndex(p);
    }
}
