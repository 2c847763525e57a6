using Onload.Stack.Tcp;
using Onload.Stack.Wire;

namespace Onload.Stack;

/// <summary>How a stack is configured. Defaults follow Linux's where Linux has one (noted per field).</summary>
public sealed record StackOptions
{
    /// <summary>The address the stack owns in direct mode, with its subnet (<c>--addr</c>).</summary>
    public required Ipv4Cidr Address { get; init; }

    /// <summary>The default gateway for destinations outside the subnet; none means they are unreachable.</summary>
    public Ipv4Address? Gateway { get; init; }

    /// <summary>TTL of sent packets (net.ipv4.ip_default_ttl = 64).</summary>
    public byte DefaultTtl { get; init; } = 64;

    /// <summary>Frames taken from the VNIC per poll.</summary>
    public int RxBatch { get; init; } = 32;

    /// <summary>Neighbour entries (bounded; the oldest unused entry is evicted when full).</summary>
    public int ArpEntries { get; init; } = 256;

    /// <summary>How long a confirmed neighbour stays reachable (base_reachable_time_ms = 30 s).</summary>
    public long ArpReachableNs { get; init; } = 30_000_000_000;

    /// <summary>Time between ARP requests while resolving (retrans_time_ms = 1 s).</summary>
    public long ArpRetransmitNs { get; init; } = 1_000_000_000;

    /// <summary>ARP requests before resolution fails (mcast_solicit = 3).</summary>
    public int ArpMaxProbes { get; init; } = 3;

    /// <summary>Frames held per unresolved neighbour; the oldest goes when full (unres_qlen, bounded). Enough for
    /// the 45 fragments of a largest UDP datagram.</summary>
    public int ArpQueuePerEntry { get; init; } = 64;

    /// <summary>Frames held for all unresolved neighbours together.</summary>
    public int ArpQueueTotal { get; init; } = 256;

    /// <summary>Send a gratuitous ARP when the stack starts, so neighbours that cached an old MAC update (never in
    /// driverlink mode, where the kernel owns the address).</summary>
    public bool GratuitousArp { get; init; } = true;

    /// <summary>
    /// The control plane of driverlink mode, or null for direct mode. With it, local ports are reserved through it
    /// (the kernel picks ephemeral ports), neighbours are resolved through it instead of by ARP, and the stack never
    /// sends an ARP frame.
    /// </summary>
    public IStackControl? Control { get; init; }

    /// <summary>
    /// Where the stack keeps a copy of its TCP connections' state for another process (the driverlink daemon) to
    /// close them if this one dies (<see cref="Tcp.ConnectionMirror"/>); null, the default, keeps none. It must
    /// have at least <see cref="TcpConnections"/> records and belong to one stack only.
    /// </summary>
    public ConnectionMirror? ConnectionMirror { get; init; }

    /// <summary>Datagrams being reassembled at once.</summary>
    public int ReassemblyQueues { get; init; } = 256;

    /// <summary>Fragments one datagram may have (a 65,535-byte datagram over Ethernet needs 45).</summary>
    public int ReassemblyMaxFragments { get; init; } = 64;

    /// <summary>Buffer memory reassembly may hold (net.ipv4.ipfrag_high_thresh = 4 MiB), and never more than a
    /// quarter of the VNIC's buffer pool.</summary>
    public long ReassemblyMemoryBytes { get; init; } = 4L << 20;

    /// <summary>How long a datagram may take to arrive whole (net.ipv4.ipfrag_time = 30 s).</summary>
    public long ReassemblyTimeoutNs { get; init; } = 30_000_000_000;

    /// <summary>Multicast groups the stack can belong to, and socket memberships in all.</summary>
    public int MulticastGroups { get; init; } = 64;

    public int MulticastMemberships { get; init; } = 256;

    /// <summary>TCP connections and listeners the stack can hold.</summary>
    public int TcpConnections { get; init; } = 256;

    /// <summary>The most a connection's send and receive buffers grow to: each row's rings, powers of two
    /// (net.ipv4.tcp_wmem max 4 MiB; tcp_rmem max 6 MiB, rounded down to a power of two). Virtual memory
    /// only: a ring's pages are touched as its buffer grows into them.</summary>
    public int TcpSendBufferBytes { get; init; } = 4 << 20;

    public int TcpReceiveBufferBytes { get; init; } = 4 << 20;

    /// <summary>Where the buffers start (tcp_wmem and tcp_rmem defaults, 16 KiB and 128 KiB): the send buffer grows
    /// with cwnd, the receive buffer by auto-tuning, each up to its ring; SO_SNDBUF/SO_RCVBUF fix them instead.</summary>
    public int TcpSendBufferInitialBytes { get; init; } = 16 * 1024;

    public int TcpReceiveBufferInitialBytes { get; init; } = 128 * 1024;

