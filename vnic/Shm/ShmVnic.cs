using System.Numerics;
using Onload.Vnic.Native;
using static Onload.Vnic.Native.UnixIpcConstants;

namespace Onload.Vnic.Shm;

/// <summary>
/// The <c>shm:NAME</c> backend: two endpoints on one host exchange Ethernet frames over two single-producer
/// single-consumer rings (one per direction) in one memfd that both map MAP_SHARED. Needs no privileges.
/// </summary>
/// <remarks>
/// <para><b>Rendezvous.</b> The first process to open NAME creates the memfd and listens on the abstract Unix socket
/// <c>"\0onload-shm/NAME"</c> (abstract names need no file system rights and vanish with their last holder). The
/// second connects and receives the memfd and both doorbell eventfds through SCM_RIGHTS. A third opener while both
/// ends live gets an <see cref="IOException"/> with errno EADDRINUSE. The socket is SOCK_SEQPACKET, so each handshake
/// message arrives whole with its file descriptors.</para>
/// <para><b>Data path.</b> Transmit copies each frame from its pool buffer into a ring slot, publishes the producer
/// index once per batch (release) and rings the peer's eventfd only if the peer said it is going to sleep. Receive
/// reads the producer index (acquire), copies frames out into pool buffers and publishes the consumer index once
/// per batch. No system call and no allocation per frame.</para>
/// <para><b>Sleeping.</b> Before sleeping on <see cref="WaitHandle"/> the caller calls <see cref="PrepareToSleep"/>
/// (<see cref="VnicWait.Wait"/> does): it sets the ring's Sleeping flag, then re-reads the producer index (a full
/// fence between the two). The producer publishes its index, fences, then reads Sleeping and, if set, clears it and
/// writes the eventfd. One of the two always sees the other's write, so no wake-up is lost, and a peer that never
/// sleeps costs the producer no system call. When the re-read finds frames, PrepareToSleep takes the flag back:
/// a sleep that does not happen then costs no system call on either side, unless the producer took the flag first.</para>
/// <para><b>Peer death.</b> A monitor thread per endpoint blocks in poll() on the connected socket (a dead or
/// disposed peer shows as POLLHUP/EOF), on the listening socket (joiners) and on a stop eventfd. The polling thread
/// sees its verdicts through volatile fields, so checking costs it no system call. While no peer is connected,
/// Transmit drops (and counts) frames without blocking. The survivor keeps, or takes over, the listening name and
/// the memfd; a new opener joins it with the rings' indices carried over, frames left in flight being discarded
/// and counted.</para>
/// <para>Single-threaded like the stack that drives it (Receive, Transmit, PrepareToSleep and Dispose on one
/// thread); the monitor thread touches only what is noted on each field.</para>
/// </remarks>
public sealed unsafe class ShmVnic : IVnic
{
    /// <summary>
    /// The link's MTU: Ethernet jumbo frames. An 8 KiB UDP datagram (8192 + 28 bytes of headers) crosses
    /// unfragmented, and a slot (64-byte header + 9014-byte frame) fits in 9216 bytes.
    /// </summary>
    public const int DefaultMtu = 9000;

    /// <summary>The abstract socket name is this prefix plus NAME.</summary>
    public const string AbstractPrefix = "onload-shm/";

    /// <summary>The longest NAME: sun_path holds 108 bytes, one for the leading NUL of an abstract name.</summary>
    public const int MaxNameLength = UnixIpcConstants.SunPathLength - 1 - 11;

    private const int EthHeader = 14;
    private const int HandshakeTimeoutMs = 5000;
    /// <summary>How long a join-only opener (<see cref="VnicOptions.ShmJoinPid"/>: onload-driverd, whose control loop
    /// must not be held by one client) waits for the listener to connect and answer each handshake step.</summary>
    private const int JoinOnlyTimeoutMs = 500;
    private const int SoSndTimeo = 21;

    private struct TimeVal
    {
        public long Seconds;
        public long Microseconds;
    }
    private const int ListenRetryMs = 50;
    private const int OpenAttempts = 50;

    // Set at open, then read-only (the monitor thread reads them too).
    private readonly string _name;
    private readonly byte[] _abstractName;
    private readonly byte* _region;
    private readonly nuint _regionBytes;
    private readonly int _memfd;
    private readonly int _ownDoorbell;
    private readonly int _peerDoorbell;
    private readonly int _stopFd;
    private readonly byte* _rx;
    private readonly byte* _tx;
    private readonly int _slotCount;
    private readonly int _slotMask;
    private readonly int _slotSize;
    private readonly int _maxFrame;

    // The polling thread's own.
    private long _rxConsumer;
    private long _txProducer;
    private long _txConsumerSeen;
    private bool _armed;
    private long _peerLossesSeen;
    private long _rxDiscarded;
    private long _txDropPeerGone;
    private long _doorbellsRung;
    private bool _disposed;

    // The monitor thread's own (Dispose closes them after joining it). _listenFd is read by IsListener.
    private int _listenFd = -1;
    // The other user a listener accepts besides its own (VnicOptions.ShmPeerUid); set before the monitor starts.
    private uint _peerUid;
    private int _connFd = -1;
    private Thread? _monitor;

    // Written by the monitor, read by the polling thread. _peerLosses and _rxCutoff change together under _sync.
    private readonly Lock _sync = new();
    private int _connected;
    private int _peerPid;
    private long _peerMac;
    private long _peerLosses;
    private long _rxCutoff;
    private long _joins;
    private long _txDiscarded;
    private int _poked;
    private string? _monitorError;

