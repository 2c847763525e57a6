using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Diagnostics;
using System.Runtime.InteropServices;
using Onload.Vnic;
using Onload.Vnic.AfXdp;
using Onload.Vnic.Native;
using Onload.Vnic.Shm;

namespace Onload.Apps.Driverd;

/// <summary>
/// Shared mode on one interface: the daemon owns the queue's AF_XDP socket and moves each client's frames between
/// it and that client's own shared-memory rings, so no client maps another's packets. One thread per interface;
/// the control loop changes its tables only through <see cref="Post"/>, so the data path takes no lock.
/// </summary>
/// <remarks>
/// <para>Receive: a frame from the socket is classified by protocol and destination port (the filters are per
/// port: each is backed by a kernel socket holding the port, so a port has one owner) and copied once, into a slot
/// of its owner's RX ring. Frames that belong to nobody (a filter removed while they were in flight) are dropped
/// and counted: XDP cannot hand a frame back to the kernel once redirected, and by then the kernel's socket for the
/// port is gone or never expected it.</para>
/// <para>Transmit: a client's frame is copied once, from its TX ring into a buffer of the socket's UMEM, and sent
/// only if it is IPv4 TCP or UDP from the interface's MAC and from a port the client owns; anything else is
/// dropped and counted, so a client cannot send as another.</para>
/// </remarks>
internal sealed unsafe class SharedForwarder : IDisposable
{
    private const int Batch = 64;
    private const int EthHeader = 14;

    private readonly AfXdpVnic _xsk;
    private readonly MacAddress _mac;
    // The interface's IPv4 addresses (host order), the only sources a client may send from; swapped whole.
    private volatile uint[] _addresses;
    private readonly Endpoint?[] _endpoints;
    // Owner slot + 1 per port, per protocol; 0: nobody. Written only by the forwarder thread (via Post).
    private readonly int[] _tcpOwner = new int[65536];
    private readonly int[] _udpOwner = new int[65536];
    private readonly ConcurrentQueue<Action> _commands = new();
    private readonly int _wakeFd;
    private readonly long _spinTicks;
    private readonly Thread _thread;
    private volatile bool _stop;
    private int _active;

    public long RxForwarded;
    public long RxDroppedNoOwner;
    public long RxDroppedRingFull;
    public long TxForwarded;
    public long TxRefused;
    public long TxDroppedRingFull;

    private sealed class Endpoint(ShmVnic vnic, int expectedPid)
    {
        public readonly ShmVnic Vnic = vnic;
        public readonly int ExpectedPid = expectedPid;
        public bool Verified;
        public bool Refused;
        /// <summary>The endpoint's join count when its peer was verified.</summary>
        public long VerifiedJoins;
        /// <summary>The datagram the client is sending in fragments (its first fragment passed the port check): its
        /// later fragments, which carry no ports, go too. A stack sends a datagram's fragments one after another.</summary>
        public bool Fragmenting;
        public ushort FragmentId;
        public uint FragmentDestination;
    }

    public SharedForwarder(AfXdpVnic xsk, MacAddress mac, uint[] addresses, int maxEndpoints, TimeSpan spin)
    {
        _xsk = xsk;
        _mac = mac;
        _addresses = addresses;
        _endpoints = new Endpoint?[maxEndpoints];
        _spinTicks = (long)(spin.TotalSeconds * Stopwatch.Frequency);
        _wakeFd = Libc.EventFd(0, UnixIpcConstants.EFD_NONBLOCK | UnixIpcConstants.EFD_CLOEXEC);
        if (_wakeFd < 0)
            throw new IOException($"eventfd: errno {Marshal.GetLastPInvokeError()}");
        _thread = new Thread(Run) { IsBackground = true, Name = $"forwarder {xsk.Spec}" };
        _thread.Start();
    }

    public AfXdpVnic Socket => _xsk;

    /// <summary>Runs <paramref name="command"/> on the forwarder thread and waits for it.</summary>
    public void Post(Action command)
    {
        using var done = new ManualResetEventSlim();
        Exception? failure = null;
        _commands.Enqueue(() =>
        {
            try { command(); }
            catch (Exception e) { failure = e; }
            finally { done.Set(); }
        });
        Libc.SignalEventFd(_wakeFd);
        done.Wait();
        if (failure is not null)
            throw new InvalidOperationException("forwarder command failed", failure);
    }

    /// <summary>Adds a client's rings at <paramref name="slot"/>; frames reach it once the peer that joins is
    /// <paramref name="clientPid"/> (SO_PEERCRED), and never if another process joined first.</summary>
    public void AddEndpoint(int slot, ShmVnic vnic, int clientPid) => Post(() =>
    {
        _endpoints[slot] = new Endpoint(vnic, clientPid);
        _active++;
    });

