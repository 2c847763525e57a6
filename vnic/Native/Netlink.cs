using System.Runtime.InteropServices;

namespace Onload.Vnic.Native;

/// <summary>
/// The rtnetlink ABI: netlink(7) and rtnetlink(7), with values from uapi/linux/netlink.h, rtnetlink.h,
/// if_link.h, if_addr.h and neighbour.h. The fixed headers' sizes are given here; their fields are read at their
/// offsets by the views in <c>Onload.Vnic.Netlink</c>.
/// </summary>
internal static class Netlink
{
    // include/linux/socket.h, uapi/linux/netlink.h
    public const int AF_NETLINK = 16;
    public const int NETLINK_ROUTE = 0;
    public const int SOL_NETLINK = 270;
    public const int NETLINK_ADD_MEMBERSHIP = 1;

    // asm-generic/socket.h
    public const int SOL_SOCKET = 1;
    public const int SO_RCVBUF = 8;
    public const int SO_RCVBUFFORCE = 33;

    // recv(2): report the datagram's real length even when the buffer was shorter.
    public const int MSG_TRUNC = 0x20;

    // struct nlmsghdr { u32 nlmsg_len; u16 nlmsg_type; u16 nlmsg_flags; u32 nlmsg_seq; u32 nlmsg_pid; }
    public const int NlMsgHdrSize = 16;
    public const int NlMsgAlign = 4;

    public const ushort NLM_F_REQUEST = 0x01;
    public const ushort NLM_F_MULTI = 0x02;
    public const ushort NLM_F_ACK = 0x04;
    public const ushort NLM_F_DUMP_INTR = 0x10;
    public const ushort NLM_F_ROOT = 0x100;
    public const ushort NLM_F_MATCH = 0x200;
    public const ushort NLM_F_DUMP = NLM_F_ROOT | NLM_F_MATCH;

    public const ushort NLMSG_NOOP = 1;
    public const ushort NLMSG_ERROR = 2;
    public const ushort NLMSG_DONE = 3;
    public const ushort NLMSG_OVERRUN = 4;

    // uapi/linux/rtnetlink.h: message types
    public const ushort RTM_NEWLINK = 16;
    public const ushort RTM_DELLINK = 17;
    public const ushort RTM_GETLINK = 18;
    public const ushort RTM_NEWADDR = 20;
    public const ushort RTM_DELADDR = 21;
    public const ushort RTM_GETADDR = 22;
    public const ushort RTM_NEWROUTE = 24;
    public const ushort RTM_DELROUTE = 25;
    public const ushort RTM_GETROUTE = 26;
    public const ushort RTM_NEWNEIGH = 28;
    public const ushort RTM_DELNEIGH = 29;
    public const ushort RTM_GETNEIGH = 30;

    // uapi/linux/rtnetlink.h: enum rtnetlink_groups (joined with NETLINK_ADD_MEMBERSHIP, which takes the number)
    public const int RTNLGRP_LINK = 1;
    public const int RTNLGRP_NEIGH = 3;
    public const int RTNLGRP_IPV4_IFADDR = 5;
    public const int RTNLGRP_IPV4_ROUTE = 7;

    // struct rtattr { u16 rta_len; u16 rta_type; }; NLA_F_NESTED and NLA_F_NET_BYTEORDER ride in the type's top bits.
    public const int RtAttrHeaderSize = 4;
    public const ushort NLA_TYPE_MASK = 0x3FFF;

    // struct ifinfomsg { u8 family; u8 pad; u16 type; s32 index; u32 flags; u32 change; }
    public const int IfInfoMsgSize = 16;
    public const ushort IFLA_ADDRESS = 1;
    public const ushort IFLA_IFNAME = 3;
    public const ushort IFLA_MTU = 4;

    // uapi/linux/if.h
    public const uint IFF_UP = 0x1;
    public const uint IFF_RUNNING = 0x40;
    public const uint IFF_LOWER_UP = 0x10000;

    // struct ifaddrmsg { u8 family; u8 prefixlen; u8 flags; u8 scope; u32 index; }
    public const int IfAddrMsgSize = 8;
    public const ushort IFA_ADDRESS = 1;
    public const ushort IFA_LOCAL = 2;

    // struct rtmsg { u8 family, dst_len, src_len, tos, table, protocol, scope, type; u32 flags; }
    public const int RtMsgSize = 12;
    public const ushort RTA_DST = 1;
    public const ushort RTA_OIF = 4;
    public const ushort RTA_GATEWAY = 5;
    public const ushort RTA_PRIORITY = 6;
    public const ushort RTA_TABLE = 15;
    public const byte RT_TABLE_MAIN = 254;

    // struct ndmsg { u8 family; u8 pad1; u16 pad2; s32 ifindex; u16 state; u8 flags; u8 type; }
    public const int NdMsgSize = 12;
    public const ushort NDA_DST = 1;
    public const ushort NDA_LLADDR = 2;
    /// <summary>ndm_flags: "use" the entry, as a sent packet would (neigh_event_send): resolve it if need be.</summary>
    public const byte NTF_USE = 0x01;
    public const ushort NLM_F_CREATE = 0x400;
}

/// <summary><c>struct sockaddr_nl</c> from netlink(7).</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct SockAddrNl
{
    public ushort Family;
    public ushort Pad;
    /// <summary>Port id: 0 is the kernel.</summary>
    public uint Pid;
    public uint Groups;
}