    private ShmVnic(string name, byte[] abstractName, MacAddress mac, BufferPool pool, byte* region, nuint regionBytes,
        int memfd, int ownDoorbell, int peerDoorbell, int stopFd, int rxRing, int mtu, int slotCount, int slotSize)
    {
        _name = name;
        _abstractName = abstractName;
        Spec = "shm:" + name;
        MacAddress = mac;
        Buffers = pool;
        Mtu = mtu;
        _region = region;
        _regionBytes = regionBytes;
        _memfd = memfd;
        _ownDoorbell = ownDoorbell;
        _peerDoorbell = peerDoorbell;
        _stopFd = stopFd;
        _slotCount = slotCount;
        _slotMask = slotCount - 1;
        _slotSize = slotSize;
        _maxFrame = mtu + EthHeader;
        long ringBytes = ShmLayout.RingBytes(slotCount, slotSize);
        _rx = ShmLayout.Ring(region, rxRing, ringBytes);
        _tx = ShmLayout.Ring(region, 1 - rxRing, ringBytes);
        RxRing = rxRing;
        // Carry on from where the rings are: a joiner finds them as the previous pair left them (the listener
        // moved the consumer index of the ring we read past anything stale before it sent us the memfd).
        _rxConsumer = Volatile.Read(ref ShmLayout.Consumer(_rx));
        _txProducer = Volatile.Read(ref ShmLayout.Producer(_tx));
        _txConsumerSeen = Volatile.Read(ref ShmLayout.Consumer(_tx));
    }

    public string Spec { get; }
    public MacAddress MacAddress { get; }
    public int Mtu { get; }
    public BufferPool Buffers { get; }
    public VnicCounters Counters { get; } = new();

    /// <summary>The eventfd this end is woken by (EFD_NONBLOCK); -1 once disposed.</summary>
    public int WaitHandle => _disposed ? -1 : _ownDoorbell;

    /// <summary>True while a peer endpoint is attached.</summary>
    public bool PeerConnected => Volatile.Read(ref _connected) != 0;

    /// <summary>The peer's process id (SO_PEERCRED), 0 while there is none.</summary>
    public int PeerProcessId => Volatile.Read(ref _peerPid);

    /// <summary>The MAC the peer announced in the handshake (<see cref="MacAddress.Zero"/> while there is none).</summary>
    public MacAddress PeerMacAddress => new((ulong)Volatile.Read(ref _peerMac));

    /// <summary>True while this end holds the abstract name and will accept a joiner.</summary>
    public bool IsListener => Volatile.Read(ref _listenFd) >= 0;

    /// <summary>Peers that have joined this endpoint after it opened (the one it joined itself is not counted).</summary>
    public long Joins => Volatile.Read(ref _joins);

    /// <summary>Which of the region's two rings this end reads (0 for the creator).</summary>
    public int RxRing { get; }

    /// <summary>Slots per ring and bytes per slot.</summary>
    public int RingSlots => _slotCount;
    public int SlotSize => _slotSize;

    /// <summary>Writes to the peer's eventfd: one per batch that found the peer declared asleep, none otherwise.</summary>
    public long DoorbellsRung => _doorbellsRung;

    /// <summary>Frames Transmit dropped because no peer was connected.</summary>
    public long TxDropPeerGone => _txDropPeerGone;

    /// <summary>Frames a dead peer had sent that this end had not read yet, discarded when it noticed the death.</summary>
    public long RxDiscardedOnPeerLoss => _rxDiscarded;

    /// <summary>Frames this end had sent that a dead peer had not read, discarded when the next peer joined.</summary>
    public long TxDiscardedOnPeerLoss => Interlocked.Read(ref _txDiscarded);

    /// <summary>Why the monitor thread stopped early, if it did (null while it runs or after a clean stop).</summary>
    public string? MonitorError => Volatile.Read(ref _monitorError);

    /// <summary>
    /// Opens endpoint <paramref name="name"/>: creates the shared region and listens if nobody has, else joins the
    /// endpoint that has. <see cref="VnicOptions.RingSize"/> sets the slots per ring (creator only: a joiner takes
    /// the creator's geometry); <see cref="VnicOptions.BufferSize"/> is honoured when it holds an MTU-sized frame.
    /// </summary>
    public static ShmVnic Open(string name, VnicOptions options)
    {
        ArgumentNullException.ThrowIfNull(name);
        ArgumentNullException.ThrowIfNull(options);
        string spec = "shm:" + name;
        byte[] abstractName = AbstractName(spec, name);
        if (options.RingSize < 2 || options.RingSize > 1 << 16 || !BitOperations.IsPow2(options.RingSize))
            throw new ArgumentException($"{spec}: RingSize {options.RingSize} is not a power of two from 2 to 65536", nameof(options));
        if (options.MacAddress is { } wanted && (wanted.IsGroup || wanted == MacAddress.Zero))
            throw new ArgumentException($"{spec}: MAC {wanted} is not a unicast address", nameof(options));

        for (int attempt = 1; ; attempt++)
        {
            int fd = Libc.Socket(AF_UNIX, SOCK_SEQPACKET | LinuxConstants.SOCK_CLOEXEC, 0);
            if (fd < 0)
                throw OpenFailure.Call(spec, "socket(AF_UNIX, SOCK_SEQPACKET)", Errno.Last);
            uint len = SockaddrUn.Abstract(abstractName, out var addr);
            if (options.ShmJoinPid is not null)
            {
                // A daemon joining a client's rings must not wait on that client: a listener whose backlog is full
                // blocks connect for as long as SO_SNDTIMEO allows (unix_wait_for_peer).
                var timeout = new TimeVal { Seconds = 0, Microseconds = JoinOnlyTimeoutMs * 1000 };
                _ = Libc.SetSockOpt(fd, SOL_SOCKET, SoSndTimeo, &timeout, (uint)sizeof(TimeVal));
            }
            int rc = Libc.Connect(fd, &addr, len);
            if (rc == 0)
            {
                // Someone listens: join it. Null means it vanished during the handshake; start again.
                var joined = Join(spec, name, abstractName, fd, options);
                if (joined is not null)
                    return joined;
            }
            else
            {
                int e = Errno.Last;
                Libc.Close(fd);
                if (e != ECONNREFUSED)
                    throw OpenFailure.Call(spec, $"connect(\"@{AbstractPrefix}{name}\")", e);
                if (options.ShmJoinPid is { } pid)
                    throw OpenFailure.Message(spec, $"nobody listens at \"@{AbstractPrefix}{name}\" (pid {pid}'s endpoint is gone)", Errno.ENOENT);
                // Nobody listens: create. Null means another opener bound the name first; join it instead.
                var created = Create(spec, name, abstractName, options);
                if (created is not null)
                    return created;
            }
            if (attempt == OpenAttempts)
                throw OpenFailure.Message(spec, $"could neither create nor join after {OpenAttempts} attempts " +
                    "(the other endpoint kept vanishing)", Errno.EAGAIN);
            Thread.Sleep(Math.Min(attempt, 20));
        }
    }

