using System.Diagnostics;
using System.Globalization;
using System.Numerics;
using System.Runtime.InteropServices;
using Onload.Vnic.Native;
using static Onload.Vnic.Native.IfXdp;
using static Onload.Vnic.Native.LinuxConstants;

namespace Onload.Vnic.AfXdp;

/// <summary>
/// The <c>af_xdp:IF[:QUEUE]</c> backend: an AF_XDP socket on one RX queue of an interface, with its own XDP program
/// that steers to it only the frames for the stack's address (direct mode, <see cref="SteeringProgram"/>) or only the
/// TCP and UDP flows added with <see cref="AddFilter"/> (filter mode, <see cref="FlowFilterProgram"/>); the kernel
/// keeps the rest. Raw system calls, no libxdp or libbpf (Documentation/networking/af_xdp.rst).
/// </summary>
/// <remarks>
/// <para><b>Who owns the program.</b> <see cref="Open"/> owns everything: in filter mode an
/// <see cref="XdpFilterSteering"/> (program, maps, link) beside its socket. <see cref="OpenOnSocket"/> owns only the
/// socket, its UMEM and rings: the steering belongs to another process (onload-driverd), which created the socket
/// with <see cref="CreateSocket"/>, passed it over, and puts it in its XSKMAP once this side has bound it.</para>
/// </remarks>
/// <remarks>
/// <para><b>The UMEM is the buffer pool.</b> The packet area registered with the kernel (XDP_UMEM_REG) is one
/// shared anonymous mapping of <c>BufferCount</c> chunks; <see cref="Buffers"/> is a <see cref="BufferPool"/> over it, buffer
/// <c>i</c> starting <see cref="IfXdp.XDP_PACKET_HEADROOM"/> (256) bytes into chunk <c>i</c>, which is where the
/// kernel puts a received frame (aligned chunks, no extra headroom: the RX descriptor's address is always
/// <c>i * chunk + 256</c>). A received frame is handed to the stack in place and a frame the stack sends goes on
/// the TX ring in place: no copy in user space. (In copy mode the kernel still copies between its skb and the UMEM.)</para>
/// <para><b>Chunks</b> are 2048 bytes, the smallest the kernel takes, when the interface's MTU fits after the
/// headroom (1792 bytes: 1500-byte MTU plus Ethernet and a VLAN tag), else a page (4096). Half the memory of 4096
/// and two frames per page; the larger chunk is only needed for MTUs above 1774.</para>
/// <para><b>Buffer ownership</b>: free in the pool; lent to the kernel on the fill ring (then back on the RX ring and
/// owned by the caller of <see cref="Receive"/>); or lent to the kernel on the TX ring (then back on the completion
/// ring and released to the pool). At most half the pool (and at most the fill ring's size) is kept on the fill
/// ring, so the stack always has buffers to send with.</para>
/// <para>Single-threaded, like the stack that drives it; nothing allocates per frame.</para>
/// </remarks>
public sealed unsafe class AfXdpVnic : IVnic
{
    /// <summary>Receive calls between reads of XDP_STATISTICS when nothing suggests a loss.</summary>
    private const int StatisticsEveryPolls = 1024;
    private const int IdlePollsPerKick = 64;
    private const int DryPollsPerStatistics = 64;

    /// <summary>How long Open retries a bind or an attach that finds the queue or the interface busy: the previous
    /// owner's socket is released by a kernel work item shortly after its process dies (MACHINE-NOTES.md).</summary>
    private static readonly TimeSpan BusyRetry = XdpAttach.BusyRetry;

    /// <summary>Refill the fill ring once this many of its target entries are missing (a quarter of the target if
    /// that is less).</summary>
    private const int RefillBatch = 16;

    private const int GroupsMapEntries = 256;

    // Where a buffer is, as far as the kernel is concerned (one byte per buffer).
    private const byte WithUs = 0;
    private const byte OnFillRing = 1;
    private const byte OnTxRing = 2;

    private readonly int _chunkSize;
    private readonly int _chunkShift;
    private readonly int _fillTarget;
    private readonly int _maxTxFrame;
    private readonly string _ifName;
    private byte* _umem;
    private nuint _umemLength;
    private byte* _where;
    private int _xsk = -1;
    // Direct mode's program and maps; filter mode's are in _steering; a VNIC on another's socket has neither.
    private int _xsksMap = -1;
    private int _groupsMap = -1;
    private int _prog = -1;
    private int _link = -1;
    private XdpFilterSteering? _steering;
    private XskRing _fill;
    private XskRing _completion;
    private XskRing _rx;
    private XskRing _tx;
    private int _onFill;
    private int _onTx;
    private int _pollsSinceStatistics;
    private int _idlePollsSinceKick;
    private bool _fillWasDry;
    private bool _kickPending;
    private bool _disposed;
    private XdpStatistics _statistics;