    /// <summary>Removes a client's rings (its ports' owners must have been cleared first) and closes them.</summary>
    public void RemoveEndpoint(int slot) => Post(() =>
    {
        var e = _endpoints[slot];
        if (e is null)
            return;
        _endpoints[slot] = null;
        _active--;
        e.Vnic.Dispose();
    });

    /// <summary>The interface's addresses changed (the kernel's, read again over rtnetlink).</summary>
    public void SetAddresses(uint[] addresses) => _addresses = addresses;

    public void SetOwner(byte protocol, ushort port, int slot) => Post(() => Owners(protocol)[port] = slot + 1);

    public void ClearOwner(byte protocol, ushort port) => Post(() => Owners(protocol)[port] = 0);

    private int[] Owners(byte protocol) => protocol == 6 ? _tcpOwner : _udpOwner;

    private void Run()
    {
        Span<PacketDescriptor> batch = stackalloc PacketDescriptor[Batch];
        long lastWork = Stopwatch.GetTimestamp();
        while (!_stop)
        {
            while (_commands.TryDequeue(out var command))
                command();
            int work = ForwardReceived(batch) + ForwardSent(batch);
            long now = Stopwatch.GetTimestamp();
            if (work > 0)
            {
                lastWork = now;
                continue;
            }
            if (now - lastWork < _spinTicks)
                continue;
            Sleep();
            lastWork = Stopwatch.GetTimestamp();
        }
    }

    private int ForwardReceived(Span<PacketDescriptor> batch)
    {
        int n = _xsk.Receive(batch);
        var pool = _xsk.Buffers;
        int i = 0;
        // Each frame is classified once: the frame that ends a run starts the next one with its slot known.
        int slot = n > 0 ? Classify(pool, batch[0], destination: true) : -1;
        while (i < n)
        {
            var e = slot >= 0 ? _endpoints[slot] : null;
            int run = 1;
            int next = -1;
            while (i + run < n && (next = Classify(pool, batch[i + run], destination: true)) == slot)
                run++;
            var frames = batch.Slice(i, run);
            if (e is null || !Usable(e))
            {
                foreach (var d in frames)
                    pool.Release(d.Buffer);
                RxDroppedNoOwner += run;
            }
            else
            {
                int sent = e.Vnic.Transmit(frames, pool);
                for (int k = sent; k < run; k++)
                    pool.Release(frames[k].Buffer);
                RxForwarded += sent;
                RxDroppedRingFull += run - sent;
            }
            i += run;
            slot = next;
        }
        return n;
    }

    private int ForwardSent(Span<PacketDescriptor> batch)
    {
        if (_active == 0)
            return 0;
        int total = 0;
        var pool = _xsk.Buffers;
        for (int slot = 0; slot < _endpoints.Length; slot++)
        {
            var e = _endpoints[slot];
            if (e is null || !Usable(e))
                continue;
            int n = e.Vnic.Receive(batch, pool);
            if (n == 0)
                continue;
            total += n;
            int kept = 0;
            for (int k = 0; k < n; k++)
            {
                if (SentByOwner(e, slot, pool, batch[k]) && SourceIsOurs(pool, batch[k]))
                    batch[kept++] = batch[k];
                else
                {
                    pool.Release(batch[k].Buffer);
                    TxRefused++;
                }
            }
            int sent = _xsk.Transmit(batch[..kept]);
            for (int k = sent; k < kept; k++)
                pool.Release(batch[k].Buffer);
            TxForwarded += sent;
            TxDroppedRingFull += kept - sent;
        }
        return total;
    }

    /// <summary>
    /// Whether a client's frame is from a port it owns: a TCP or UDP header's source port, or for a fragment after
    /// the first (no ports), that it belongs to the datagram whose first fragment the client just sent.
    /// </summary>
    private bool SentByOwner(Endpoint e, int slot, BufferPool pool, in PacketDescriptor d)
    {
        var f = new ReadOnlySpan<byte>(pool.Pointer(d.Buffer), d.Length);
        bool ipv4 = f.Length >= EthHeader + 20 && BinaryPrimitives.ReadUInt16BigEndian(f[12..]) == 0x0800 && (f[EthHeader] >> 4) == 4;
        ushort flagsAndOffset = ipv4 ? BinaryPrimitives.ReadUInt16BigEndian(f[(EthHeader + 6)..]) : (ushort)0;
        ushort id = ipv4 ? BinaryPrimitives.ReadUInt16BigEndian(f[(EthHeader + 4)..]) : (ushort)0;
        uint destination = ipv4 ? BinaryPrimitives.ReadUInt32BigEndian(f[(EthHeader + 16)..]) : 0;
        if (ipv4 && (flagsAndOffset & 0x1FFF) != 0)
            return e.Fragmenting && id == e.FragmentId && destination == e.FragmentDestination;
        if (Classify(pool, d, destination: false) != slot)
            return false;
        e.Fragmenting = (flagsAndOffset & 0x2000) != 0; // MF on the first fragment
        e.FragmentId = id;
        e.FragmentDestination = destination;
        return true;
    }

