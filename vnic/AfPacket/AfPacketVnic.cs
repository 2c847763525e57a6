using System.Buffers.Binary;
using System.Numerics;
using System.Threading;
using Onload.Vnic.Native;
using static Onload.Vnic.Native.LinuxConstants;
using static Onload.Vnic.Native.PacketMmap;

namespace Onload.Vnic.AfPacket;

/// <summary>
/// The <c>af_packet:IF</c> backend: an AF_PACKET socket with TPACKET_V2 RX and TX rings mapped into the process
/// (Documentation/networking/packet_mmap.rst). Frames are copied once each way between a ring slot and a pool buffer.
/// </summary>
/// <remarks>
/// <para>TPACKET_V2 rather than V3: V3 hands receive blocks over only when full or when a timer (at least 1 ms)
/// retires them, which costs a millisecond per round trip at low rates.</para>
/// <para>The socket sees every frame of the interface (ETH_P_ALL) and is the fallback where AF_XDP is missing.
/// Receive walks RX slots the kernel marked TP_STATUS_USER; Transmit fills TX slots and kicks the kernel with one
/// sendto per batch. Single-threaded, like the stack that drives it; nothing allocates per frame.</para>
/// </remarks>
public sealed unsafe class AfPacketVnic : IVnic
{
    /// <summary>Receive calls between reads of PACKET_STATISTICS when nothing suggests a loss.</summary>
    private const int StatisticsEveryPolls = 1024;

    private readonly int _frameSize;
    private readonly int _rxFrames;
    private readonly int _txFrames;
    private readonly int _maxTxFrame;
    private int _fd;
    private byte* _map;
    private nuint _mapLength;
    private byte* _rxRing;
    private byte* _txRing;
    private int _rxHead;
    private int _txHead;
    private int _pollsSinceStatistics;
    private bool _kickPending;

    private AfPacketVnic(string spec, int fd, int ifIndex, MacAddress mac, int mtu, BufferPool buffers,
        int frameSize, int rxFrames, int txFrames)
    {
        Spec = spec;
        _fd = fd;
        IfIndex = ifIndex;
        MacAddress = mac;
        Mtu = mtu;
        Buffers = buffers;
        _frameSize = frameSize;
        _rxFrames = rxFrames;
        _txFrames = txFrames;
        _maxTxFrame = mtu + ETH_HLEN;
    }

    public string Spec { get; }
    public MacAddress MacAddress { get; }
    public int Mtu { get; }
    public BufferPool Buffers { get; }
    public VnicCounters Counters { get; } = new();
    public int WaitHandle => _fd;

    /// <summary>The interface index the socket is bound to.</summary>
    public int IfIndex { get; }

    /// <summary>Whether PACKET_QDISC_BYPASS took: sends go straight to the driver, skipping the qdisc and taps
    /// (so tcpdump on the interface does not see them).</summary>
    public bool QdiscBypass { get; private set; }

    /// <summary>Bytes per ring slot, and slots per ring.</summary>
    public int SlotSize => _frameSize;
    public int RxSlots => _rxFrames;
    public int TxSlots => _txFrames;

    /// <summary>
    /// Frames that arrived with TP_STATUS_VLAN_VALID: the driver stripped an 802.1Q tag (its TCI is in the slot
    /// header). There is no VLAN support yet, so such frames are delivered untagged like any other and only counted.
    /// </summary>
    public long RxVlanTagged { get; private set; }

