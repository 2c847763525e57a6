using Onload.Stack.Arp;
using Onload.Stack.Icmp;
using Onload.Stack.Igmp;
using Onload.Stack.Ip;
using Onload.Stack.Tcp;
using Onload.Stack.Timers;
using Onload.Stack.Udp;
using Onload.Stack.Wire;
using Onload.Vnic;

namespace Onload.Stack;

/// <summary>Receives every frame the stack sends or receives, for logs and captures.</summary>
public delegate void FrameTrace(bool transmitted, ReadOnlySpan<byte> frame);

/// <summary>
/// One user-level stack on one VNIC: Ethernet, ARP, IPv4, ICMP and UDP, driven by <see cref="Poll"/>.
/// </summary>
/// <remarks>
/// Single-threaded: the caller serialises every call (later, the process-shared stack lock does). Time and
/// randomness come in through <see cref="IClock"/> and <see cref="IRandomSource"/>, so the same code runs on a real
/// ring and under the simulator's virtual clock. Socket calls return a count or a negated Linux errno, as the
/// kernel's own do. The protocol code is split by concern across the partial files beside this one.
/// </remarks>
public sealed partial class NetStack : IDisposable
{
    private readonly IVnic _vnic;
    private readonly BufferPool _pool;
    private readonly IClock _clock;
    private readonly IRandomSource _random;
    private readonly PacketDescriptor[] _rxBatch;
    private readonly PacketDescriptor[] _txBatch;
    private readonly ArpCache _arp;
    private readonly UdpSocketTable _udp;
    private readonly Ipv4Reassembler _reassembler;
    /// <summary>Room to put a reassembled datagram back in one piece when it must be answered (a large ping).</summary>
    private readonly byte[] _scratch = new byte[65536];
    private readonly Ipv4Address _address;
    private readonly Ipv4Cidr _subnet;
    private readonly MacAddress _mac;
    /// <summary>The driverlink control plane, or null in direct mode.</summary>
    private readonly IStackControl? _control;
    private TokenBucket _icmpErrorLimit;
    private int _txCount;
    private ushort _ipIdentification;
    private long _now;
    private bool _disposed;

    public NetStack(IVnic vnic, StackOptions options, IClock? clock = null, IRandomSource? random = null)
    {
        ArgumentNullException.ThrowIfNull(vnic);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        _vnic = vnic;
        _pool = vnic.Buffers;
        Options = options;
        _clock = clock ?? MonotonicClock.Instance;
        _random = random ?? SystemRandom.Instance;
        _address = options.Address.Address;
        _subnet = options.Address;
        _mac = vnic.MacAddress;
        _control = options.Control;
        _mtu = vnic.Mtu;
        if (_control != null)
        {
            _tcpAcceptedOnPort = new ushort[65536];
            _tcpReleasePending = new bool[65536];
            _tcpConnectPort = new bool[65536];
        }
        _rxBatch = new PacketDescriptor[options.RxBatch];
        _txBatch = new PacketDescriptor[64];
        _arp = new ArpCache(options.ArpEntries, options.ArpQueueTotal);
        _udp = new UdpSocketTable(options.UdpSockets, options.UdpQueueDatagrams);
        // Fragments sit in VNIC buffers: never let reassembly hold more than a quarter of them.
        long reassemblyMemory = Math.Min(options.ReassemblyMemoryBytes, (long)_pool.Count * _pool.BufferSize / 4);
        _reassembler = new Ipv4Reassembler(_pool, options.ReassemblyQueues, options.ReassemblyMaxFragments,
            reassemblyMemory, options.ReassemblyTimeoutNs);
        _groups = new MulticastGroups(options.MulticastGroups, options.MulticastMemberships);
        _tcp = new TcpTable(options.TcpConnections, options.TcpSendBufferBytes, options.TcpReceiveBufferBytes,
            RingExtent(options.TcpSendBufferInitialBytes, options.TcpSendBufferBytes),
            RingExtent(options.TcpReceiveBufferInitialBytes, options.TcpReceiveBufferBytes));
        _arpTimerBase = TcpTimerIds(options);
        _reassemblyTimerBase = _arpTimerBase + options.ArpEntries;
        _igmpTimerBase = _reassemblyTimerBase + options.ReassemblyQueues;
        _timers = new TimerWheel(TimerIds(options), _clock.NowNanoseconds);
        _tcpTimestampOffset = (uint)_random.NextUInt64();
        _isnKey0 = _random.NextUInt64();
        _isnKey1 = _random.NextUInt64();
        _reuseportKey = SipHash.Hash(_isnKey0, _isnKey1, 0x7265_7573_6570_6f72UL, 0); // "reuseport"
        _synCookieKey0 = DeriveSynCookieKey(_isnKey0, _isnKey1, 0);
        _synCookieKey1 = DeriveSynCookieKey(_isnKey0, _isnKey1, 1);
        _mirror = options.ConnectionMirror;
        _mirror?.Attach(_mac, _address, _tcpTimestampOffset);
        _challengeAcks = new TokenBucket(options.TcpChallengeAcksPerSecond, options.TcpChallengeAcksPerSecond);
        if (_pool.BufferSize < EthernetFrame.HeaderLength + vnic.Mtu)
            throw new ArgumentException($"{vnic.Spec}: buffers of {_pool.BufferSize} bytes cannot hold a {vnic.Mtu}-byte MTU frame");
        _icmpErrorLimit = new TokenBucket(options.IcmpErrorsPerSecond, options.IcmpErrorBurst);
        _ipIdentification = (ushort)_random.NextUInt64();
        _now = _clock.NowNanoseconds;
        if (options.GratuitousArp && _control == null)
        {
            SendGratuitousArp();
            Flush();
        }
    }

