using Onload.Stack.Wire;

namespace Onload.Stack.Icmp;

/// <summary>
/// How a received ICMP error becomes an errno, and whether it is "hard" (reported to a socket without IP_RECVERR):
/// Linux's icmp_err_convert table (net/ipv4/icmp.c) and the cases of __udp4_lib_err.
/// </summary>
public static class IcmpErrors
{
    private static readonly (Errno Errno, bool Hard)[] Unreachable =
    [
        (Errno.ENETUNREACH, false),  // 0 network unreachable
        (Errno.EHOSTUNREACH, false), // 1 host unreachable
        (Errno.ENOPROTOOPT, true),   // 2 protocol unreachable
        (Errno.ECONNREFUSED, true),  // 3 port unreachable
        (Errno.EMSGSIZE, false),     // 4 fragmentation needed (path MTU, not an error to the socket)
        (Errno.EOPNOTSUPP, false),   // 5 source route failed
        (Errno.ENETUNREACH, true),   // 6 network unknown
        (Errno.EHOSTDOWN, true),     // 7 host unknown
        (Errno.ENONET, true),        // 8 host isolated
        (Errno.ENETUNREACH, true),   // 9 network administratively prohibited
        (Errno.EHOSTUNREACH, true),  // 10 host administratively prohibited
        (Errno.ENETUNREACH, false),  // 11 network unreachable for TOS
        (Errno.EHOSTUNREACH, false), // 12 host unreachable for TOS
        (Errno.EHOSTUNREACH, true),  // 13 communication administratively prohibited
        (Errno.EHOSTUNREACH, true),  // 14 host precedence violation
        (Errno.EHOSTUNREACH, true),  // 15 precedence cutoff in effect
    ];

    public static (int Errno, bool Hard) ToErrno(byte type, byte code) => type switch
    {
        IcmpType.DestinationUnreachable when code < Unreachable.Length =>
            ((int)Unreachable[code].Errno, Unreachable[code].Hard),
        IcmpType.DestinationUnreachable => ((int)Errno.EHOSTUNREACH, false),
        IcmpType.ParameterProblem => ((int)Errno.EPROTO, true),
        IcmpType.TimeExceeded => ((int)Errno.EHOSTUNREACH, false),
        _ => ((int)Errno.EHOSTUNREACH, false),
    };
}