    /// <summary>A client's rings carry frames once the process that joined them is the one that attached.</summary>
    private static bool Usable(Endpoint e)
    {
        // A peer that left and a new one that joined (the endpoint listens again) is checked afresh.
        if (e.Verified && e.Vnic.Joins == e.VerifiedJoins)
            return e.Vnic.PeerConnected;
        if (e.Refused || !e.Vnic.PeerConnected)
            return false;
        e.VerifiedJoins = e.Vnic.Joins;
        e.Verified = e.Vnic.PeerProcessId == e.ExpectedPid;
        e.Refused = !e.Verified;
        return e.Verified;
    }

    /// <summary>
    /// The owner slot of an IPv4 TCP or UDP frame by its destination (received) or source (sent) port; -1 for
    /// anything else (other EtherTypes and protocols, fragments after the first, short or bad headers).
    /// </summary>
    private int Classify(BufferPool pool, in PacketDescriptor d, bool destination)
    {
        var f = new ReadOnlySpan<byte>(pool.Pointer(d.Buffer), d.Length);
        if (f.Length < EthHeader + 20 || BinaryPrimitives.ReadUInt16BigEndian(f[12..]) != 0x0800)
            return -1;
        var ip = f[EthHeader..];
        int ihl = (ip[0] & 0x0F) * 4;
        if ((ip[0] >> 4) != 4 || ihl < 20 || ip.Length < ihl + 4)
            return -1;
        if ((BinaryPrimitives.ReadUInt16BigEndian(ip[6..]) & 0x1FFF) != 0)
            return -1;
        byte protocol = ip[9];
        if (protocol is not (6 or 17))
            return -1;
        ushort port = BinaryPrimitives.ReadUInt16BigEndian(ip[(ihl + (destination ? 2 : 0))..]);
        return Owners(protocol)[port] - 1;
    }

    /// <summary>Sent from the interface's MAC and one of its IPv4 addresses (Classify checked the rest of the
    /// headers): a client cannot send as another host, as the kernel forbids without CAP_NET_RAW.</summary>
    private bool SourceIsOurs(BufferPool pool, in PacketDescriptor d)
    {
        var f = new ReadOnlySpan<byte>(pool.Pointer(d.Buffer), d.Length);
        if (MacAddress.Read(f.Slice(6, 6)) != _mac)
            return false;
        uint source = BinaryPrimitives.ReadUInt32BigEndian(f.Slice(EthHeader + 12, 4));
        foreach (uint a in _addresses)
            if (a == source)
                return true;
        return false;
    }

    /// <summary>Sleeps until the socket or a client's ring has frames, or a command comes (at most 100 ms).</summary>
    private void Sleep()
    {
        Span<PollFd> fds = stackalloc PollFd[2 + _endpoints.Length];
        int count = 0;
        fds[count++] = new PollFd { Fd = _xsk.WaitHandle, Events = LinuxConstants.POLLIN };
        fds[count++] = new PollFd { Fd = _wakeFd, Events = LinuxConstants.POLLIN };
        int timeoutMs = 100;
        foreach (var e in _endpoints)
        {
            if (e is not null && !e.Verified && !e.Refused)
                timeoutMs = 1; // a client joining: its doorbell is not armed yet, so look again soon
            if (e is null || !Usable(e))
                continue;
            if (!e.Vnic.PrepareToSleep())
                return;
            fds[count++] = new PollFd { Fd = e.Vnic.WaitHandle, Events = LinuxConstants.POLLIN };
        }
        if (!((IVnic)_xsk).PrepareToSleep() || !_commands.IsEmpty)
            return;
        fixed (PollFd* p = fds)
            _ = Libc.Poll(p, (nuint)count, timeoutMs);
        Libc.DrainEventFd(_wakeFd);
    }

    public void Dispose()
    {
        _stop = true;
        Libc.SignalEventFd(_wakeFd);
        _thread.Join();
        foreach (var e in _endpoints)
            e?.Vnic.Dispose();
        _xsk.Dispose();
        _ = Libc.Close(_wakeFd);
    }
}