    public StackOptions Options { get; }
    public StackCounters Counters { get; } = new();
    public Ipv4Address Address => _address;
    public MacAddress MacAddress => _mac;
    public IVnic Vnic => _vnic;
    public ArpCache Neighbours => _arp;
    public UdpSocketTable UdpSockets => _udp;
    public Ipv4Reassembler Reassembly => _reassembler;

    /// <summary>Set to see every frame in and out (a capture or a log); null costs one test per frame.</summary>
    public FrameTrace? Trace { get; set; }

    /// <summary>When the stack next needs <see cref="Poll"/> even if no frame arrives (clock nanoseconds), or <see cref="long.MaxValue"/>.</summary>
    public long NextTimerNs => _timers.NextExpiry;

    /// <summary>
    /// Applies waiting control events (driverlink mode), takes one batch of frames from the VNIC and processes
    /// them, runs timers that are due, and sends what that produced in one batch. Returns the number of frames
    /// received. While <see cref="Suspended"/> it receives and sends nothing, but timers still run.
    /// </summary>
    public int Poll()
    {
        _now = _clock.NowNanoseconds;
        if (_control != null && _control.EventsPending(_now))
            _control.ApplyEvents(this);
        int n = _suspended ? 0 : _vnic.Receive(_rxBatch);
        for (int i = 0; i < n; i++)
        {
            ref var d = ref _rxBatch[i];
            Counters.RxFrames++;
            if (!Input(in d))
                _pool.Release(d.Buffer);
        }
        if (_now >= NextTimerNs)
            RunTimers();
        Flush();
        return n;
    }

    /// <summary>Sends every frame queued for transmission in one batch.</summary>
    public void Flush()
    {
        if (_txCount == 0)
            return;
        if (_txBlocked)
        {
            FlushBlocked();
            return;
        }
        int sent = _vnic.Transmit(_txBatch.AsSpan(0, _txCount));
        for (int i = sent; i < _txCount; i++)
        {
            Counters.Count(DropReason.TxRingFull);
            _pool.Release(_txBatch[i].Buffer);
        }
        _txCount = 0;
    }

    /// <summary>Processes one received frame. Returns true when the frame's buffer was kept (queued on a socket
    /// or reused for a reply), false when the caller should release it.</summary>
    private bool Input(in PacketDescriptor d)
    {
        var frame = _pool.Span(in d);
        Trace?.Invoke(false, frame);
        if (!EthernetFrame.IsLongEnough(frame.Length))
            return Dropped(DropReason.EthernetTruncated);
        var eth = new EthernetFrame(frame);
        var dst = eth.Destination;
        // IPv4 multicast MACs pass on to IP, which knows the groups joined.
        if (dst != _mac && !dst.IsBroadcast && (dst.Value & 0xFFFF_FF80_0000UL) != 0x0100_5E00_0000UL)
            return Dropped(DropReason.EthernetNotForUs);
        var src = eth.Source;
        if (src == _mac)
            return Dropped(DropReason.EthernetFromSelf);
        if (src.IsGroup)
            return Dropped(DropReason.EthernetBadSource);
        return eth.EtherType switch
        {
            EtherType.Ipv4 => Ipv4Input(d, frame, linkBroadcast: dst.IsGroup),
            EtherType.Arp => ArpInput(d.Buffer, frame),
            _ => Dropped(DropReason.EthernetUnknownType),
        };
    }

    /// <summary>Fewer than an eighth of the packet buffers free: received frames that would be held (a socket's queue,
    /// reassembly) are dropped, keeping the rest for sending and for the frames that pass straight through.</summary>
    private bool PacketBuffersLow => _pool.Available < _pool.Count / 8;

    private bool Dropped(DropReason reason)
    {
        Counters.Count(reason);
        return false;
    }

    private int AllocateTx()
    {
        if (_pool.TryAllocate(out int buffer))
            return buffer;
        Counters.Count(DropReason.TxNoBuffer);
        return -1;
    }

    private void Transmit(int buffer, int length)
    {
        if (_txCount == _txBatch.Length)
        {
            Flush();
            if (_txCount == _txBatch.Length)
            {
                // Suspended, the batch full: this frame goes (TCP sends it again).
                _pool.Release(buffer);
                Counters.Count(DropReason.TxSuspended);
                return;
            }
        }
        Trace?.Invoke(true, _pool.Span(buffer)[..length]);
        _txBatch[_txCount++] = new PacketDescriptor(buffer, length);
        Counters.TxFrames++;
    }

    public void Dispose()
    {
        if (_disposed)
            return;
        _disposed = true;
        Flush();
        DropQueuedTransmits(DropReason.TxSuspended);
        for (int s = 0; s < _udp.Capacity; s++)
            if (_udp.IsValid(s))
                UdpClose(s);
        if (_control != null)
            ReleaseAllReserved();
        _tcp.Dispose();
        for (int i = 0; i < _arp.Capacity; i++)
            if (_arp[i].State != NeighbourState.Free)
                DiscardNeighbour(i, countAsFailure: false);
        _arp.Dispose();
        _udp.Dispose();
        _reassembler.Dispose();
        _groups.Dispose();
        _timers.Dispose(); // last: closing sockets and dropping neighbours cancel their timers
    }
}