    /// <summary>Receive buffer auto-tuning (net.ipv4.tcp_moderate_rcvbuf = 1).</summary>
    public bool TcpModerateRcvbuf { get; init; } = true;

    /// <summary>Maximum segment lifetime; TIME_WAIT lasts twice this (Linux: 60 s of TIME_WAIT).</summary>
    public long TcpMslNs { get; init; } = 30_000_000_000;

    /// <summary>SYN retransmissions before connect fails with ETIMEDOUT (net.ipv4.tcp_syn_retries = 6).</summary>
    public int TcpSynRetries { get; init; } = 6;

    /// <summary>SYN-ACK retransmissions (net.ipv4.tcp_synack_retries = 5).</summary>
    public int TcpSynAckRetries { get; init; } = 5;

    /// <summary>Retransmissions of data before the connection fails (net.ipv4.tcp_retries2 = 15).</summary>
    public int TcpRetries { get; init; } = 15;

    /// <summary>Initial retransmission timeout (RFC 6298 §2.1: 1 s) and its bounds (Linux: 200 ms, 120 s).</summary>
    public long TcpInitialRtoNs { get; init; } = 1_000_000_000;

    public long TcpMinRtoNs { get; init; } = 200_000_000;

    public long TcpMaxRtoNs { get; init; } = 120_000_000_000;

    /// <summary>Delayed ACK timeout (Linux: 40 ms minimum).</summary>
    public long TcpDelayedAckNs { get; init; } = 40_000_000;

    /// <summary>How long an orphaned connection waits in FIN_WAIT_2 (net.ipv4.tcp_fin_timeout = 60 s).</summary>
    public long TcpFinTimeoutNs { get; init; } = 60_000_000_000;

    /// <summary>Keepalive defaults (tcp_keepalive_time 7200 s, _intvl 75 s, _probes 9).</summary>
    public long TcpKeepIdleNs { get; init; } = 7_200_000_000_000;

    public long TcpKeepIntervalNs { get; init; } = 75_000_000_000;

    public int TcpKeepCount { get; init; } = 9;

    /// <summary>Congestion control of new connections (net.ipv4.tcp_congestion_control = cubic); TCP_CONGESTION
    /// changes it per socket.</summary>
    public CongestionControl TcpCongestionControl { get; init; } = CongestionControl.Cubic;

    /// <summary>Offer and accept SACK (net.ipv4.tcp_sack = 1).</summary>
    public bool TcpSack { get; init; } = true;

    /// <summary>Answer a SYN that finds the listener's SYN queue full with a SYN cookie instead of dropping it
    /// (net.ipv4.tcp_syncookies = 1; RFC 4987 §3.6).</summary>
    public bool TcpSyncookies { get; init; } = true;

    /// <summary>Challenge ACKs per second (RFC 5961 §7; net.ipv4.tcp_challenge_ack_limit = 1000).</summary>
    public int TcpChallengeAcksPerSecond { get; init; } = 1000;

    /// <summary>UDP sockets the stack can hold.</summary>
    public int UdpSockets { get; init; } = 256;

    /// <summary>Datagrams one UDP socket's receive queue holds at most.</summary>
    public int UdpQueueDatagrams { get; init; } = 256;

    /// <summary>SO_RCVBUF default (net.core.rmem_default = 212992), charged per buffer held, like skb truesize.</summary>
    public int UdpReceiveBufferBytes { get; init; } = 212_992;

    /// <summary>net.ipv4.ip_local_port_range = 32768 60999.</summary>
    public ushort EphemeralPortFirst { get; init; } = 32768;

    public ushort EphemeralPortLast { get; init; } = 60999;

    /// <summary>ICMP errors per second (net.ipv4.icmp_msgs_per_sec = 1000) and burst (icmp_msgs_burst = 50).</summary>
    public int IcmpErrorsPerSecond { get; init; } = 1000;

    public int IcmpErrorBurst { get; init; } = 50;

    public void Validate()
    {
        if (Address.Address.IsAny || Address.Address.IsMulticast || Address.Address.IsLimitedBroadcast)
            throw new ArgumentException($"{Address} cannot be a host's address");
        if (Address.PrefixLength is < 1 or > 32)
            throw new ArgumentException($"{Address}: prefix length must be 1..32");
        if (Gateway is { } g && !Address.Contains(g))
            throw new ArgumentException($"gateway {g} is not inside {Address}");
        if (EphemeralPortFirst == 0 || EphemeralPortLast < EphemeralPortFirst)
            throw new ArgumentException("ephemeral port range must be non-empty and not include 0");
        ArgumentOutOfRangeException.ThrowIfLessThan(RxBatch, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(ArpEntries, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(UdpSockets, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(UdpQueueDatagrams, 1);
        if (ConnectionMirror is { } mirror && mirror.Records < TcpConnections)
            throw new ArgumentException($"the connection mirror has {mirror.Records} records for {TcpConnections} TCP connections");
    }
}