    /// <summary>
    /// Moves up to <c>batch.Length</c> frames from the receive ring into pool buffers. Frames that find the pool
    /// empty, or whose length is impossible, are dropped and counted.
    /// </summary>
    public int Receive(Span<PacketDescriptor> batch) => Receive(batch, Buffers);

    /// <summary>
    /// As <see cref="Receive(Span{PacketDescriptor})"/>, but into buffers of <paramref name="pool"/>: a forwarder
    /// (the driver daemon in shared mode) copies frames straight into the buffers of the VNIC that sends them on.
    /// </summary>
    public int Receive(Span<PacketDescriptor> batch, BufferPool pool)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (Volatile.Read(ref _peerLosses) != _peerLossesSeen)
            OnPeerLost();
        if (_armed || Volatile.Read(ref _poked) != 0)
            Awake();

        // Acquire: the slots up to the producer index are written before we see it.
        long producer = Volatile.Read(ref ShmLayout.Producer(_rx));
        long available = producer - _rxConsumer;
        if (available <= 0)
            return 0;
        if (available > _slotCount)
        {
            // Only a broken peer gets here; skip what cannot be valid rather than read slots twice.
            RingErrors++;
            _rxConsumer = producer;
            Volatile.Write(ref ShmLayout.Consumer(_rx), producer);
            return 0;
        }