    private AfXdpVnic(string spec, string ifName, int ifIndex, int queue, MacAddress mac, int mtu, uint localIpv4,
        int chunkSize, int bufferCount, int ringSize, bool filterMode, int maxFilters)
    {
        FilterMode = filterMode;
        MaxFilters = maxFilters;
        Spec = spec;
        _ifName = ifName;
        IfIndex = ifIndex;
        Queue = queue;
        MacAddress = mac;
        LocalIpv4 = localIpv4;
        _chunkSize = chunkSize;
        _chunkShift = BitOperations.Log2((uint)chunkSize);
        int bufferSize = chunkSize - XDP_PACKET_HEADROOM;
        Mtu = Math.Min(mtu, bufferSize - ETH_HLEN);
        _maxTxFrame = Mtu + ETH_HLEN;
        RingSize = ringSize;
        FillRingSize = 2 * ringSize;
        _fillTarget = Math.Min(FillRingSize, bufferCount / 2);
        BufferCount = bufferCount;
    }

    public string Spec { get; }
    public MacAddress MacAddress { get; }

    /// <summary>The interface's MTU, capped at what a chunk holds after the kernel's headroom.</summary>
    public int Mtu { get; }

    public BufferPool Buffers { get; private set; } = null!;
    public VnicCounters Counters { get; } = new();

    /// <summary>The AF_XDP socket: polls readable when the RX ring has frames.</summary>
    public int WaitHandle => _xsk;

    public int IfIndex { get; }

    /// <summary>The RX queue of the interface this socket is bound to (and its index in the XSKMAP).</summary>
    public int Queue { get; }

    /// <summary>The address the XDP program steers to us in direct mode (host byte order); in filter mode what
    /// <see cref="VnicOptions.LocalIpv4"/> said, or 0.</summary>
    public uint LocalIpv4 { get; }

    /// <summary>Whether the program steers only added flows (<see cref="VnicOptions.FilterMode"/>); always true on a
    /// socket from elsewhere (<see cref="OpenOnSocket"/>), whose owner's <see cref="XdpFilterSteering"/> feeds it.</summary>
    public bool FilterMode { get; }

    /// <summary>Capacity of the filters map in filter mode; 0 in direct mode and on a socket from elsewhere (whose
    /// filters are the steering owner's).</summary>
    public int MaxFilters { get; }

    /// <summary>Filters in the map now (0 where this VNIC has no filters map).</summary>
    public int FilterCount => _steering?.FilterCount ?? 0;

    /// <summary>Whether the kernel bound the socket in zero-copy mode (the NIC's DMA writes into the UMEM).</summary>
    public bool ZeroCopy { get; private set; }

    /// <summary>Whether the XDP program runs in the driver (native) rather than on the skb path (generic); false on
    /// a socket from elsewhere (the program is not ours to know).</summary>
    public bool NativeXdp { get; private set; }

    /// <summary>"copy, drv", "zero-copy, drv", "copy, skb": socket mode, then where the XDP program runs.</summary>
    public string Mode => (ZeroCopy ? "zero-copy" : "copy") + (NativeXdp ? ", drv" : ", skb");

    /// <summary>Bytes per UMEM chunk (2048 or a page).</summary>
    public int ChunkSize => _chunkSize;

    /// <summary>Slots in the RX and TX rings.</summary>
    public int RingSize { get; }

    /// <summary>Slots in the fill and completion rings (twice <see cref="RingSize"/>).</summary>
    public int FillRingSize { get; }

    /// <summary>Buffers lent to the kernel on the fill ring right now (not in <see cref="BufferPool.Available"/>).</summary>
    public int BuffersOnFillRing => _onFill;

    /// <summary>Buffers sent and not yet completed.</summary>
    public int BuffersInFlight => _onTx;

    /// <inheritdoc/>
    public int TxPending()
    {
        ReapCompletions();
        return _onTx;
    }

    private int BufferCount { get; }

    /// <summary>The kernel's running totals as last read (<see cref="ReadKernelStatistics"/>).</summary>
    public XdpStatistics KernelStatistics => _statistics;

    /// <summary>Times Open slept because the queue or the interface's XDP hook was busy (a previous owner dying).</summary>
    public int OpenBusyRetries { get; private set; }

    /// <summary>Descriptors from the kernel that named no buffer we lent it, or a received frame that does not start
    /// where its buffer does (never expected; counted and skipped).</summary>
    public long BadDescriptors { get; private set; }

