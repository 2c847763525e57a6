using System.Runtime.InteropServices;

namespace Onload.Vnic.Native;

/// <summary>
/// <c>struct ifreq</c> (uapi/linux/if.h): a 16-byte interface name followed by a 24-byte union, 40 bytes on LP64.
/// Only the union members the backends use are laid out.
/// </summary>
[StructLayout(LayoutKind.Explicit, Size = 40)]
internal unsafe struct IfReq
{
    [FieldOffset(0)] public fixed byte Name[LinuxConstants.IFNAMSIZ];

    /// <summary>ifr_flags (short) for SIOCGIFFLAGS/SIOCSIFFLAGS and TUNSETIFF.</summary>
    [FieldOffset(16)] public short Flags;

    /// <summary>ifr_mtu for SIOCGIFMTU.</summary>
    [FieldOffset(16)] public int Mtu;

    /// <summary>ifr_hwaddr.sa_family for SIOCGIFHWADDR: the ARPHRD_* link type.</summary>
    [FieldOffset(16)] public ushort HwAddrFamily;

    /// <summary>ifr_hwaddr.sa_data for SIOCGIFHWADDR: the first six bytes are an Ethernet address.</summary>
    [FieldOffset(18)] public fixed byte HwAddrData[14];

    public static IfReq ForName(string ifname)
    {
        var r = default(IfReq);
        Libc.CopyCString(ifname, new Span<byte>(r.Name, LinuxConstants.IFNAMSIZ));
        return r;
    }

    /// <summary>The name as the kernel filled it in (TUNSETIFF writes back the name it chose).</summary>
    public string NameString()
    {
        fixed (byte* p = Name)
            return Marshal.PtrToStringAnsi((nint)p) ?? "";
    }
}

/// <summary>The interface ioctls (uapi/linux/sockios.h) the backends use, on any socket of the interface's namespace.</summary>
internal static unsafe class InterfaceIoctl
{
    public const nuint SIOCGIFFLAGS = 0x8913;
    public const nuint SIOCSIFFLAGS = 0x8914;
    public const nuint SIOCGIFMTU = 0x8921;
    public const nuint SIOCGIFHWADDR = 0x8927;

    /// <summary>Returns 0 or errno.</summary>
    public static int GetMtu(int fd, string ifname, out int mtu)
    {
        var r = IfReq.ForName(ifname);
        mtu = 0;
        if (Libc.Ioctl(fd, SIOCGIFMTU, &r) != 0)
            return Errno.Last;
        mtu = r.Mtu;
        return 0;
    }

    /// <summary>Returns 0 or errno; <paramref name="linkType"/> is the ARPHRD_* type of the hardware address.</summary>
    public static int GetHardwareAddress(int fd, string ifname, out MacAddress mac, out ushort linkType)
    {
        var r = IfReq.ForName(ifname);
        mac = MacAddress.Zero;
        linkType = 0;
        if (Libc.Ioctl(fd, SIOCGIFHWADDR, &r) != 0)
            return Errno.Last;
        linkType = r.HwAddrFamily;
        mac = MacAddress.Read(new ReadOnlySpan<byte>(r.HwAddrData, 6));
        return 0;
    }

    /// <summary>Sets IFF_UP if it is not set yet (SIOCGIFFLAGS, then SIOCSIFFLAGS). Returns 0 or errno.</summary>
    public static int BringUp(int fd, string ifname)
    {
        var r = IfReq.ForName(ifname);
        if (Libc.Ioctl(fd, SIOCGIFFLAGS, &r) != 0)
            return Errno.Last;
        if ((r.Flags & LinuxConstants.IFF_UP) != 0)
            return 0;
        r.Flags |= LinuxConstants.IFF_UP;
        return Libc.Ioctl(fd, SIOCSIFFLAGS, &r) != 0 ? Errno.Last : 0;
    }
}