        int n = 0;
        long consumer = _rxConsumer;
        int bufferSize = pool.BufferSize;
        while (n < batch.Length && consumer != producer)
        {
            byte* slot = ShmLayout.Slot(_rx, consumer, _slotMask, _slotSize);
            consumer++;
            int length = *(int*)slot;
            if (length <= 0 || length > _maxFrame || length > bufferSize)
            {
                Counters.RxDropTooLong++;
                continue;
            }
            if (!pool.TryAllocate(out int buffer))
            {
                Counters.RxDropNoBuffer++;
                continue;
            }
            Buffer.MemoryCopy(slot + ShmLayout.SlotDataOffset, pool.Pointer(buffer), bufferSize, length);
            batch[n++] = new PacketDescriptor(buffer, length);
            Counters.RxFrames++;
            Counters.RxBytes += length;
        }
        _rxConsumer = consumer;
        // Release: our reads of the slots are done before the producer may refill them.
        Volatile.Write(ref ShmLayout.Consumer(_rx), consumer);
        return n;
    }

    /// <summary>
    /// Copies frames into the transmit ring and publishes them with one index write, ringing the peer's doorbell
    /// only if it declared it is going to sleep. A full ring stops the batch (the rest stays with the caller and is
    /// counted as TxDropRingFull). Frames shorter than an Ethernet header or longer than MTU + 14 are dropped as
    /// TxErrors. With no peer connected, every frame is accepted, dropped and counted in <see cref="TxDropPeerGone"/>.
    /// </summary>
    public int Transmit(ReadOnlySpan<PacketDescriptor> batch) => Transmit(batch, Buffers);

    /// <inheritdoc/>
    public int TxPending() =>
        Volatile.Read(ref _connected) == 0 ? 0 : (int)(_txProducer - Volatile.Read(ref ShmLayout.Consumer(_tx)));

    /// <summary>
    /// As <see cref="Transmit(ReadOnlySpan{PacketDescriptor})"/> for buffers of <paramref name="pool"/> (released
    /// to it once copied): a forwarder hands on frames that another VNIC received without copying them twice.
    /// </summary>
    public int Transmit(ReadOnlySpan<PacketDescriptor> batch, BufferPool pool)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (Volatile.Read(ref _peerLosses) != _peerLossesSeen)
            OnPeerLost();
        if (Volatile.Read(ref _connected) == 0)
        {
            foreach (ref readonly var d in batch)
                pool.Release(d.Buffer);
            _txDropPeerGone += batch.Length;
            return batch.Length;
        }

        long producer = _txProducer;
        long limit = _txConsumerSeen + _slotCount;
        int accepted = 0;
        for (; accepted < batch.Length; accepted++)
        {
            ref readonly var d = ref batch[accepted];
            if (d.Length < EthHeader || d.Length > _maxFrame)
            {
                Counters.TxErrors++;
                pool.Release(d.Buffer);
                continue;
            }
            if (producer >= limit)
            {
                // Acquire: the consumer's reads of those slots are done before we see its index move.
                _txConsumerSeen = Volatile.Read(ref ShmLayout.Consumer(_tx));
                limit = _txConsumerSeen + _slotCount;
                if (producer >= limit)
                {
                    Counters.TxDropRingFull += batch.Length - accepted;
                    break;
                }
            }
            byte* slot = ShmLayout.Slot(_tx, producer, _slotMask, _slotSize);
            *(int*)slot = d.Length;
            Buffer.MemoryCopy(pool.Pointer(d.Buffer), slot + ShmLayout.SlotDataOffset, _slotSize - ShmLayout.SlotDataOffset, d.Length);
            producer++;
            pool.Release(d.Buffer);
            Counters.TxFrames++;
            Counters.TxBytes += d.Length;
        }

        if (producer != _txProducer)
        {
            _txProducer = producer;
            // Release: the slots are written before the consumer can see the index.
            Volatile.Write(ref ShmLayout.Producer(_tx), producer);
            // Store-load fence: the index must be visible before we read Sleeping (the consumer does the mirror
            // image: Sleeping, fence, index), else both could miss each other's write and the consumer sleep on.
            Interlocked.MemoryBarrier();
            ref int sleeping = ref ShmLayout.Sleeping(_tx);
            if (Volatile.Read(ref sleeping) != 0 && Interlocked.CompareExchange(ref sleeping, 0, 1) == 1)
                RingPeer();
        }
        return accepted;
    }

    /// <summary>
    /// Declares that the caller is about to sleep on <see cref="WaitHandle"/>, so that the peer's next Transmit
    /// writes the eventfd. Returns false (do not sleep) when frames are already waiting, having withdrawn the
    /// declaration, or when the peer came or went.
    /// </summary>
    public bool PrepareToSleep()
    {
        if (_disposed)
            return true;
        if (Volatile.Read(ref _peerLosses) != _peerLossesSeen || Volatile.Read(ref _poked) != 0)
            return false;
        // Exchange is a full fence: Sleeping is visible before we read the producer index.
        ref int sleeping = ref ShmLayout.Sleeping(_rx);
        Interlocked.Exchange(ref sleeping, 1);
        if (Volatile.Read(ref ShmLayout.Producer(_rx)) == _rxConsumer)
        {
            _armed = true;
            return true;
        }
        // Frames are waiting and we will not sleep: withdraw the declaration now. The producer writes the eventfd
        // only after taking the flag from 1 to 0 (compare-exchange), so exactly one of us takes it. If we do, no
        // doorbell was or will be written for it, and the next Receive has no eventfd to read. If the producer did,
        // its write is done or on the way: arm, so that Awake reads it (a write landing after that read costs one
        // early wake-up, as after any sleep). No wake-up can be lost: we are not sleeping, and the next sleep
        // declares afresh here. A declaration still armed from an earlier call stays armed.
        if (Interlocked.Exchange(ref sleeping, 0) == 0)
            _armed = true;
        return false;
    }

    /// <summary>Whether this end has declared it is going to sleep (its ring's Sleeping flag), so that the peer's
    /// next send rings the doorbell.</summary>
    public bool DeclaredSleep => !_disposed && Volatile.Read(ref ShmLayout.Sleeping(_rx)) != 0;

    /// <summary>Frames skipped because the ring indices were impossible (a broken peer).</summary>
    public long RingErrors { get; private set; }

    public void Dispose()
    {
        if (_disposed)
            return;
        _disposed = true;
        ulong one = 1;
        Libc.Write(_stopFd, &one, sizeof(ulong));
        _monitor?.Join();
        // Free the name first, then hang up: the peer's monitor, seeing the hang-up, can take the name at once.
        if (_listenFd >= 0)
            Libc.Close(_listenFd);
        Volatile.Write(ref _listenFd, -1);
        if (_connFd >= 0)
            Libc.Close(_connFd);
        _connFd = -1;
        Volatile.Write(ref _connected, 0);
        Volatile.Write(ref _peerPid, 0);
        Libc.Munmap(_region, _regionBytes);
        Libc.Close(_memfd);
        Libc.Close(_ownDoorbell);
        Libc.Close(_peerDoorbell);
        Libc.Close(_stopFd);
        Buffers.Dispose();
    }

    // ---------------------------------------------------------------------------------------------------------
    // Polling-thread helpers

    /// <summary>After a sleep (or a poke from the monitor): stop asking for doorbells and clear the eventfd.</summary>
    private void Awake()
    {
        _armed = false;
        Volatile.Write(ref _poked, 0);
        Interlocked.Exchange(ref ShmLayout.Sleeping(_rx), 0);
        // Read whether or not the producer rang: it may have taken the flag and not written yet, and a count left
        // behind would only cost one early wake-up, which the next Awake clears.
        ulong count;
        Libc.Read(_ownDoorbell, &count, sizeof(ulong));
    }

    private void RingPeer()
    {
        ulong one = 1;
        Libc.Write(_peerDoorbell, &one, sizeof(ulong));
        _doorbellsRung++;
    }

    /// <summary>The monitor saw the peer go: drop what it left in our receive ring.</summary>
    private void OnPeerLost()
    {
        long losses, cutoff;
        lock (_sync)
        {
            losses = _peerLosses;
            cutoff = _rxCutoff;
        }
        _peerLossesSeen = losses;
        long stale = cutoff - _rxConsumer;
        if (stale > 0 && stale <= _slotCount)
        {
            _rxDiscarded += stale;
            _rxConsumer = cutoff;
            Volatile.Write(ref ShmLayout.Consumer(_rx), cutoff);
        }
    }

    // ---------------------------------------------------------------------------------------------------------
    // Opening

    private static byte[] AbstractName(string spec, string name)
    {
        if (name.Length == 0)
            throw new ArgumentException($"{spec}: the name is empty", nameof(name));
        if (name.Length > MaxNameLength)
            throw new ArgumentException($"{spec}: the name has {name.Length} characters, at most {MaxNameLength} fit in sun_path", nameof(name));
        foreach (char c in name)
        {
            if (c == '/')
                throw new ArgumentException($"{spec}: the name must not contain '/'", nameof(name));
            if (c is <= ' ' or > '~')
                throw new ArgumentException($"{spec}: the name must be printable ASCII without spaces", nameof(name));
        }
        var bytes = new byte[AbstractPrefix.Length + name.Length];
        for (int i = 0; i < AbstractPrefix.Length; i++)
            bytes[i] = (byte)AbstractPrefix[i];
        for (int i = 0; i < name.Length; i++)
            bytes[AbstractPrefix.Length + i] = (byte)name[i];
        return bytes;
    }

    private static int BufferSizeFor(VnicOptions options, int maxFrame) =>
        options.BufferSize is int wanted && wanted >= maxFrame ? wanted : (maxFrame + 1023) & ~1023;

    private static MacAddress DrawMac(VnicOptions options, MacAddress avoid)
    {
        if (options.MacAddress is { } m)
            return m;
        MacAddress mac;
        do
            mac = MacAddress.LocallyAdministered(SystemRandom.Instance.NextUInt64());
        while (mac == avoid || mac == MacAddress.Zero);
        return mac;
    }

    /// <summary>Binds the name, makes the region and its doorbells. Null if another opener bound the name first.</summary>
    private static ShmVnic? Create(string spec, string name, byte[] abstractName, VnicOptions options)
    {
        int listenFd = BindListener(abstractName, out int bindErrno);
        if (listenFd < 0)
        {
            if (bindErrno == EADDRINUSE)
                return null;
            throw OpenFailure.Call(spec, $"bind/listen(\"@{AbstractPrefix}{name}\")", bindErrno);
        }

        int mtu = DefaultMtu;
        int maxFrame = mtu + EthHeader;
        int slotCount = options.RingSize;
        int slotSize = ShmLayout.SlotSizeFor(maxFrame);
        long regionBytes = ShmLayout.RegionBytes(slotCount, slotSize);
        int memfd = -1, own = -1, peer = -1, stop = -1;
        byte* region = null;
        BufferPool? pool = null;
        try
        {
            Span<byte> memfdName = stackalloc byte[AbstractPrefix.Length + MaxNameLength + 1];
            memfdName.Clear();
            abstractName.CopyTo(memfdName);
            fixed (byte* p = memfdName)
                memfd = Libc.MemfdCreate(p, MFD_CLOEXEC | MFD_ALLOW_SEALING);
            if (memfd < 0)
                throw OpenFailure.Call(spec, "memfd_create", Errno.Last);
            if (Libc.Ftruncate(memfd, (nint)regionBytes) != 0)
                throw OpenFailure.Call(spec, $"ftruncate(memfd, {regionBytes} B)", Errno.Last);
            // Neither end can then shrink the file under the other's mapping (which would raise SIGBUS).
            if (Libc.Fcntl(memfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0)
                throw OpenFailure.Call(spec, "fcntl(F_ADD_SEALS)", Errno.Last);
            region = Map(spec, memfd, (nuint)regionBytes);
            // A fresh memfd reads as zeros: indices 0, nobody sleeping. Only the header needs writing.
            var header = (RegionHeader*)region;
            header->Version = ShmLayout.Version;
            header->Mtu = (uint)mtu;
            header->SlotCount = (uint)slotCount;
            header->SlotSize = (uint)slotSize;
            header->RegionBytes = (ulong)regionBytes;
            Volatile.Write(ref header->Magic, ShmLayout.Magic);

            own = NewEventFd(spec);
            peer = NewEventFd(spec);
            stop = NewEventFd(spec);
            pool = new BufferPool(options.BufferCount, BufferSizeFor(options, maxFrame));
            var vnic = new ShmVnic(name, abstractName, DrawMac(options, MacAddress.Zero), pool, region, (nuint)regionBytes,
                memfd, own, peer, stop, rxRing: 0, mtu, slotCount, slotSize)
            {
                _listenFd = listenFd,
            };
            vnic._peerUid = options.ShmPeerUid ?? Libc.GetEuid();
            vnic.StartMonitor();
            return vnic;
        }
        catch
        {
            Libc.Close(listenFd);
            if (region != null)
                Libc.Munmap(region, (nuint)regionBytes);
            CloseAll(memfd, own, peer, stop);
            pool?.Dispose();
            throw;
        }
    }

    /// <summary>
    /// The joiner's half of the handshake on connected socket <paramref name="fd"/> (owned from here). Null when
    /// the listener went away mid-way (the caller starts over).
    /// </summary>
    private static ShmVnic? Join(string spec, string name, byte[] abstractName, int fd, VnicOptions options)
    {
        int memfd = -1, own = -1, peer = -1, stop = -1;
        byte* region = null;
        nuint regionBytes = 0;
        BufferPool? pool = null;
        ShmVnic? vnic = null;
        bool handedOver = false;
        try
        {
            var cred = PeerCredentials(fd);
            if (options.ShmJoinPid is { } expected && cred.Pid != expected)
            {
                Send(fd, MessageKind.Refused, 0, 0, []);
                throw OpenFailure.Message(spec, $"the endpoint listening is pid {cred.Pid}'s, not pid {expected}'s", Errno.EACCES);
            }
            // Our own user's endpoint, root's (onload-driverd's shared mode, which names us its peer), or the one user
            // we were told of (onload-driverd rejoining its client's rings).
            if (cred.Uid != Libc.GetEuid() && cred.Uid != 0 && cred.Uid != options.ShmPeerUid)
            {
                Send(fd, MessageKind.Refused, 0, 0, []);
                throw OpenFailure.Message(spec, $"the endpoint listening (pid {cred.Pid}) runs as uid {cred.Uid}, we as {Libc.GetEuid()}", Errno.EACCES);
            }

            Span<int> fds = stackalloc int[4];
            int timeoutMs = options.ShmJoinPid is null ? HandshakeTimeoutMs : JoinOnlyTimeoutMs;
            int got = ReceiveMessage(spec, fd, timeoutMs, cred.Pid, "its Hello", out var hello, fds);
            if (got < 0)
                return null;
            if (hello.Kind == MessageKind.Hello && got == 3 && hello.JoinerRxRing <= 1)
            {
                memfd = fds[0];
                own = fds[1];
                peer = fds[2];
            }
            else
            {
                CloseAll(fds[..got]);
                throw hello.Kind switch
                {
                    MessageKind.Busy => new IOException($"{spec} already has two endpoints (the listener is pid {cred.Pid}); " +
                        "a third can join only once one of them has gone", EADDRINUSE),
                    MessageKind.Refused => OpenFailure.Message(spec, $"the endpoint listening (pid {cred.Pid}) refused us: another user", Errno.EACCES),
                    _ => OpenFailure.Message(spec, $"unexpected handshake message {hello.Kind} with {got} descriptors from pid {cred.Pid}", EPROTO),
                };
            }

            regionBytes = (nuint)hello.RegionBytes;
            // A region its creator could shrink under our mapping would fault us: every creator seals it.
            int seals = Libc.Fcntl(memfd, F_GET_SEALS, 0);
            if (seals < 0 || (seals & F_SEAL_SHRINK) == 0)
                throw OpenFailure.Message(spec, $"the shared region of pid {cred.Pid} is not sealed against shrinking", EPROTO);
            nint size = Libc.Lseek(memfd, 0, SEEK_END);
            if (size < 0 || (ulong)size < hello.RegionBytes || hello.RegionBytes < ShmLayout.PageBytes)
                throw OpenFailure.Message(spec, $"the shared region is {size} bytes, the listener announced {hello.RegionBytes}", EPROTO);
            region = Map(spec, memfd, regionBytes);
            var header = (RegionHeader*)region;
            int mtu = (int)header->Mtu;
            int slotCount = (int)header->SlotCount;
            int slotSize = (int)header->SlotSize;
            if (Volatile.Read(ref header->Magic) != ShmLayout.Magic || header->Version != ShmLayout.Version)
                throw OpenFailure.Message(spec, $"the shared region has magic {header->Magic:x} version {header->Version}, want {ShmLayout.Magic:x} version {ShmLayout.Version}", EPROTO);
            if (mtu is < 68 or > 65535 || slotCount is < 2 or > 1 << 16 || !BitOperations.IsPow2(slotCount)
                || slotSize < ShmLayout.SlotSizeFor(mtu + EthHeader) || slotSize % 64 != 0
                || header->RegionBytes != hello.RegionBytes
                || (ulong)ShmLayout.RegionBytes(slotCount, slotSize) != hello.RegionBytes)
                throw OpenFailure.Message(spec, $"the shared region's geometry is inconsistent (MTU {mtu}, {slotCount} slots of {slotSize} B, {hello.RegionBytes} B)", EPROTO);

            var peerMac = new MacAddress(hello.Mac);
            var mac = DrawMac(options, peerMac);
            if (mac == peerMac)
            {
                Send(fd, MessageKind.Abort, 0, 0, []);
                throw new ArgumentException($"{spec}: MAC {mac} is the other endpoint's (pid {cred.Pid}); the two ends need different ones", nameof(options));
            }
            stop = NewEventFd(spec);
            pool = new BufferPool(options.BufferCount, BufferSizeFor(options, mtu + EthHeader));
            // From here the vnic owns the region, the descriptors and the pool (its Dispose releases them).
            vnic = new ShmVnic(name, abstractName, mac, pool, region, regionBytes, memfd, own, peer, stop,
                (int)hello.JoinerRxRing, mtu, slotCount, slotSize);

            if (!Send(fd, MessageKind.Ack, 0, mac.Value, []))
                return null;
            got = ReceiveMessage(spec, fd, timeoutMs, cred.Pid, "its Ready", out var ready, fds);
            if (got < 0)
                return null;
            CloseAll(fds[..got]);
            if (ready.Kind != MessageKind.Ready)
                throw OpenFailure.Message(spec, $"unexpected handshake message {ready.Kind} from pid {cred.Pid}", EPROTO);

            vnic._connFd = fd;
            vnic._connected = 1;
            vnic._peerPid = cred.Pid;
            vnic._peerMac = (long)peerMac.Value;
            vnic._peerUid = options.ShmPeerUid ?? Libc.GetEuid();
            vnic.StartMonitor();
            handedOver = true;
            return vnic;
        }
        finally
        {
            if (!handedOver)
            {
                Libc.Close(fd);
                if (vnic is not null)
                {
                    vnic.Dispose();
                }
                else
                {
                    if (region != null)
                        Libc.Munmap(region, regionBytes);
                    CloseAll(memfd, own, peer, stop);
                    pool?.Dispose();
                }
            }
        }
    }

    private static byte* Map(string spec, int memfd, nuint bytes)
    {
        void* p = Libc.Mmap(null, bytes, LinuxConstants.PROT_READ | LinuxConstants.PROT_WRITE, LinuxConstants.MAP_SHARED, memfd, 0);
        if (p == (void*)-1)
            throw OpenFailure.Call(spec, $"mmap of the shared region ({bytes} B)", Errno.Last);
        return (byte*)p;
    }

    private static int NewEventFd(string spec)
    {
        int fd = Libc.EventFd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (fd < 0)
            throw OpenFailure.Call(spec, "eventfd", Errno.Last);
        return fd;
    }

    private static void CloseAll(params ReadOnlySpan<int> fds)
    {
        foreach (int fd in fds)
            if (fd >= 0)
                Libc.Close(fd);
    }

    /// <summary>A listening socket on the abstract name, or -1 with errno (EADDRINUSE: someone holds it).</summary>
    private static int BindListener(byte[] abstractName, out int errno)
    {
        errno = 0;
        int fd = Libc.Socket(AF_UNIX, SOCK_SEQPACKET | LinuxConstants.SOCK_CLOEXEC, 0);
        if (fd < 0)
        {
            errno = Errno.Last;
            return -1;
        }
        uint len = SockaddrUn.Abstract(abstractName, out var addr);
        if (Libc.Bind(fd, &addr, len) != 0 || Libc.Listen(fd, 4) != 0)
        {
            errno = Errno.Last;
            Libc.Close(fd);
            return -1;
        }
        return fd;
    }

    private static UCred PeerCredentials(int fd)
    {
        UCred cred;
        uint len = (uint)sizeof(UCred);
        if (Libc.GetSockOpt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0)
            return new UCred { Pid = 0, Uid = uint.MaxValue, Gid = uint.MaxValue };
        return cred;
    }

    /// <summary>Sends one handshake message, with <paramref name="fds"/> as SCM_RIGHTS. False if the peer is gone.</summary>
    private static bool Send(int fd, MessageKind kind, ulong regionBytes, ulong mac, ReadOnlySpan<int> fds, uint joinerRxRing = 0)
    {
        var msg = new RendezvousMessage
        {
            Magic = ShmLayout.Magic,
            Version = ShmLayout.Version,
            Kind = kind,
            RegionBytes = regionBytes,
            JoinerRxRing = joinerRxRing,
            Mac = mac,
        };
        var iov = new IoVec { Base = &msg, Length = (nuint)sizeof(RendezvousMessage) };
        byte* control = stackalloc byte[CmsgHdr.Space(4 * sizeof(int))];
        var hdr = new MsgHdr { Iov = &iov, IovLength = 1 };
        if (fds.Length > 0)
        {
            if (fds.Length > 4)
                throw new ArgumentOutOfRangeException(nameof(fds));
            var cmsg = (CmsgHdr*)control;
            cmsg->Length = (nuint)CmsgHdr.Len(fds.Length * sizeof(int));
            cmsg->Level = SOL_SOCKET;
            cmsg->Type = SCM_RIGHTS;
            fds.CopyTo(new Span<int>(control + CmsgHdr.Size, fds.Length));
            hdr.Control = control;
            hdr.ControlLength = (nuint)CmsgHdr.Space(fds.Length * sizeof(int));
        }
        nint sent;
        do
            sent = Libc.SendMsg(fd, &hdr, MSG_NOSIGNAL);
        while (sent < 0 && Errno.Last == Errno.EINTR);
        return sent == sizeof(RendezvousMessage);
    }

    /// <summary>
    /// Waits up to <paramref name="timeoutMs"/> for one handshake message and the descriptors that came with it
    /// (at most <c>fds.Length</c>, CLOEXEC). Returns how many descriptors, or -1 if the peer went away. Throws on a
    /// timeout or a malformed message.
    /// </summary>
    private static int ReceiveMessage(string spec, int fd, int timeoutMs, int peerPid, string what,
        out RendezvousMessage msg, Span<int> fds)
    {
        msg = default;
        var pfd = new PollFd { Fd = fd, Events = POLLIN };
        int rc;
        do
            rc = Libc.Poll(&pfd, 1, timeoutMs);
        while (rc < 0 && Errno.Last == Errno.EINTR);
        if (rc == 0)
            throw OpenFailure.Message(spec, $"the other endpoint (pid {peerPid}) did not send {what} within {timeoutMs} ms", ETIMEDOUT);

        RendezvousMessage m;
        var iov = new IoVec { Base = &m, Length = (nuint)sizeof(RendezvousMessage) };
        int controlBytes = CmsgHdr.Space(4 * sizeof(int));
        byte* control = stackalloc byte[controlBytes];
        new Span<byte>(control, controlBytes).Clear();
        var hdr = new MsgHdr { Iov = &iov, IovLength = 1, Control = control, ControlLength = (nuint)controlBytes };
        nint n;
        do
            n = Libc.RecvMsg(fd, &hdr, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
        while (n < 0 && Errno.Last == Errno.EINTR);
        int e = n < 0 ? Errno.Last : 0;

        // Collect descriptors first, so that they are closed whatever else is wrong.
        int count = 0;
        if (n >= 0 && hdr.ControlLength >= CmsgHdr.Size)
        {
            var cmsg = (CmsgHdr*)control;
            if (cmsg->Level == SOL_SOCKET && cmsg->Type == SCM_RIGHTS && cmsg->Length >= CmsgHdr.Size)
            {
                int k = (int)(((long)cmsg->Length - CmsgHdr.Size) / sizeof(int));
                var incoming = new ReadOnlySpan<int>(control + CmsgHdr.Size, Math.Min(k, 4));
                for (int i = 0; i < incoming.Length; i++)
                {
                    if (count < fds.Length)
                        fds[count++] = incoming[i];
                    else
                        Libc.Close(incoming[i]);
                }
            }
        }

        if (n == 0 || (n < 0 && e is ECONNRESET or 32 /* EPIPE */))
            return -1;
        if (n < 0)
            throw OpenFailure.Call(spec, "recvmsg on the rendezvous socket", e);
        if (n != sizeof(RendezvousMessage) || m.Magic != ShmLayout.Magic || m.Version != ShmLayout.Version
            || (hdr.Flags & MSG_CTRUNC) != 0)
        {
            for (int i = 0; i < count; i++)
                Libc.Close(fds[i]);
            throw OpenFailure.Message(spec, $"the other endpoint (pid {peerPid}) sent a malformed handshake message ({n} bytes)", EPROTO);
        }
        msg = m;
        return count;
    }

    // ---------------------------------------------------------------------------------------------------------
    // The monitor thread: rendezvous and peer liveness. It owns _listenFd and _connFd; it reads (never writes)
    // the polling thread's producer index, and writes the consumer index and Sleeping flag of our transmit ring
    // only while no peer is connected (they belong to the peer's side, and the peer is gone).

    private void StartMonitor()
    {
        _monitor = new Thread(MonitorLoop)
        {
            IsBackground = true,
            Name = "onload " + Spec + " monitor",
        };
        _monitor.Start();
    }

    private void MonitorLoop()
    {
        try
        {
            PollFd* fds = stackalloc PollFd[3];
            while (true)
            {
                int n = 0, listenAt = -1, connAt = -1;
                fds[n++] = new PollFd { Fd = _stopFd, Events = POLLIN };
                if (_listenFd >= 0)
                {
                    listenAt = n;
                    fds[n++] = new PollFd { Fd = _listenFd, Events = POLLIN };
                }
                if (_connFd >= 0)
                {
                    connAt = n;
                    fds[n++] = new PollFd { Fd = _connFd, Events = POLLIN | POLLRDHUP };
                }
                // Holding neither socket means the name was taken when we tried to listen: retry now and then.
                int timeout = listenAt < 0 && connAt < 0 ? ListenRetryMs : -1;
                int rc = Libc.Poll(fds, (nuint)n, timeout);
                if (rc < 0)
                {
                    int e = Errno.Last;
                    if (e == Errno.EINTR)
                        continue;
                    throw new IOException($"{Spec}: monitor poll failed: {Errno.Describe(e)}");
                }
                if (fds[0].Revents != 0)
                    return;
                if (connAt >= 0 && fds[connAt].Revents != 0 && PeerHungUp(fds[connAt].Revents))
                    PeerLost();
                if (listenAt >= 0 && (fds[listenAt].Revents & POLLIN) != 0)
                    AcceptOne();
                if (_listenFd < 0 && _connFd < 0)
                    TryListen(out _);
            }
        }
        catch (Exception e)
        {
            Volatile.Write(ref _monitorError, e.Message);
        }
    }

    private bool PeerHungUp(short revents)
    {
        if ((revents & (POLLHUP | POLLERR | POLLRDHUP | POLLNVAL)) != 0)
            return true;
        // Readable: after the handshake the peer sends nothing, so this is EOF (or a message we ignore).
        byte* buf = stackalloc byte[64];
        var iov = new IoVec { Base = buf, Length = 64 };
        var hdr = new MsgHdr { Iov = &iov, IovLength = 1 };
        nint n = Libc.RecvMsg(_connFd, &hdr, MSG_DONTWAIT);
        if (n > 0)
            return false;
        return n == 0 || Errno.Last is not (Errno.EAGAIN or Errno.EINTR);
    }

    /// <summary>The peer died or disposed: take the name if it was the listener, then tell the polling thread.</summary>
    private void PeerLost()
    {
        Libc.Close(_connFd);
        _connFd = -1;
        // Listen before publishing the loss, so that whoever sees PeerConnected go false can already join us. A
        // dying process's descriptors close one by one: its listening socket may outlive its connection briefly.
        for (int i = 0; _listenFd < 0 && i < 10; i++)
        {
            if (!TryListen(out int e) && e != EADDRINUSE)
                break;
            if (_listenFd < 0)
                Thread.Sleep(2);
        }
        lock (_sync)
        {
            // The dead peer's producer index no longer moves: what lies below it in our receive ring is stale.
            _rxCutoff = Volatile.Read(ref ShmLayout.Producer(_rx));
            Volatile.Write(ref _peerPid, 0);
            Volatile.Write(ref _peerMac, 0);
            // The loss before the flag: whoever reads PeerConnected false then sees the loss as well.
            Volatile.Write(ref _peerLosses, _peerLosses + 1);
            Volatile.Write(ref _connected, 0);
        }
        Poke();
    }

    private bool TryListen(out int errno)
    {
        int fd = BindListener(_abstractName, out errno);
        if (fd < 0)
            return false;
        Volatile.Write(ref _listenFd, fd);
        return true;
    }

    /// <summary>Wakes the polling thread if it sleeps, so that it notices a peer coming or going.</summary>
    private void Poke()
    {
        Volatile.Write(ref _poked, 1);
        ulong one = 1;
        Libc.Write(_ownDoorbell, &one, sizeof(ulong));
    }

    /// <summary>The listener's half of the handshake, for one connection.</summary>
    private void AcceptOne()
    {
        int fd = Libc.Accept4(_listenFd, null, null, LinuxConstants.SOCK_CLOEXEC);
        if (fd < 0)
            return;
        try
        {
            var cred = PeerCredentials(fd);
            if (cred.Uid != Libc.GetEuid() && cred.Uid != _peerUid)
            {
                Send(fd, MessageKind.Refused, 0, 0, []);
                return;
            }
            if (Volatile.Read(ref _connected) != 0)
            {
                Send(fd, MessageKind.Busy, 0, 0, []);
                return;
            }

            // Make the rings fit for a newcomer. The ring we send on: whatever the last peer left unread is
            // skipped (its consumer index moves up to our producer index), and its Sleeping flag is cleared.
            // The ring we read: the newcomer produces on from where the last peer stopped.
            ulong stale;
            Libc.Read(_peerDoorbell, &stale, sizeof(ulong));
            long producer = Volatile.Read(ref ShmLayout.Producer(_tx));
            long unread = producer - Volatile.Read(ref ShmLayout.Consumer(_tx));
            Volatile.Write(ref ShmLayout.Consumer(_tx), producer);
            Volatile.Write(ref ShmLayout.Sleeping(_tx), 0);

            if (!Send(fd, MessageKind.Hello, (ulong)_regionBytes, MacAddress.Value, [_memfd, _peerDoorbell, _ownDoorbell],
                    joinerRxRing: (uint)(1 - RxRing)))
                return;
            Span<int> fds = stackalloc int[4];
            int got;
            RendezvousMessage ack;
            try
            {
                got = ReceiveMessage(Spec, fd, HandshakeTimeoutMs, cred.Pid, "its Ack", out ack, fds);
            }
            catch (IOException)
            {
                return; // a slow or confused joiner: drop it, keep listening
            }
            for (int i = 0; i < got; i++)
                Libc.Close(fds[i]);
            if (got < 0 || ack.Kind != MessageKind.Ack)
                return;

            if (unread > 0 && unread <= _slotCount)
                Interlocked.Add(ref _txDiscarded, unread);
            lock (_sync)
            {
                _connFd = fd;
                Volatile.Write(ref _peerPid, cred.Pid);
                Volatile.Write(ref _peerMac, (long)ack.Mac);
                Interlocked.Increment(ref _joins);
                Volatile.Write(ref _connected, 1);
            }
            fd = -1;
            Poke();
            // Last: when the joiner's Open returns, this end counts it as its peer already. If the joiner died
            // meanwhile, the next poll sees the hang-up.
            Send(_connFd, MessageKind.Ready, 0, 0, []);
        }
        finally
        {
            if (fd >= 0)
                Libc.Close(fd);
        }
    }
}