    /// <summary>
    /// Opens <c>IF[:QUEUE]</c> (queue 0 by default) in the calling thread's network namespace: loads and attaches
    /// the steering program, creates the socket and its UMEM, binds (zero-copy if the driver can, else copy).
    /// </summary>
    /// <exception cref="ArgumentException">Bad spec or options, or no <see cref="VnicOptions.LocalIpv4"/> in direct mode.</exception>
    /// <exception cref="IOException">A system call failed; the message names it and errno.</exception>
    public static AfXdpVnic Open(string nameAndQueue, VnicOptions options)
    {
        ArgumentNullException.ThrowIfNull(nameAndQueue);
        ArgumentNullException.ThrowIfNull(options);
        string spec = "af_xdp:" + nameAndQueue;
        var (ifname, queue) = ParseNameAndQueue(spec, nameAndQueue);
        uint local = options.LocalIpv4 ?? 0;
        if (!options.FilterMode && options.LocalIpv4 is null)
            throw new ArgumentException($"{spec}: af_xdp needs VnicOptions.LocalIpv4, the stack's address, which its XDP program steers to the socket", nameof(options));
        CheckSizes(spec, options);
        if (options.FilterMode && options.MaxFilters < 1)
            throw new ArgumentException($"{spec}: MaxFilters {options.MaxFilters} is below 1", nameof(options));

        int ifIndex = NetInterface.Index(spec, ifname);
        var (mac, mtu) = ReadInterface(spec, ifname);
        int chunk = ChooseChunkSize(spec, mtu, options.BufferSize);

        var vnic = new AfXdpVnic(spec, ifname, ifIndex, queue, mac, mtu, local, chunk, options.BufferCount, options.RingSize,
            options.FilterMode, options.FilterMode ? options.MaxFilters : 0);
        try
        {
            // Program and maps, socket, bind, the socket into the XSKMAP, attach: in this order since the backend was
            // written, so a busy queue is reported before a taken XDP hook.
            if (options.FilterMode)
                vnic._steering = XdpFilterSteering.Create(spec, ifname, ifIndex, options.MaxFilters, queue + 1);
            else
                vnic.CreateMapsAndProgram();
            vnic._xsk = NetInterface.OpenSocket(spec, AF_XDP, SOCK_RAW);
            vnic.SetUpUmemAndRings();
            vnic.Bind();
            vnic.InsertIntoXskMap();
            vnic.Attach();
            return vnic;
        }
        catch
        {
            vnic.Dispose();
            throw;
        }
    }

    /// <summary>
    /// socket(AF_XDP, SOCK_RAW | SOCK_CLOEXEC): a socket for <see cref="OpenOnSocket"/>, in the calling thread's
    /// network namespace, which is the one its bind looks the interface up in. Needs CAP_NET_RAW.
    /// </summary>
    /// <returns>The fd; the caller owns it.</returns>
    /// <exception cref="IOException">The message says why (no CAP_NET_RAW, no AF_XDP in this kernel, errno).</exception>
    public static int CreateSocket() => NetInterface.OpenSocket("af_xdp", AF_XDP, SOCK_RAW);

    /// <summary>
    /// Opens <c>IF[:QUEUE]</c> on an AF_XDP socket created elsewhere (by <see cref="CreateSocket"/>, e.g. in a daemon
    /// that passed it over SCM_RIGHTS): registers the UMEM, maps the four rings and binds to the queue (zero-copy,
    /// else copy; need_wakeup; EBUSY retried) — none of which the kernel checks capabilities for, though the UMEM
    /// counts against RLIMIT_MEMLOCK without CAP_IPC_LOCK. Loads no program and touches no map: frames arrive once
    /// the owner of the interface's <see cref="XdpFilterSteering"/> calls <see cref="XdpFilterSteering.SetSocket"/>
    /// with this socket — after this returns: the kernel would take an unbound socket into an XSKMAP, and drop the
    /// frames it redirects there.
    /// </summary>
    /// <param name="nameAndQueue"><c>IF[:QUEUE]</c>, the interface named in the calling thread's network namespace,
    /// which must be the socket's (bind resolves the index in the namespace the socket was created in).</param>
    /// <param name="xskFd">The socket; this VNIC owns it from the call on: closed on Dispose, or before an exception.</param>
    /// <param name="options">Ring and buffer sizes; <see cref="VnicOptions.LocalIpv4"/> is only reported back, and
    /// the filter options are the steering owner's business.</param>
    /// <exception cref="ArgumentException">Bad spec or options, or a negative fd.</exception>
    /// <exception cref="IOException">A system call failed, or the fd is no AF_XDP socket; the message names it and errno.</exception>
    public static AfXdpVnic OpenOnSocket(string nameAndQueue, int xskFd, VnicOptions options)
    {
        AfXdpVnic? vnic = null;
        try
        {
            ArgumentNullException.ThrowIfNull(nameAndQueue);
            ArgumentNullException.ThrowIfNull(options);
            string spec = "af_xdp:" + nameAndQueue;
            var (ifname, queue) = ParseNameAndQueue(spec, nameAndQueue);
            if (xskFd < 0)
                throw new ArgumentException($"{spec}: socket fd {xskFd} is negative", nameof(xskFd));
            CheckSizes(spec, options);
            CheckIsXdpSocket(spec, xskFd);

            int ifIndex = NetInterface.Index(spec, ifname);
            var (mac, mtu) = ReadInterface(spec, ifname);
            int chunk = ChooseChunkSize(spec, mtu, options.BufferSize);
            vnic = new AfXdpVnic(spec, ifname, ifIndex, queue, mac, mtu, options.LocalIpv4 ?? 0, chunk, options.BufferCount,
                options.RingSize, filterMode: true, maxFilters: 0);
            vnic._xsk = xskFd;
            vnic.SetUpUmemAndRings();
            vnic.Bind();
            return vnic;
        }
        catch
        {
            if (vnic is not null)
                vnic.Dispose();
            else if (xskFd >= 0)
                Libc.Close(xskFd);
            throw;
        }
    }