    /// <summary>Opens an AF_PACKET VNIC on interface <paramref name="ifname"/> of the calling thread's network namespace.</summary>
    public static AfPacketVnic Open(string ifname, VnicOptions options)
    {
        ArgumentNullException.ThrowIfNull(ifname);
        ArgumentNullException.ThrowIfNull(options);
        string spec = "af_packet:" + ifname;
        NetInterface.CheckName(spec, ifname, nameof(ifname));
        if (options.RingSize < 2 || !BitOperations.IsPow2(options.RingSize))
            throw new ArgumentException($"{spec}: RingSize {options.RingSize} is not a power of two >= 2", nameof(options));

        int fd = NetInterface.OpenSocket(spec, AF_PACKET, SOCK_RAW);
        BufferPool? pool = null;
        byte* map = null;
        nuint mapLength = 0;
        try
        {
            int ifIndex = NetInterface.Index(spec, ifname);
            var (mtu, mac, linkType) = NetInterface.ReadLink(spec, fd, ifname);
            if (linkType is not (ARPHRD_ETHER or ARPHRD_LOOPBACK))
                throw OpenFailure.Message(spec, $"not an Ethernet interface (link type {linkType})");

            // A buffer holds the largest frame the link carries, tagged or not.
            int bufferSize = Math.Max(BufferPool.DefaultBufferSize, (mtu + ETH_HLEN + VLAN_HLEN + 63) & ~63);
            pool = new BufferPool(options.BufferCount, bufferSize);

            // Ring geometry (packet_mmap.rst, "How to use mmap() to improve RX/TX"): slots of a power-of-two size
            // big enough for an RX frame after its headers (the kernel puts the MAC header at RxNetOffset - 14),
            // blocks of at least a page holding whole slots, the same geometry for RX and TX.
            int frameSize = (int)BitOperations.RoundUpToPowerOf2((uint)(RxNetOffset + mtu + VLAN_HLEN));
            int blockSize = Math.Max(Libc.GetPageSize(), frameSize);
            int framesPerBlock = blockSize / frameSize;
            int frames = Math.Max(options.RingSize, framesPerBlock);
            var req = new TpacketReq
            {
                BlockSize = (uint)blockSize,
                BlockNr = (uint)(frames / framesPerBlock),
                FrameSize = (uint)frameSize,
                FrameNr = (uint)frames,
            };

            SetIntOption(spec, fd, PACKET_VERSION, TPACKET_V2, "PACKET_VERSION, TPACKET_V2");
            // PACKET_LOSS: a TX slot the kernel finds malformed is skipped rather than left in
            // TP_STATUS_WRONG_FORMAT, which would stop the TX ring for good. Must precede the rings.
            SetIntOption(spec, fd, PACKET_LOSS, 1, "PACKET_LOSS");
            // Our own sends and the namespace kernel's come back to a packet socket as PACKET_OUTGOING. Since
            // Linux 4.20 the kernel can skip them before copying; Receive filters them anyway for older kernels.
            TrySetIntOption(fd, PACKET_IGNORE_OUTGOING, 1);

            if (Libc.SetSockOpt(fd, SOL_PACKET, PACKET_RX_RING, &req, (uint)sizeof(TpacketReq)) != 0)
                throw OpenFailure.Call(spec, $"setsockopt(PACKET_RX_RING, {frames} x {frameSize} B)", Errno.Last);
            if (Libc.SetSockOpt(fd, SOL_PACKET, PACKET_TX_RING, &req, (uint)sizeof(TpacketReq)) != 0)
                throw OpenFailure.Call(spec, $"setsockopt(PACKET_TX_RING, {frames} x {frameSize} B)", Errno.Last);

            // One mapping covers both rings, RX first then TX (packet_mmap.rst, "AF_PACKET TPACKET_V2 ... RX and TX").
            nuint ringBytes = (nuint)req.BlockSize * req.BlockNr;
            mapLength = 2 * ringBytes;
            map = (byte*)Libc.Mmap(null, mapLength, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
            if (map == (byte*)-1)
            {
                map = null;
                throw OpenFailure.Call(spec, $"mmap of the rings ({mapLength} B)", Errno.Last);
            }

            var vnic = new AfPacketVnic(spec, fd, ifIndex, mac, mtu, pool, frameSize, frames, frames)
            {
                _map = map,
                _mapLength = mapLength,
                _rxRing = map,
                _txRing = map + ringBytes,
                // Sends go straight to the driver's xmit (packet_direct_xmit), skipping the qdisc layer: lower
                // latency, and no loopback of our own frames to packet taps. Optional: without it we still work.
                QdiscBypass = TrySetIntOption(fd, PACKET_QDISC_BYPASS, 1),
            };

            // Bind last, so no frame of another interface lands in the ring before the bind narrows it.
            var sll = new SockaddrLl
            {
                Family = AF_PACKET,
                Protocol = HostToNetwork(ETH_P_ALL),
                IfIndex = ifIndex,
            };
            if (Libc.Bind(fd, &sll, SockaddrLl.Size) != 0)
                throw OpenFailure.Call(spec, "bind", Errno.Last);
            // Binding to an interface that is down succeeds but leaves sk_err = ENETDOWN pending, which would make
            // poll report POLLERR until read: read (clear) it now. The hook attaches when the link comes up.
            ClearSocketError(fd);
            return vnic;
        }
        catch
        {
            if (map != null)
                Libc.Munmap(map, mapLength);
            Libc.Close(fd);
            pool?.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Moves received frames into pool buffers. Frames we sent ourselves (PACKET_OUTGOING) are skipped; frames
    /// that do not fit a buffer, or that find the pool empty, are dropped and counted.
    /// </summary>
    public int Receive(Span<PacketDescriptor> batch)
    {
        ObjectDisposedException.ThrowIf(_rxRing == null, this);
        int n = 0;
        int examined = 0;
        bool losing = false;
        int bufferSize = Buffers.BufferSize;
        while (n < batch.Length && examined < _rxFrames)
        {
            byte* slot = _rxRing + (long)_rxHead * _frameSize;
            var hdr = (Tpacket2Hdr*)slot;
            // Acquire: the frame bytes and header fields the kernel wrote are visible once we see TP_STATUS_USER.
            uint status = Volatile.Read(ref hdr->Status);
            if ((status & TP_STATUS_USER) == 0)
                break;
            examined++;
            if ((status & TP_STATUS_LOSING) != 0)
                losing = true;

            var sll = (SockaddrLl*)(slot + SockaddrOffset);
            if (sll->PktType != PACKET_OUTGOING)
            {
                uint length = hdr->Len;
                if (hdr->SnapLen < length || length > (uint)bufferSize)
                {
                    Counters.RxDropTooLong++;
                }
                else if (!Buffers.TryAllocate(out int buffer))
                {
                    Counters.RxDropNoBuffer++;
                }
                else
                {
                    Buffer.MemoryCopy(slot + hdr->Mac, Buffers.Pointer(buffer), bufferSize, length);
                    // CSUMNOTREADY: a local sender left the checksum to offload, so the field is not filled in;
                    // CSUM_VALID: the driver verified it. Either way the stack must not check it.
                    var flags = (status & (TP_STATUS_CSUMNOTREADY | TP_STATUS_CSUM_VALID)) != 0
                        ? PacketFlags.ChecksumTrusted
                        : PacketFlags.None;
                    if ((status & TP_STATUS_VLAN_VALID) != 0)
                        RxVlanTagged++;
                    batch[n++] = new PacketDescriptor(buffer, (int)length, flags);
                    Counters.RxFrames++;
                    Counters.RxBytes += length;
                }
            }

            // Release: our reads of the slot are done before the kernel may refill it.
            Volatile.Write(ref hdr->Status, TP_STATUS_KERNEL);
            _rxHead = _rxHead + 1 == _rxFrames ? 0 : _rxHead + 1;
        }

        // PACKET_STATISTICS is a system call: read it when the kernel flagged a loss (TP_STATUS_LOSING), when we
        // found the whole ring full, and otherwise now and then.
        if (losing || examined == _rxFrames || ++_pollsSinceStatistics >= StatisticsEveryPolls)
            ReadKernelStatistics();
        return n;
    }

    /// <summary>
    /// Copies frames into free TX slots and kicks the kernel once. Stops at the first slot still in use
    /// (TxDropRingFull counts the frames left with the caller). Accepted buffers go back to the pool.
    /// </summary>
    public int Transmit(ReadOnlySpan<PacketDescriptor> batch)
    {
        ObjectDisposedException.ThrowIf(_txRing == null, this);
        int accepted = 0;
        int queued = 0;
        for (; accepted < batch.Length; accepted++)
        {
            ref readonly var d = ref batch[accepted];
            byte* slot = _txRing + (long)_txHead * _frameSize;
            var hdr = (Tpacket2Hdr*)slot;
            uint status = Volatile.Read(ref hdr->Status);
            if (status == TP_STATUS_WRONG_FORMAT)
            {
                // Only without PACKET_LOSS; the kernel stopped at this slot, rewriting it lets it go on.
                Counters.TxErrors++;
            }
            else if (status != TP_STATUS_AVAILABLE)
            {
                Counters.TxDropRingFull += batch.Length - accepted;
                break;
            }

            if (d.Length < ETH_HLEN || d.Length > _maxTxFrame)
            {
                // The kernel would refuse it (tp_len above MTU + hard header): drop it here, as sent in error.
                Counters.TxErrors++;
                Buffers.Release(d.Buffer);
                continue;
            }

            Buffer.MemoryCopy(Buffers.Pointer(d.Buffer), slot + TxDataOffset, _frameSize - TxDataOffset, d.Length);
            hdr->Len = (uint)d.Length;
            // Release: frame bytes and tp_len are visible before the kernel sees the request.
            Volatile.Write(ref hdr->Status, TP_STATUS_SEND_REQUEST);
            _txHead = _txHead + 1 == _txFrames ? 0 : _txHead + 1;
            Buffers.Release(d.Buffer);
            Counters.TxFrames++;
            Counters.TxBytes += d.Length;
            queued++;
        }

        if (queued > 0 || _kickPending)
            Kick();
        return accepted;
    }

    /// <summary>
    /// Adds the kernel's count of frames it dropped for want of a free RX slot (PACKET_STATISTICS tp_drops, which
    /// reading resets) to <see cref="VnicCounters.RxDropRingFull"/>. Receive calls it on its own now and then.
    /// </summary>
    public void ReadKernelStatistics()
    {
        _pollsSinceStatistics = 0;
        if (_fd < 0)
            return;
        TpacketStats stats;
        uint len = (uint)sizeof(TpacketStats);
        if (Libc.GetSockOpt(_fd, SOL_PACKET, PACKET_STATISTICS, &stats, &len) == 0)
            Counters.RxDropRingFull += stats.Drops;
    }

    /// <summary>Adds the group's MAC (RFC 1112 §6.4) to the interface's multicast filter (packet(7),
    /// PACKET_ADD_MEMBERSHIP with PACKET_MR_MULTICAST); it is dropped again when the socket closes.</summary>
    public int JoinMulticast(uint group) => Membership(PacketAddMembership, group);

    public int LeaveMulticast(uint group) => Membership(PacketDropMembership, group);

    private const int PacketAddMembership = 1;
    private const int PacketDropMembership = 2;
    private const ushort PacketMrMulticast = 0;

    private int Membership(int option, uint group)
    {
        var mac = MacAddress.ForIpv4Multicast(group);
        PacketMreq mreq = default;
        mreq.IfIndex = IfIndex;
        mreq.Type = PacketMrMulticast;
        mreq.AddressLength = 6;
        mac.Write(new Span<byte>(mreq.Address, 6));
        return Libc.SetSockOpt(_fd, SOL_PACKET, option, &mreq, (uint)sizeof(PacketMreq)) == 0 ? 0 : -Errno.Last;
    }

    /// <summary>struct packet_mreq (include/uapi/linux/if_packet.h).</summary>
    private struct PacketMreq
    {
        public int IfIndex;
        public ushort Type;
        public ushort AddressLength;
        public fixed byte Address[8];
    }

    public void Dispose()
    {
        if (_fd < 0)
            return;
        if (_map != null)
            Libc.Munmap(_map, _mapLength);
        _map = null;
        _rxRing = null;
        _txRing = null;
        Libc.Close(_fd);
        _fd = -1;
        Buffers.Dispose();
    }

    /// <summary>
    /// One sendto with no data asks the kernel to send every slot marked TP_STATUS_SEND_REQUEST (tpacket_snd);
    /// MSG_DONTWAIT makes it return without waiting for the frames to leave.
    /// </summary>
    private void Kick()
    {
        if (Libc.SendTo(_fd, null, 0, MSG_DONTWAIT, null, 0) >= 0)
        {
            _kickPending = false;
            return;
        }
        // The frames stay in the ring as SEND_REQUEST: kick again on the next Transmit, even an empty one.
        _kickPending = true;
        int e = Errno.Last;
        // EAGAIN / ENOBUFS: the device queue is busy (congestion, not loss of the ring's frames); EINTR: retry.
        if (e is not (Errno.EAGAIN or Errno.ENOBUFS or Errno.EINTR))
            Counters.TxErrors++;
    }

    private static void SetIntOption(string spec, int fd, int option, int value, string what)
    {
        if (Libc.SetSockOpt(fd, SOL_PACKET, option, &value, sizeof(int)) != 0)
            throw OpenFailure.Call(spec, $"setsockopt({what})", Errno.Last);
    }

    private static bool TrySetIntOption(int fd, int option, int value) =>
        Libc.SetSockOpt(fd, SOL_PACKET, option, &value, sizeof(int)) == 0;

    private static void ClearSocketError(int fd)
    {
        const int SOL_SOCKET = 1, SO_ERROR = 4; // asm-generic/socket.h
        int error;
        uint len = sizeof(int);
        Libc.GetSockOpt(fd, SOL_SOCKET, SO_ERROR, &error, &len);
    }

    private static ushort HostToNetwork(ushort v) => BitConverter.IsLittleEndian ? BinaryPrimitives.ReverseEndianness(v) : v;
}
