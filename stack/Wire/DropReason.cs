namespace Onload.Stack.Wire;

/// <summary>Why the stack dropped a frame. Every drop is counted under one of these in <see cref="StackCounters"/>.</summary>
public enum DropReason
{
    None = 0,

    // Link
    EthernetTruncated,
    EthernetNotForUs,
    EthernetUnknownType,
    EthernetFromSelf,
    EthernetBadSource,

    // ARP (RFC 826)
    ArpTruncated,
    ArpUnsupportedFormat,
    ArpBadOperation,
    ArpNotForUs,
    ArpBogusSender,
    ArpQueueOverflow,
    ArpResolutionFailed,
    /// <summary>An ARP frame reached a stack in driverlink mode, where the kernel answers ARP.</summary>
    ArpInDriverlinkMode,

    // IPv4 (RFC 791, RFC 1122 §3.2.1)
    IpTruncated,
    IpBadVersion,
    IpBadHeaderLength,
    IpBadTotalLength,
    IpBadChecksum,
    IpBadOptions,
    IpNotForUs,
    IpMartianSource,
    IpFragmentDuplicate,
    IpReassemblyOverlap,
    IpReassemblyInconsistent,
    IpReassemblyOversize,
    IpReassemblyTooManyFragments,
    IpReassemblyMemoryFull,
    IpReassemblyNoQueue,
    IpReassemblyTimeout,
    IpMulticastNotJoined,
    IpUnknownProtocol,

    // ICMP (RFC 792)
    IcmpTruncated,
    IcmpBadChecksum,
    IcmpEchoToBroadcast,
    IcmpUnhandledType,
    IcmpRateLimited,
    IcmpErrorNoSocket,

    // IGMP (RFC 2236, RFC 3376)
    IgmpTruncated,
    IgmpBadChecksum,
    IgmpUnhandledType,

    // UDP (RFC 768)
    UdpTruncated,
    UdpBadLength,
    UdpBadChecksum,
    UdpNoPort,
    UdpReceiveBufferFull,
    /// <summary>A datagram or fragment that a socket's queue or reassembly would have held, dropped while fewer than
    /// an eighth of the packet buffers were free: the rest are kept for sending and receiving (Onload's memory
    /// pressure), so sockets that never read cannot take the pool from every other.</summary>
    PacketBuffersLow,

    // TCP (RFC 9293)
    TcpTruncated,
    TcpBadHeaderLength,
    TcpBadChecksum,
    TcpBadOptions,
    TcpNoSocket,
    /// <summary>A segment of a connection handed to the kernel, before the port's frames reach it.</summary>
    TcpHandedOver,
    TcpOutOfWindow,
    TcpPawsRejected,
    TcpListenOverflow,
    /// <summary>To a listener, neither a SYN nor an ACK, or a SYN with FIN.</summary>
    TcpListenBadSegment,
    TcpBadAck,
    /// <summary>An ACK older than SND.UNA - MAX.SND.WND (RFC 5961 §5.2): blind injection, or a very old duplicate.</summary>
    TcpTooOldAck,
    TcpChallengeAckLimited,
    /// <summary>An ICMP error quoting a connection but a sequence number outside SND.UNA..SND.NXT (RFC 5927 §4.1).</summary>
    TcpIcmpOutOfWindow,
    /// <summary>An ICMP error for a connection that TCP takes no action on (TIME_WAIT, a redirect, a path MTU that
    /// would rise, a code a half-open child ignores).</summary>
    TcpIcmpIgnored,

    // Transmit
    TxNoBuffer,
    TxRingFull,
    /// <summary>Sent while the link was down (<see cref="NetStack.SetLinkUp"/>).</summary>
    TxLinkDown,
    /// <summary>Sent while the stack was suspended and its transmit batch was full (<see cref="NetStack.Suspend"/>).</summary>
    TxSuspended,
}