    // ------------------------------------------------------------------------------------------------ data path

    /// <summary>
    /// Takes received frames off the RX ring (their buffers now belong to the caller), reclaims sent buffers,
    /// tops the fill ring up and, when the driver asks for it, wakes it.
    /// </summary>
    public int Receive(Span<PacketDescriptor> batch)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        ReapCompletions();
        if (_kickPending)
            KickTx();

        int n = 0;
        uint available = _rx.Available();
        if (available > 0)
        {
            uint take = Math.Min(available, (uint)batch.Length);
            for (uint i = 0; i < take; i++)
            {
                var d = _rx.TakeDesc();
                if (TryAcceptRx(d, out int buffer))
                {
                    batch[n++] = new PacketDescriptor(buffer, (int)d.Len);
                    Counters.RxFrames++;
                    Counters.RxBytes += d.Len;
                }
            }
            _rx.Release();
        }

        int added = Refill();
        // Zero-copy drivers may stop polling an empty fill ring; a recvfrom wakes them (af_xdp.rst, XDP_USE_NEED_WAKEUP).
        // Kick when buffers were just given to the ring, and otherwise only now and then: a driver that leaves the
        // flag set while idle must not cost a system call on every busy poll.
        if (_fill.NeedsWakeup && (added > 0 || ++_idlePollsSinceKick >= IdlePollsPerKick))
        {
            _idlePollsSinceKick = 0;
            Libc.RecvFrom(_xsk, null, 0, MSG_DONTWAIT, null, null);
        }
        // XDP_STATISTICS is a system call: read it when the fill ring first runs dry (that is when the kernel drops),
        // then every DryPollsPerStatistics polls while it stays dry, and otherwise now and then — never on every poll.
        bool dry = _onFill == 0;
        if ((dry && !_fillWasDry) || ++_pollsSinceStatistics >= (dry ? DryPollsPerStatistics : StatisticsEveryPolls))
            ReadKernelStatistics();
        _fillWasDry = dry;
        return n;
    }

    /// <summary>
    /// Puts frames on the TX ring in place (the buffer is a UMEM chunk) and kicks the kernel at most once. Frames the
    /// ring has no room for stay with the caller (counted in TxDropRingFull); malformed ones are released and counted
    /// in TxErrors. Accepted buffers come back to the pool from the completion ring.
    /// </summary>
    public int Transmit(ReadOnlySpan<PacketDescriptor> batch)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        ReapCompletions();
        uint free = _tx.Free((uint)batch.Length);
        int accepted = 0;
        int queued = 0;
        for (; accepted < batch.Length; accepted++)
        {
            ref readonly var d = ref batch[accepted];
            if ((uint)d.Buffer >= (uint)BufferCount || _where[d.Buffer] != WithUs)
            {
                // Not a buffer of this pool, or one the kernel holds: the caller's mistake; nothing to release.
                Counters.TxErrors++;
                continue;
            }
            if (d.Length < ETH_HLEN || d.Length > _maxTxFrame)
            {
                Counters.TxErrors++;
                Buffers.Release(d.Buffer);
                continue;
            }
            if (free == 0)
            {
                Counters.TxDropRingFull += batch.Length - accepted;
                break;
            }
            _tx.PutDesc(ChunkAddress(d.Buffer) + XDP_PACKET_HEADROOM, (uint)d.Length);
            _where[d.Buffer] = OnTxRing;
            _onTx++;
            free--;
            queued++;
            Counters.TxFrames++;
            Counters.TxBytes += d.Length;
        }

        if (queued > 0)
        {
            _tx.Submit();
            _kickPending = true;
        }
        if (_kickPending)
            KickTx();
        return accepted;
    }

    /// <summary>
    /// Reads XDP_STATISTICS and adds what grew since the last read to the counters: fill ring found empty →
    /// RxDropNoBuffer, RX ring full → RxDropRingFull, the kernel's other RX drops (a frame longer than a chunk) →
    /// RxDropTooLong, invalid TX descriptors → TxErrors. Receive calls it now and then, and whenever the fill ring
    /// ran dry.
    /// </summary>
    /// <remarks>In copy mode the kernel counts a frame that found the fill ring empty twice, in rx_dropped and in
    /// rx_fill_ring_empty_descs (net/xdp/xsk.c, __xsk_rcv and xp_alloc); in zero-copy mode only in the latter.</remarks>
    public void ReadKernelStatistics()
    {
        _pollsSinceStatistics = 0;
        if (_xsk < 0)
            return;
        XdpStatistics s;
        uint len = (uint)sizeof(XdpStatistics);
        if (Libc.GetSockOpt(_xsk, SOL_XDP, XDP_STATISTICS, &s, &len) != 0)
            return;
        long noBuffer = (long)(s.RxFillRingEmptyDescs - _statistics.RxFillRingEmptyDescs);
        long other = (long)(s.RxDropped - _statistics.RxDropped) - (ZeroCopy ? 0 : noBuffer);
        Counters.RxDropNoBuffer += noBuffer;
        Counters.RxDropTooLong += Math.Max(0, other);
        Counters.RxDropRingFull += (long)(s.RxRingFull - _statistics.RxRingFull);
        Counters.TxErrors += (long)(s.TxInvalidDescs - _statistics.TxInvalidDescs);
        _statistics = s;
    }

    /// <summary>Adds <paramref name="group"/> (host byte order) to the program's groups map: frames to it come here.
    /// Not reference counted: one Leave undoes any number of Joins. In filter mode the kernel keeps multicast
    /// (EOPNOTSUPP).</summary>
    public int JoinMulticast(uint group)
    {
        if (FilterMode)
            return _disposed ? -Errno.EBADF : -Errno.EOPNOTSUPP;
        if (_groupsMap < 0)
            return -Errno.EBADF;
        if ((group >> 28) != 0xE)
            return -Errno.EINVAL;
        uint key = XdpProgramParts.Wire(group);
        byte value = 1;
        return Bpf.MapUpdate(_groupsMap, &key, &value);
    }

    /// <summary>Removes <paramref name="group"/> from the groups map: its frames go to the kernel again.</summary>
    public int LeaveMulticast(uint group)
    {
        if (FilterMode)
            return _disposed ? -Errno.EBADF : -Errno.EOPNOTSUPP;
        if (_groupsMap < 0)
            return -Errno.EBADF;
        uint key = XdpProgramParts.Wire(group);
        int rc = Bpf.MapDelete(_groupsMap, &key);
        return rc == -Errno.ENOENT ? -Errno.EADDRNOTAVAIL : rc;
    }

    /// <summary>
    /// Filter mode: steers to this socket the IPv4 <paramref name="protocol"/> (TCP or UDP) frames for
    /// <paramref name="localAddress"/>:<paramref name="localPort"/>, from anyone (a wild filter: remote address and
    /// port both 0) or only from <paramref name="remoteAddress"/>:<paramref name="remotePort"/> (a full filter, tried
    /// first). Addresses and ports in host byte order. Takes effect for the next frame.
    /// See <see cref="XdpFilterSteering.AddFilter"/>, which this VNIC's steering does it with.
    /// </summary>
    /// <returns>0; or a negated errno: EADDRINUSE if that exact filter exists, ENOSPC if the map holds
    /// <see cref="MaxFilters"/> already, EINVAL for another protocol, a zero local address or port, or a remote half
    /// given in part; EOPNOTSUPP in direct mode and on a socket from elsewhere (<see cref="OpenOnSocket"/>: the
    /// filters are its steering owner's); EBADF once disposed.</returns>
    public int AddFilter(System.Net.Sockets.ProtocolType protocol, uint localAddress, ushort localPort, uint remoteAddress = 0, ushort remotePort = 0) =>
        _disposed ? -Errno.EBADF
        : _steering is null ? -Errno.EOPNOTSUPP
        : _steering.AddFilter(protocol, localAddress, localPort, remoteAddress, remotePort);

    /// <summary>Removes a filter <see cref="AddFilter"/> added (same arguments): its frames go to the kernel again.
    /// Returns 0, or a negated errno: ENOENT if there is no such filter, else as AddFilter.</summary>
    public int RemoveFilter(System.Net.Sockets.ProtocolType protocol, uint localAddress, ushort localPort, uint remoteAddress = 0, ushort remotePort = 0) =>
        _disposed ? -Errno.EBADF
        : _steering is null ? -Errno.EOPNOTSUPP
        : _steering.RemoveFilter(protocol, localAddress, localPort, remoteAddress, remotePort);

    /// <summary>
    /// Detaches the program (closing the link), closes the maps and the socket, unmaps the rings and the UMEM.
    /// Buffers the caller still holds become invalid. Idempotent. (On a socket from elsewhere there is no program:
    /// closing the socket takes it out of its owner's XSKMAP.)
    /// </summary>
    public void Dispose()
    {
        if (_disposed)
            return;
        _disposed = true;
        CloseFd(ref _link);
        CloseFd(ref _prog);
        CloseFd(ref _xsksMap);
        CloseFd(ref _groupsMap);
        _steering?.Dispose();
        _rx.Unmap();
        _tx.Unmap();
        _fill.Unmap();
        _completion.Unmap();
        // Closing the socket unregisters the UMEM; the kernel keeps its own page references until it is done.
        CloseFd(ref _xsk);
        Buffers?.Dispose();
        if (_umem != null)
            Libc.Munmap(_umem, _umemLength);
        _umem = null;
        if (_where != null)
            NativeMemory.Free(_where);
        _where = null;
    }

    /// <summary>Checks an RX descriptor and takes its buffer back from the kernel. False (counted) if unusable.</summary>
    private bool TryAcceptRx(in XdpDesc d, out int buffer)
    {
        buffer = -1;
        if (d.Addr >= _umemLength)
        {
            BadDescriptors++;
            return false;
        }
        int b = (int)(d.Addr >> _chunkShift);
        if (_where[b] != OnFillRing)
        {
            BadDescriptors++;
            return false;
        }
        _where[b] = WithUs;
        _onFill--;

        // With aligned chunks the kernel puts a frame XDP_PACKET_HEADROOM into its chunk unless the XDP program
        // moves data (bpf_xdp_adjust_head/meta), which ours never does; a frame elsewhere is not where its buffer
        // starts, so it is dropped and counted rather than handed on.
        if ((d.Addr & (uint)(_chunkSize - 1)) != XDP_PACKET_HEADROOM)
        {
            BadDescriptors++;
            Buffers.Release(b);
            return false;
        }
        if (d.Len > (uint)Buffers.BufferSize)
        {
            Counters.RxDropTooLong++;
            Buffers.Release(b);
            return false;
        }
        buffer = b;
        return true;
    }

    /// <summary>Returns buffers the kernel finished sending to the pool.</summary>
    private void ReapCompletions()
    {
        uint available = _completion.Available();
        if (available == 0)
            return;
        for (uint i = 0; i < available; i++)
        {
            ulong addr = _completion.TakeAddress();
            int b = addr < _umemLength ? (int)(addr >> _chunkShift) : -1;
            if (b < 0 || _where[b] != OnTxRing)
            {
                BadDescriptors++;
                continue;
            }
            _where[b] = WithUs;
            _onTx--;
            Buffers.Release(b);
        }
        _completion.Release();
    }

    /// <summary>Tops the fill ring up to its target from free pool buffers: in batches (<see cref="RefillBatch"/>, or a
    /// quarter of the target if less), or at once when the ring ran dry.</summary>
    /// <returns>How many buffers were put on the ring.</returns>
    private int Refill()
    {
        int missing = _fillTarget - _onFill;
        if (missing < Math.Max(1, Math.Min(RefillBatch, _fillTarget / 4)) && _onFill > 0)
            return 0;
        // Buffers on the fill ring or waiting on the RX ring are counted in _onFill, so the fill ring always has at
        // least `missing` free slots: no need to read the kernel's consumer index.
        int added = 0;
        while (added < missing && Buffers.TryAllocate(out int b))
        {
            _fill.PutAddress(ChunkAddress(b));
            _where[b] = OnFillRing;
            added++;
        }
        if (added == 0)
            return 0;
        _onFill += added;
        _fill.Submit();
        return added;
    }

    /// <summary>
    /// sendto(MSG_DONTWAIT) makes the kernel transmit what is on the TX ring: in copy mode it does the sending
    /// itself (up to a per-call budget, then EAGAIN), in zero-copy mode it wakes the driver. Only when the TX ring's
    /// need_wakeup flag says so: a zero-copy driver that is busy sending clears it; in copy mode the kernel leaves
    /// it set for good (nothing but sendto or poll transmits there; measured on Linux 6.18).
    /// </summary>
    private void KickTx()
    {
        if (!_tx.NeedsWakeup)
        {
            _kickPending = false;
            return;
        }
        if (Libc.SendTo(_xsk, null, 0, MSG_DONTWAIT, null, 0) >= 0)
        {
            _kickPending = false;
            return;
        }
        int e = Errno.Last;
        // EAGAIN: budget used up or completion ring full; ENOBUFS: no skb memory; EBUSY: another sender. The frames
        // stay on the ring: kick again on the next Transmit or Receive. Anything else is an error, kicked again too.
        _kickPending = true;
        if (e is not (Errno.EAGAIN or Errno.ENOBUFS or Errno.EBUSY or Errno.EINTR))
            Counters.TxErrors++;
    }

    private ulong ChunkAddress(int buffer) => (ulong)buffer << _chunkShift;

    // ------------------------------------------------------------------------------------------------ open

    /// <summary>Direct mode: the XSKMAP (queue → socket), the groups hash map and the program that uses them.
    /// (Filter mode's are an <see cref="XdpFilterSteering"/>'s.)</summary>
    private void CreateMapsAndProgram()
    {
        _xsksMap = Bpf.MapCreate(Bpf.BPF_MAP_TYPE_XSKMAP, 4, 4, (uint)Queue + 1, "onload_xsks");
        if (_xsksMap < 0)
            throw XdpAttach.Failure(Spec, "bpf(BPF_MAP_CREATE, XSKMAP)", -_xsksMap);
        _groupsMap = Bpf.MapCreate(Bpf.BPF_MAP_TYPE_HASH, 4, 1, GroupsMapEntries, "onload_groups");
        if (_groupsMap < 0)
            throw XdpAttach.Failure(Spec, "bpf(BPF_MAP_CREATE, HASH)", -_groupsMap);
        _prog = XdpAttach.LoadProgram(Spec, SteeringProgram.Build(_xsksMap, _groupsMap, LocalIpv4), SteeringProgram.Name);
    }

    /// <summary>The UMEM registered on the socket (<see cref="_xsk"/>, opened by the caller), its four rings mapped;
    /// the fill ring primed.</summary>
    private void SetUpUmemAndRings()
    {
        // Shared anonymous memory, page aligned: a forked child then sees the same UMEM as the parent and the kernel
        // (private memory the kernel has pinned is copied for the child at fork, which would read stale frames).
        _umemLength = (nuint)BufferCount * (nuint)_chunkSize;
        var umem = (byte*)Libc.Mmap(null, _umemLength, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
        if (umem == (byte*)-1)
            throw OpenFailure.Call(Spec, $"mmap of the UMEM ({_umemLength} B)", Errno.Last);
        _umem = umem;
        Buffers = new BufferPool(umem + XDP_PACKET_HEADROOM, BufferCount, _chunkSize - XDP_PACKET_HEADROOM, _chunkSize);
        _where = (byte*)NativeMemory.AllocZeroed((nuint)BufferCount);

        var reg = new XdpUmemReg { Addr = (ulong)umem, Len = _umemLength, ChunkSize = (uint)_chunkSize };
        if (Libc.SetSockOpt(_xsk, SOL_XDP, XDP_UMEM_REG, &reg, XdpUmemReg.Size) != 0)
            throw OpenFailure.Call(Spec, $"setsockopt(XDP_UMEM_REG, {BufferCount} x {_chunkSize} B)", Errno.Last);
        SetRingSize(XDP_UMEM_FILL_RING, FillRingSize, "XDP_UMEM_FILL_RING");
        SetRingSize(XDP_UMEM_COMPLETION_RING, FillRingSize, "XDP_UMEM_COMPLETION_RING");
        SetRingSize(XDP_RX_RING, RingSize, "XDP_RX_RING");
        SetRingSize(XDP_TX_RING, RingSize, "XDP_TX_RING");

        XdpMmapOffsets off;
        uint len = XdpMmapOffsets.Size;
        if (Libc.GetSockOpt(_xsk, SOL_XDP, XDP_MMAP_OFFSETS, &off, &len) != 0)
            throw OpenFailure.Call(Spec, "getsockopt(XDP_MMAP_OFFSETS)", Errno.Last);
        MapRing(ref _rx, XDP_PGOFF_RX_RING, off.Rx, RingSize, XdpDesc.Size, "RX");
        MapRing(ref _tx, XDP_PGOFF_TX_RING, off.Tx, RingSize, XdpDesc.Size, "TX");
        MapRing(ref _fill, XDP_UMEM_PGOFF_FILL_RING, off.Fr, FillRingSize, sizeof(ulong), "fill");
        MapRing(ref _completion, XDP_UMEM_PGOFF_COMPLETION_RING, off.Cr, FillRingSize, sizeof(ulong), "completion");

        // Buffers on the fill ring before bind, so the first frame finds one.
        Refill();
    }

    /// <summary>
    /// Binds to the queue: zero-copy first, copy if the driver cannot (veth: EOPNOTSUPP), always with need_wakeup.
    /// EBUSY (the queue still has a dying owner's socket) is retried for up to <see cref="BusyRetry"/>.
    /// </summary>
    private void Bind()
    {
        var clock = Stopwatch.StartNew();
        while (true)
        {
            int zcErr = TryBind(XDP_ZEROCOPY | XDP_USE_NEED_WAKEUP);
            if (zcErr == 0)
                break;
            int copyErr = zcErr == Errno.EBUSY ? Errno.EBUSY : TryBind(XDP_COPY | XDP_USE_NEED_WAKEUP);
            if (copyErr == 0)
                break;
            if (copyErr == Errno.EBUSY && clock.Elapsed < BusyRetry)
            {
                OpenBusyRetries++;
                Thread.Sleep(10);
                continue;
            }
            throw copyErr switch
            {
                Errno.EBUSY => OpenFailure.Message(Spec,
                    $"queue {Queue} of {_ifName} already has an AF_XDP socket (another stack?): bind failed: {Errno.Describe(copyErr)}", copyErr),
                Errno.EINVAL => OpenFailure.Message(Spec,
                    $"bind to queue {Queue} failed: {Errno.Describe(copyErr)} (does {_ifName} have that many RX queues? zero-copy attempt: {Errno.Describe(zcErr)})", copyErr),
                _ => OpenFailure.Call(Spec, $"bind (zero-copy: {Errno.Describe(zcErr)}; copy)", copyErr),
            };
        }

        XdpOptions opts;
        uint len = (uint)sizeof(XdpOptions);
        if (Libc.GetSockOpt(_xsk, SOL_XDP, XDP_OPTIONS, &opts, &len) == 0)
            ZeroCopy = (opts.Flags & XDP_OPTIONS_ZEROCOPY) != 0;

        // Best effort (Linux 6.17+): let one copy-mode sendto send a whole TX ring rather than 32 frames.
        int budget = RingSize;
        Libc.SetSockOpt(_xsk, SOL_XDP, XDP_MAX_TX_SKB_BUDGET, &budget, sizeof(int));
    }

    /// <summary>The bound socket into the XSKMAP at its queue's index: from now on the program can redirect to it.</summary>
    private void InsertIntoXskMap()
    {
        int rc;
        if (_steering is not null)
        {
            rc = _steering.SetSocket(Queue, _xsk);
        }
        else
        {
            uint key = (uint)Queue;
            int fd = _xsk;
            rc = Bpf.MapUpdate(_xsksMap, &key, &fd);
        }
        if (rc < 0)
            throw OpenFailure.Call(Spec, "bpf(BPF_MAP_UPDATE_ELEM) of the XSKMAP", -rc);
    }

    private int TryBind(ushort flags)
    {
        var sa = new SockaddrXdp { Family = AF_XDP, Flags = flags, IfIndex = (uint)IfIndex, QueueId = (uint)Queue };
        return Libc.Bind(_xsk, &sa, SockaddrXdp.Size) == 0 ? 0 : Errno.Last;
    }

    /// <summary>Attaches the program (<see cref="XdpAttach.Attach"/>: a bpf_link, nothing pinned; native mode, else
    /// generic; a taken hook retried for <see cref="BusyRetry"/>).</summary>
    private void Attach()
    {
        int retries = 0;
        bool native;
        if (_steering is not null)
        {
            _steering.Attach(ref retries);
            native = _steering.NativeXdp;
        }
        else
        {
            _link = XdpAttach.Attach(Spec, _ifName, IfIndex, _prog, ref retries, out native);
        }
        OpenBusyRetries += retries;
        NativeXdp = native;
    }

    private void SetRingSize(int option, int size, string what)
    {
        if (Libc.SetSockOpt(_xsk, SOL_XDP, option, &size, sizeof(int)) != 0)
            throw OpenFailure.Call(Spec, $"setsockopt({what}, {size})", Errno.Last);
    }

    private void MapRing(ref XskRing ring, long pgoff, in XdpRingOffset off, int size, int slotSize, string what)
    {
        int err = ring.MapFrom(_xsk, pgoff, off, (uint)size, slotSize);
        if (err != 0)
            throw OpenFailure.Call(Spec, $"mmap of the {what} ring", err);
    }

    private static void CloseFd(ref int fd) => XdpAttach.CloseFd(ref fd);

    private static void CheckSizes(string spec, VnicOptions options)
    {
        if (options.RingSize < 2 || !BitOperations.IsPow2(options.RingSize))
            throw new ArgumentException($"{spec}: RingSize {options.RingSize} is not a power of two >= 2", nameof(options));
        if (options.BufferCount < 4)
            throw new ArgumentException($"{spec}: BufferCount {options.BufferCount} is below 4", nameof(options));
    }

    /// <summary>getsockopt(SO_DOMAIN): a socket passed in that is not AF_XDP would fail later with a less telling errno.</summary>
    private static void CheckIsXdpSocket(string spec, int fd)
    {
        int domain = 0;
        uint len = sizeof(int);
        if (Libc.GetSockOpt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) != 0)
            throw OpenFailure.Call(spec, $"getsockopt(fd {fd}, SO_DOMAIN)", Errno.Last);
        if (domain != AF_XDP)
            throw OpenFailure.Message(spec, $"fd {fd} is not an AF_XDP socket (domain {domain})", Errno.EAFNOSUPPORT);
    }

    private static (string IfName, int Queue) ParseNameAndQueue(string spec, string nameAndQueue)
    {
        string ifname = nameAndQueue;
        int queue = 0;
        int colon = nameAndQueue.IndexOf(':', StringComparison.Ordinal);
        if (colon >= 0)
        {
            ifname = nameAndQueue[..colon];
            if (!int.TryParse(nameAndQueue.AsSpan(colon + 1), NumberStyles.None, CultureInfo.InvariantCulture, out queue) || queue > 4095)
                throw new ArgumentException($"{spec}: the queue is a number from 0 to 4095 (af_xdp:IF[:QUEUE])", nameof(nameAndQueue));
        }
        NetInterface.CheckName(spec, ifname, nameof(nameAndQueue));
        return (ifname, queue);
    }

    /// <summary>MAC and MTU through the interface ioctls, on a throwaway UDP socket (AF_XDP sockets do not take them).</summary>
    private static (MacAddress Mac, int Mtu) ReadInterface(string spec, string ifname)
    {
        int fd = NetInterface.OpenControlSocket(spec);
        try
        {
            var link = NetInterface.ReadLink(spec, fd, ifname);
            if (link.LinkType != ARPHRD_ETHER)
                throw OpenFailure.Message(spec, $"not an Ethernet interface (link type {link.LinkType})");
            return (link.Mac, link.Mtu);
        }
        finally
        {
            Libc.Close(fd);
        }
    }

    /// <summary>2048 if the MTU's frames (tagged) fit after the headroom, else a page; or what BufferSize asks for.</summary>
    private static int ChooseChunkSize(string spec, int mtu, int? bufferSize)
    {
        int page = Libc.GetPageSize();
        int want = bufferSize ?? mtu + ETH_HLEN + VLAN_HLEN;
        int chunk = (int)BitOperations.RoundUpToPowerOf2((uint)Math.Max(XDP_UMEM_MIN_CHUNK_SIZE, want + XDP_PACKET_HEADROOM));
        if (chunk <= page)
            return chunk;
        if (bufferSize is not null)
            throw new ArgumentException($"{spec}: BufferSize {bufferSize} does not fit a UMEM chunk ({page} B, {XDP_PACKET_HEADROOM} B of it kernel headroom)");
        return page; // a larger MTU is capped (see Mtu)
    }
}
