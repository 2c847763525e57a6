using System.Diagnostics;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using Onload.Driverlink;
using Onload.Stack.Tcp;
using Onload.Vnic;
using Onload.Vnic.AfXdp;
using Onload.Vnic.Native;
using Onload.Vnic.Netlink;
using Onload.Vnic.Shm;

namespace Onload.Apps.Driverd;

/// <summary>
/// The primary driver of one network namespace: owns the accelerated interfaces (their XDP program and filters),
/// gives clients VNICs on them, installs the filters they prove they own, forwards the kernel's link, MTU and
/// neighbour changes to them, and takes everything back from a client the moment its connection ends (a dead
/// process's socket is closed by the kernel, which the daemon sees as a hang-up).
/// </summary>
/// <remarks>One thread runs the control loop (this class); each shared-mode interface has a forwarding thread.</remarks>
internal sealed unsafe class Daemon : IDisposable
{
    private readonly DaemonOptions _options;
    private readonly DriverlinkSocket _listener;
    private readonly RtnetlinkMonitor _monitor;
    private readonly RtnetlinkSocket _rtnl;
    private readonly Dictionary<string, AcceleratedInterface> _interfaces = [];
    private readonly List<ClientSession> _clients = [];
    private readonly Dictionary<uint, VnicRecord> _vnics = [];
    private readonly VnicRecord?[] _slots;
    private readonly Hello _hello = new(PeerRole.Daemon, "onload-driverd " + DriverlinkClient.SoftwareVersion[7..]);
    private readonly string _pinDirectory;
    private readonly byte[] _buffer = new byte[MessageHeader.MaxMessageLength];
    private readonly List<NetlinkEvent> _events = [];
    private uint _nextVnicId = 1;
    private long _acceptPausedUntil;
    /// <summary>Connections at once, and per user but root's: a local user cannot exhaust the daemon's descriptors.</summary>
    private const int MaxClients = 1024;
    private const int MaxClientsPerUser = 256;
    private static readonly long HelloTimeoutTicks = 2 * Stopwatch.Frequency;
    private readonly uint _ownUid = Libc.GetEuid();
    private volatile bool _stopping;
    private long _idleSince = Stopwatch.GetTimestamp();

    public long MalformedMessages;
    public long RefusedClients;

    public Daemon(DaemonOptions options)
    {
        _options = options;
        _slots = new VnicRecord?[options.MaxVnics];
        _listener = DriverlinkSocket.Listen(options.SocketName);
        try
        {
            _monitor = RtnetlinkMonitor.Open(1 << 20);
            _rtnl = RtnetlinkSocket.Open();
        }
        catch
        {
            _listener.Dispose();
            throw;
        }
        // Pins are per namespace: the namespace's inode names its directory.
        string ns = new FileInfo("/proc/self/ns/net").LinkTarget ?? "net:[0]";
        _pinDirectory = options.PinRoot is null ? "" : Path.Combine(options.PinRoot, ns[5..^1]);
    }

    public void Stop() => _stopping = true;

    /// <summary>Asks for a reconfiguration (SIGHUP): every VNIC is suspended, each interface's program reloaded,
    /// then every VNIC resumed.</summary>
    public void RequestReload() => _reloadRequested = true;

    private volatile bool _reloadRequested;
    // A reconfiguration under way: the VNICs still to answer their Suspend, and when to stop waiting for them.
    private HashSet<uint>? _awaitingSuspend;
    private long _suspendDeadline;
    private static readonly TimeSpan SuspendTimeout = TimeSpan.FromSeconds(2);

    /// <summary>Runs until stopped or, with a grace period, until that long after the last client left.</summary>
    public void Run()
    {
        Log($"listening on @{_options.SocketName}; interfaces: {(_options.Interfaces.Count == 0 ? "any" : string.Join(", ", _options.Interfaces))}");
        AdoptLeftovers();
        var fds = new PollFd[2 + 256];
        while (!_stopping)
        {
            if (fds.Length < 2 + _clients.Count)
                fds = new PollFd[2 + _clients.Count * 2];
            bool accepting = Stopwatch.GetTimestamp() >= _acceptPausedUntil;
            fds[0] = new PollFd { Fd = accepting ? _listener.Fd : -1, Events = LinuxConstants.POLLIN };
            fds[1] = new PollFd { Fd = _monitor.Fd, Events = LinuxConstants.POLLIN };
            for (int i = 0; i < _clients.Count; i++)
                fds[2 + i] = new PollFd { Fd = _clients[i].Socket.Fd, Events = LinuxConstants.POLLIN };
            int count = 2 + _clients.Count;
            int rc;
            fixed (PollFd* p = fds)
                rc = Libc.Poll(p, (nuint)count, 200);
            if (rc < 0 && Marshal.GetLastPInvokeError() != Errno.EINTR)
                throw new IOException($"poll: errno {Marshal.GetLastPInvokeError()}");
            if (rc > 0)
            {
                // Clients first (from the end: a client may leave), then the kernel's news, then newcomers.
                for (int i = count - 1; i >= 2; i--)
                    if (fds[i].Revents != 0)
                        Serve(_clients[i - 2]);
                if (fds[1].Revents != 0)
                    ReadNetlink();
                if (fds[0].Revents != 0)
                    AcceptClient();
            }
            long now = Stopwatch.GetTimestamp();
            for (int i = _clients.Count - 1; i >= 0; i--)
            {
                var c = _clients[i];
                if (c.Stalled)
                    Drop(c, "does not read its messages (its socket buffer is full)");
                else if (!c.Greeted && now - c.Since > HelloTimeoutTicks)
                    Drop(c, "said no Hello within 2 s");
            }
            StepReload();
            StepStale();
            if (_clients.Count > 0)
                _idleSince = Stopwatch.GetTimestamp();
            else if (_options.Grace is { } grace && Stopwatch.GetElapsedTime(_idleSince) >= grace)
            {
                Log($"no client for {grace.TotalSeconds:0.#} s: exiting");
                break;
            }
        }
    }

    // ------------------------------------------------------------------------------------------------ clients

    private void AcceptClient()
    {
        DriverlinkSocket s;
        try
        {
            s = _listener.Accept();
        }
        catch (DriverlinkSocketException e)
        {
            // EMFILE/ENFILE leave the connection queued and the listener readable: pause accepting briefly rather
            // than spin on it.
            Log(e.Message);
            _acceptPausedUntil = Stopwatch.GetTimestamp() + Stopwatch.Frequency / 10;
            return;
        }
        var creds = s.PeerCredentials();
        int ofUser = 0;
        foreach (var c in _clients)
            if (c.Credentials.Uid == creds.Uid)
                ofUser++;
        if (_clients.Count >= MaxClients || (creds.Uid != 0 && ofUser >= MaxClientsPerUser))
        {
            RefusedClients++;
            Log($"client pid {creds.Pid} (uid {creds.Uid}): refused: {_clients.Count} connections, {ofUser} of this user's " +
                $"(at most {MaxClients}, {MaxClientsPerUser} per user)");
            s.Dispose();
            return;
        }
        _clients.Add(new ClientSession(s, creds) { Since = Stopwatch.GetTimestamp() });
    }

    private void Serve(ClientSession client)
    {
        Span<int> fds = stackalloc int[DriverlinkSocket.MaxDescriptors];
        var r = client.Socket.Receive(fds, out var message, dontWait: true);
        var received = fds[..r.DescriptorCount];
        try
        {
            switch (r.Status)
            {
                case ReceiveStatus.WouldBlock:
                    return;
                case ReceiveStatus.PeerClosed:
                case ReceiveStatus.Error:
                    Drop(client, null);
                    return;
                case ReceiveStatus.Ok:
                    break;
                default:
                    MalformedMessages++;
                    Drop(client, $"malformed message ({r.Status}{(r.DecodeError != DecodeError.None ? ", " + r.DecodeError : "")})");
                    return;
            }
            if (!client.Greeted)
            {
                Greet(client, message!);
                return;
            }
            switch (message)
            {
                case AttachRequest a:
                    Attach(client, a, received);
                    break;
                case Detach d:
                    if (_vnics.TryGetValue(d.VnicId, out var v) && v.Client == client)
                        Release(v);
                    break;
                case FilterInsert f:
                    Reply(client, new FilterReply(InsertFilter(client, f, received)) { RequestId = f.RequestId });
                    break;
                case FilterRemove f:
                    Reply(client, new FilterReply(RemoveFilter(client, f)) { RequestId = f.RequestId });
                    break;
                case TcpHandOver h:
                    Reply(client, HandOverTcp(client, h, received) with { RequestId = h.RequestId });
                    break;
                case Suspended s:
                    _awaitingSuspend?.Remove(s.VnicId);
                    break;
                case ResolveNeighbour n:
                    if (_vnics.TryGetValue(n.VnicId, out var rv) && rv.Client == client)
                        ResolveFor(rv, n.Address);
                    break;
                default:
                    MalformedMessages++;
                    Drop(client, $"a {message!.Kind} is not a client's message");
                    break;
            }
        }
        finally
        {
            // Descriptors a handler kept were replaced by -1.
            foreach (int fd in received)
                BackingSocket.Release(fd);
        }
    }

    private void Greet(ClientSession client, Message message)
    {
        if (message is not Hello hello || hello.Role != PeerRole.Client)
        {
            MalformedMessages++;
            Drop(client, $"sent {message.Kind} before Hello");
            return;
        }
        // Our Hello goes back whatever theirs said: an incompatible client can then say which versions differ.
        Reply(client, _hello with { RequestId = hello.RequestId });
        if (Hello.Incompatibility(_hello, hello) is { } refusal)
        {
            RefusedClients++;
            Drop(client, refusal);
            return;
        }
        client.Greeted = true;
    }

    /// <summary>
    /// Sends without waiting: a client that lets its socket buffer fill (it reads neither replies nor events) would
    /// otherwise stall the daemon for everyone. Such a client is marked and dropped at the end of the loop's turn.
    /// </summary>
    private void Reply(ClientSession client, Message message, ReadOnlySpan<int> fds = default)
    {
        if (client.Stalled)
            return;
        int e = client.Socket.Send(message, fds, dontWait: true);
        if (e == Errno.EAGAIN)
            client.Stalled = true;
        else if (e != 0 && e != Errno.EPIPE)
            Log($"client pid {client.Credentials.Pid}: send {message.Kind}: errno {e}");
    }

    /// <summary>Ends a client: every VNIC and filter it had goes, at once.</summary>
    private void Drop(ClientSession client, string? why)
    {
        if (why is not null)
            Log($"client pid {client.Credentials.Pid}: {why}: disconnected");
        foreach (var v in client.Vnics.ToArray())
            Release(v);
        _clients.Remove(client);
        client.Socket.Dispose();
    }

    // ------------------------------------------------------------------------------------------------ reconfiguration

    /// <summary>
    /// Suspend, reconfigure, resume: first every VNIC is told to stop touching its rings; once each has said so (or
    /// after <see cref="SuspendTimeout"/>, for a client too busy or too broken to answer) each interface's program is
    /// reloaded (BPF_LINK_UPDATE on the same maps: filters and sockets stay, and no frame finds no program), then
    /// every VNIC is resumed. The control loop keeps serving meanwhile.
    /// </summary>
    private void StepReload()
    {
        if (_awaitingSuspend is null)
        {
            if (!_reloadRequested)
                return;
            _reloadRequested = false;
            _awaitingSuspend = [.. _vnics.Keys];
            _suspendDeadline = Stopwatch.GetTimestamp() + (long)(SuspendTimeout.TotalSeconds * Stopwatch.Frequency);
            Log($"reconfiguring: suspending {_awaitingSuspend.Count} VNICs");
            foreach (var v in _vnics.Values)
                Reply(v.Client, new SuspendEvent(v.Id));
        }
        _awaitingSuspend.IntersectWith(_vnics.Keys); // a client that left answers no more
        bool late = Stopwatch.GetTimestamp() >= _suspendDeadline;
        if (_awaitingSuspend.Count > 0 && !late)
            return;
        if (late && _awaitingSuspend.Count > 0)
            Log($"reconfiguring: {_awaitingSuspend.Count} VNICs did not answer their suspend within {SuspendTimeout.TotalSeconds:0.#} s; going on");
        foreach (var i in _interfaces.Values)
        {
            int rc = i.Steering.Reload();
            Log(rc == 0 ? $"{i.Name}: XDP program reloaded" : $"{i.Name}: reloading the XDP program failed: errno {-rc}; the old one stays");
        }
        foreach (var v in _vnics.Values)
            Reply(v.Client, new ResumeEvent(v.Id));
        Log("reconfigured: VNICs resumed");
        _awaitingSuspend = null;
    }

    // ------------------------------------------------------------------------------------------------ VNICs

    private void Attach(ClientSession client, AttachRequest a, Span<int> received)
    {
        // An exclusive reattach passes its AF_XDP socket first; any attach may pass its connection mirror last.
        int keptXsk = a.Reattach && a.Mode == VnicMode.Exclusive ? 1 : 0;
        if (received.Length < keptXsk || received.Length > keptXsk + 1)
        {
            Reply(client, AttachReply.Failure(AttachStatus.InvalidRequest, $"this attach carries {(keptXsk == 1 ? "its AF_XDP socket and " : "")}at most the connection mirror, not {received.Length} descriptors") with { RequestId = a.RequestId });
            return;
        }
        var reply = TryAttach(client, a, keptXsk == 1 ? received[..1] : default, out int xskFd);
        if (reply.Status == AttachStatus.Ok && received.Length == keptXsk + 1)
            MapMirror(_vnics[reply.VnicId], received[keptXsk]);
        if (xskFd >= 0)
        {
            Reply(client, reply, [xskFd]);
        }
        else
            Reply(client, reply);
        if (reply.Status == AttachStatus.Ok)
            SendNeighbours(_vnics[reply.VnicId]);
    }

    private AttachReply TryAttach(ClientSession client, AttachRequest a, Span<int> keptXsk, out int xskFd)
    {
        xskFd = -1;
        AttachReply Fail(AttachStatus s, string text) => AttachReply.Failure(s, text) with { RequestId = a.RequestId };
        if (_options.Interfaces.Count > 0 && !_options.Interfaces.Contains(a.InterfaceName))
            return Fail(AttachStatus.NotAccelerated, $"{a.InterfaceName} is not accelerated (--interface / ONLOAD_INTERFACES: {string.Join(", ", _options.Interfaces)})");
        if (a.InterfaceName == "lo")
            return Fail(AttachStatus.NotAccelerated, "loopback is not accelerated");
        uint uid = client.Credentials.Uid;
        if (uid != 0 && uid != _ownUid && !_options.Grants.Any(g => g.Uid == uid && (g.Interface is null || g.Interface == a.InterfaceName)))
            return Fail(AttachStatus.NotPermitted, $"uid {uid} is not granted {a.InterfaceName} (onload-driverd --allow {uid}@{a.InterfaceName})");
        int ring = a.RxRingSize == 0 ? _options.DefaultRingSize : (int)Math.Min(a.RxRingSize, int.MaxValue);
        int txRing = a.TxRingSize == 0 ? _options.DefaultRingSize : (int)Math.Min(a.TxRingSize, int.MaxValue);
        int buffers = a.BufferCount == 0 ? _options.DefaultBuffers : (int)Math.Min(a.BufferCount, int.MaxValue);
        if (ring > _options.MaxRingSize || txRing > _options.MaxRingSize || buffers > _options.MaxBuffers)
            return Fail(AttachStatus.NoResources, $"asked for rings of {ring}/{txRing} and {buffers} buffers; the most is {_options.MaxRingSize} and {_options.MaxBuffers} (--max-ring-size, --max-buffers)");
        if (!IsPow2(ring) || !IsPow2(txRing) || ring < 64 || txRing < 64 || buffers < 2 * ring)
            return Fail(AttachStatus.InvalidRequest, $"rings of {ring}/{txRing} and {buffers} buffers: rings are powers of two from 64, with at least twice the RX ring in buffers");
        int slot = Array.IndexOf(_slots, null);
        if (slot < 0)
            return Fail(AttachStatus.NoResources, $"no VNIC left: {_options.MaxVnics} of {_options.MaxVnics} in use (--max-vnics)");

        AcceleratedInterface iface;
        try
        {
            iface = Interface(a.InterfaceName);
        }
        catch (Exception e) when (e is IOException or ArgumentException)
        {
            return Fail(e.Message.Contains("No such device", StringComparison.Ordinal) || e is ArgumentException
                ? AttachStatus.NoSuchInterface : AttachStatus.NotAccelerated, e.Message);
        }
        if (iface.Addresses.Count == 0)
            return Fail(AttachStatus.NotAccelerated, $"{iface.Name} has no IPv4 address: give it one (driverlink mode uses the kernel's)");

        // The client's socket, bound by it long ago: only an AF_XDP socket goes into the XSKMAP.
        if (a.Reattach && a.Mode == VnicMode.Exclusive && !IsXdpSocket(keptXsk[0]))
            return Fail(AttachStatus.InvalidRequest, "an exclusive reattach passes the AF_XDP socket it kept");

        uint id = _nextVnicId++;
        var v = new VnicRecord(id, client, iface, a.Mode, slot);
        try
        {
            if (a.Mode == VnicMode.Exclusive)
            {
                if (iface.Exclusive is not null || iface.SharedCount > 0)
                    return Fail(AttachStatus.Busy, $"{iface.Name} queue 0 is in use ({(iface.Exclusive is not null ? "exclusively, by pid " + iface.Exclusive.Client.Credentials.Pid : iface.SharedCount + " shared VNICs")})");
                if (a.Reattach)
                {
                    int rc = iface.Steering.SetSocket(0, keptXsk[0]);
                    if (rc < 0)
                        return Fail(AttachStatus.InvalidRequest, $"{iface.Name}: putting the kept AF_XDP socket in the XSKMAP: errno {-rc}");
                    v.XskFd = keptXsk[0];
                    keptXsk[0] = -1; // ours now, as the socket a fresh attach creates
                    v.SocketInstalled = true;
                    iface.Exclusive = v;
                }
                else
                {
                    v.XskFd = AfXdpVnic.CreateSocket();
                    iface.Exclusive = v;
                    xskFd = v.XskFd;
                }
            }
            else
            {
                if (iface.Exclusive is not null)
                    return Fail(AttachStatus.Busy, $"{iface.Name} queue 0 is held exclusively by pid {iface.Exclusive.Client.Credentials.Pid}");
                var forwarder = iface.Forwarder ??= StartForwarder(iface);
                ShmVnic endpoint;
                if (a.Reattach)
                {
                    // The rings the client kept, on which it listens since its daemon died: joined only if the
                    // process listening is the one asking (a name in /proc/net/unix is no secret).
                    v.ShmName = a.ResumeName;
                    endpoint = ShmVnic.Open(v.ShmName, new VnicOptions { RingSize = 64, BufferCount = 64, ShmPeerUid = client.Credentials.Uid, ShmJoinPid = client.Credentials.Pid });
                    if (endpoint.RingSlots > _options.MaxRingSize)
                    {
                        endpoint.Dispose();
                        return Fail(AttachStatus.NoResources, $"the kept rings have {endpoint.RingSlots} slots; the most is {_options.MaxRingSize} (--max-ring-size)");
                    }
                }
                else
                {
                    v.ShmName = $"driverd-{Environment.ProcessId}-{id}-{Convert.ToHexString(RandomNumberGenerator.GetBytes(8)).ToLowerInvariant()}";
                    endpoint = ShmVnic.Open(v.ShmName, new VnicOptions { RingSize = ring, BufferCount = 64, ShmPeerUid = client.Credentials.Uid });
                }
                forwarder.AddEndpoint(slot, endpoint, client.Credentials.Pid);
                iface.SharedCount++;
            }
        }
        catch (Exception e) when (e is IOException or ArgumentException or InvalidOperationException)
        {
            if (iface.Exclusive == v)
                iface.Exclusive = null;
            BackingSocket.Release(v.XskFd);
            return Fail(AttachStatus.NoResources, $"{iface.Name}: {e.Message}");
        }
        v.Address = iface.Addresses[0].Address;
        _slots[slot] = v;
        _vnics[id] = v;
        client.Vnics.Add(v);
        Log($"client pid {client.Credentials.Pid}: VNIC {id} on {iface.Name} ({a.Mode}{(a.Reattach ? ", reattached" : "")})");
        return AttachReply.Success(id, (ushort)iface.Mtu, iface.Mac, iface.Addresses, a.Mode, 0, iface.Gateway, v.ShmName) with { RequestId = a.RequestId };
    }

    private SharedForwarder StartForwarder(AcceleratedInterface iface)
    {
        int fd = AfXdpVnic.CreateSocket();
        var xsk = AfXdpVnic.OpenOnSocket(iface.Name + ":0", fd,
            new VnicOptions { RingSize = _options.MaxRingSize, BufferCount = 4 * _options.MaxRingSize });
        int rc = iface.Steering.SetSocket(0, xsk.WaitHandle);
        if (rc < 0)
        {
            xsk.Dispose();
            throw new IOException($"{iface.Name}: putting the forwarder's socket in the XSKMAP: errno {-rc}");
        }
        return new SharedForwarder(xsk, iface.Mac, iface.Addresses.Select(a => a.Address).ToArray(), _options.MaxVnics, _options.ForwarderSpin);
    }

    /// <summary>Gives back a VNIC: its filters first (so nothing more is steered to it), then its connections are
    /// closed toward their peers as the kernel closes a dead process's (a live client has closed them already), then
    /// its rings or socket go.</summary>
    private void Release(VnicRecord v)
    {
        // The TCP ports this VNIC proved it held: the only ones whose connections it may have closed for it.
        var tcpPorts = new HashSet<ushort>();
        foreach (var f in v.Filters)
            if (f.Spec.Protocol == FilterProtocol.Tcp)
                tcpPorts.Add(f.Spec.LocalPort);
        foreach (var f in v.Filters.ToArray())
            UninstallFilter(v, f);
        var iface = v.Interface;
        CloseOrphans(v, tcpPorts);
        if (v.Mode == VnicMode.Exclusive)
        {
            if (v.SocketInstalled)
                _ = iface.Steering.ClearSocket(0);
            BackingSocket.Release(v.XskFd);
            if (iface.Exclusive == v)
                iface.Exclusive = null;
        }
        else
        {
            iface.Forwarder?.RemoveEndpoint(v.Slot);
            if (--iface.SharedCount == 0 && iface.Forwarder is { } idle)
            {
                // The last shared VNIC: give the queue back (an exclusive client may bind it now) and the UMEM with it.
                _ = iface.Steering.ClearSocket(0);
                idle.Dispose();
                iface.Forwarder = null;
            }
        }
        _slots[v.Slot] = null;
        _vnics.Remove(v.Id);
        v.Client.Vnics.Remove(v);
        Log($"client pid {v.Client.Credentials.Pid}: VNIC {v.Id} on {iface.Name} released");
    }

    // ------------------------------------------------------------------------------------------------ orphans

    /// <summary>The largest connection mirror the daemon maps (65,536 TCP rows).</summary>
    private const long MaxMirrorBytes = 64 + 65_536L * 128;

    /// <summary>Maps a client's connection mirror read-only (the memfd it passed with its attach; the mapping
    /// outlives the descriptor and the client).</summary>
    private static void MapMirror(VnicRecord v, int fd)
    {
        // Only a file sealed against shrinking: one the client could truncate under our mapping would fault us.
        int seals = Libc.Fcntl(fd, UnixIpcConstants.F_GET_SEALS, 0);
        if (seals < 0 || (seals & UnixIpcConstants.F_SEAL_SHRINK) == 0)
        {
            Log($"client pid {v.Client.Credentials.Pid}: a connection mirror not sealed against shrinking ignored");
            return;
        }
        long length = Libc.Lseek(fd, 0, UnixIpcConstants.SEEK_END);
        if (length <= 0 || length > MaxMirrorBytes)
        {
            Log($"client pid {v.Client.Credentials.Pid}: a connection mirror of {length} bytes ignored");
            return;
        }
        void* region = Libc.Mmap(null, (nuint)length, LinuxConstants.PROT_READ, LinuxConstants.MAP_SHARED, fd, 0);
        if (region == (void*)-1)
        {
            Log($"client pid {v.Client.Credentials.Pid}: mmap of its connection mirror: errno {Marshal.GetLastPInvokeError()}");
            return;
        }
        v.Mirror = (nint)region;
        v.MirrorLength = (nuint)length;
    }

    /// <summary>
    /// Sends for each of the VNIC's TCP connections what Linux sends when the process owning a socket exits with
    /// it open (FIN, or RST where data was left unread or unsent), from the connection mirror, on the interface.
    /// The peer's answer then reaches the kernel, which has no socket there and resets it at the exact sequence.
    /// </summary>
    private void CloseOrphans(VnicRecord v, HashSet<ushort> tcpPorts)
    {
        if (v.Mirror == 0)
            return;
        var actions = OrphanCloser.Plan((byte*)v.Mirror, v.MirrorLength);
        _ = Libc.Munmap((void*)v.Mirror, v.MirrorLength);
        v.Mirror = 0;
        if (actions.Count == 0 || tcpPorts.Count == 0)
            return;
        var iface = v.Interface;
        // The client wrote the mirror: trust nothing in it but sequence state. A connection counts only on a port the
        // VNIC proved it held; it goes out from the interface's own address and MAC, to the MAC the kernel knows for
        // the next hop, and each connection at most once. So a client can end only its own connections.
        Dictionary<uint, MacAddress>? neighbours = null;
        var seen = new HashSet<(ushort, uint, ushort)>();
        int fins = 0, resets = 0, refused = 0, unresolved = 0, failed = 0;
        Span<byte> frame = stackalloc byte[OrphanCloser.MaxFrameLength];
        try
        {
            var sender = iface.RawSender ??= new RawFrameSender(iface.Name);
            foreach (var planned in actions)
            {
                if (!tcpPorts.Contains(planned.LocalPort) || !iface.Addresses.Exists(a => a.Address == planned.LocalAddress.Value) ||
                    !seen.Add((planned.LocalPort, planned.RemoteAddress.Value, planned.RemotePort)))
                {
                    refused++;
                    continue;
                }
                neighbours ??= NeighbourTable(iface.IfIndex);
                if (!neighbours.TryGetValue(planned.NextHop.Value, out var mac))
                {
                    unresolved++;
                    continue;
                }
                var a = planned with { LocalMac = iface.Mac, RemoteMac = mac };
                int length = OrphanCloser.BuildFrame(in a, frame);
                if (length == 0 || sender.Send(frame[..length]) != 0)
                {
                    failed++;
                    continue;
                }
                if (a.Kind == OrphanKind.Fin)
                    fins++;
                else
                    resets++;
            }
        }
        catch (IOException e)
        {
            Log($"{iface.Name}: raw socket for closing connections: {e.Message}");
            return;
        }
        Log($"client pid {v.Client.Credentials.Pid}: closed {fins + resets} TCP connections toward their peers ({fins} FIN, {resets} RST" +
            (unresolved + failed + refused > 0 ? $"; {unresolved} without a neighbour, {failed} not sent, {refused} not its own" : "") + ")");
    }

    /// <summary>The kernel's usable neighbour entries on one interface, by IPv4 address.</summary>
    private Dictionary<uint, MacAddress> NeighbourTable(int ifIndex)
    {
        var table = new Dictionary<uint, MacAddress>();
        foreach (var n in _rtnl.DumpNeighbours())
            if (n.InterfaceIndex == ifIndex && n.Mac != MacAddress.Zero)
                table[n.Ipv4] = n.Mac;
        return table;
    }

    // ------------------------------------------------------------------------------------------------ filters

    private FilterStatus InsertFilter(ClientSession client, FilterInsert f, Span<int> received)
    {
        if (!_vnics.TryGetValue(f.VnicId, out var v) || v.Client != client)
            return FilterStatus.NoSuchVnic;
        var spec = f.Filter;
        var iface = v.Interface;
        if (!iface.Addresses.Any(a => a.Address == spec.LocalAddress))
            return FilterStatus.InvalidRequest;
        if (received.Length != 1 || !BackingSocket.Holds(received[0], spec.Protocol, spec.LocalAddress, spec.LocalPort))
            return FilterStatus.NotOwner;
        // SO_REUSEADDR/SO_REUSEPORT let several UDP sockets hold one port (avahi on 5353 does), and the option can be
        // cleared after bind: the passed socket must be the port's only one besides this VNIC's own.
        if (spec.Protocol == FilterProtocol.Udp && UdpSocketsOnPort(spec.LocalPort) > 1 + FiltersOnPort(v, spec))
            return FilterStatus.Conflict;
        if (v.Filters.Count >= _options.MaxFiltersPerVnic)
            return FilterStatus.TableFull;
        if (iface.Filters.ContainsKey(Key(spec)))
            return FilterStatus.Conflict;
        // One owner per (protocol, port) on an interface, whatever the address: shared mode's forwarder finds a
        // frame's VNIC by its port, so a second owner on another address would take the first one's frames.
        var portKey = (spec.Protocol, spec.LocalPort);
        if (iface.PortOwners.TryGetValue(portKey, out var owner) && owner.Vnic != v)
            return FilterStatus.Conflict;
        if (v.Mode == VnicMode.Exclusive && !v.SocketInstalled)
        {
            // The client has bound the socket by now; the XSKMAP refuses one that is not.
            if (iface.Steering.SetSocket(0, v.XskFd) < 0)
                return FilterStatus.InvalidRequest;
            v.SocketInstalled = true;
        }
        var protocol = (byte)spec.Protocol;
        iface.Forwarder?.SetOwner(protocol, spec.LocalPort, v.Slot);
        int rc = iface.Steering.AddFilter((ProtocolType)protocol, spec.LocalAddress, spec.LocalPort,
            spec.Remote?.Address ?? 0, spec.Remote?.Port ?? 0);
        // A filter the previous daemon installed for a client that now reattaches (it proved the port above): it
        // stays in the map as it was, so its flow never went to the kernel meanwhile.
        if (rc == -Errno.EADDRINUSE && iface.Stale.Remove(Flow(spec)))
        {
            rc = 0;
            Reclaimed++;
        }
        if (rc < 0)
        {
            iface.Forwarder?.ClearOwner(protocol, spec.LocalPort);
            return rc == -Errno.ENOSPC ? FilterStatus.TableFull : rc == -Errno.EADDRINUSE ? FilterStatus.Conflict : FilterStatus.InvalidRequest;
        }
        var installed = new InstalledFilter(spec, received[0]);
        received[0] = -1; // kept: the port stays reserved while the filter steers it
        v.Filters.Add(installed);
        iface.Filters[Key(spec)] = v;
        iface.PortOwners[portKey] = (v, owner.Vnic == v ? owner.Count + 1 : 1);
        return FilterStatus.Ok;
    }

    private FilterStatus RemoveFilter(ClientSession client, FilterRemove f)
    {
        if (!_vnics.TryGetValue(f.VnicId, out var v) || v.Client != client)
            return FilterStatus.NoSuchVnic;
        var installed = v.Filters.Find(x => x.Spec == f.Filter);
        if (installed is null)
            return FilterStatus.NotFound;
        UninstallFilter(v, installed);
        return FilterStatus.Ok;
    }

    private static void UninstallFilter(VnicRecord v, InstalledFilter f)
    {
        var spec = f.Spec;
        var iface = v.Interface;
        _ = iface.Steering.RemoveFilter((ProtocolType)(byte)spec.Protocol, spec.LocalAddress, spec.LocalPort,
            spec.Remote?.Address ?? 0, spec.Remote?.Port ?? 0);
        var portKey = (spec.Protocol, spec.LocalPort);
        if (iface.PortOwners.TryGetValue(portKey, out var owner) && owner.Vnic == v)
        {
            if (owner.Count > 1)
                iface.PortOwners[portKey] = (v, owner.Count - 1);
            else
            {
                iface.PortOwners.Remove(portKey);
                iface.Forwarder?.ClearOwner((byte)spec.Protocol, spec.LocalPort);
            }
        }
        iface.Filters.Remove(Key(spec));
        BackingSocket.Release(f.BackingSocket);
        v.Filters.Remove(f);
    }

    /// <summary>The UDP sockets bound to <paramref name="port"/> in the daemon's namespace (/proc/net/udp: one line
    /// per socket, local address as HEXADDR:HEXPORT).</summary>
    private static int UdpSocketsOnPort(ushort port)
    {
        string suffix = ":" + port.ToString("X4", System.Globalization.CultureInfo.InvariantCulture);
        int count = 0;
        foreach (string line in File.ReadLines("/proc/net/udp"))
        {
            int start = 0;
            while (start < line.Length && line[start] == ' ')
                start++;
            int sl = line.IndexOf(' ', start);           // "N:"
            if (sl < 0)
                continue;
            int local = sl + 1;
            int end = line.IndexOf(' ', local);          // "0100000A:14E9"
            if (end > local && line.AsSpan(local, end - local).EndsWith(suffix, StringComparison.Ordinal))
                count++;
        }
        return count;
    }

    private static int FiltersOnPort(VnicRecord v, FilterSpec spec)
    {
        int n = 0;
        foreach (var f in v.Filters)
            if (f.Spec.Protocol == spec.Protocol && f.Spec.LocalPort == spec.LocalPort)
                n++;
        return n;
    }

    private static (FilterProtocol, uint, ushort) Key(FilterSpec s) => (s.Protocol, s.LocalAddress, s.LocalPort);

    private static SteeredFlow Flow(FilterSpec s) =>
        new((ProtocolType)(byte)s.Protocol, s.LocalAddress, s.LocalPort, s.Remote?.Address ?? 0, s.Remote?.Port ?? 0);

    /// <summary>
    /// Ends an adopted interface's reattach window: the previous daemon's filters no client claimed are removed
    /// (their clients died with it, and the kernel's sockets on those ports are gone: the flows are the kernel's
    /// again), and a queue socket no VNIC of ours holds leaves the XSKMAP.
    /// </summary>
    private void StepStale()
    {
        foreach (var iface in _interfaces.Values)
        {
            if (iface.StaleUntil == 0 || Stopwatch.GetTimestamp() < iface.StaleUntil)
                continue;
            iface.StaleUntil = 0;
            foreach (var f in iface.Stale)
                _ = iface.Steering.RemoveFilter(f.Protocol, f.LocalAddress, f.LocalPort, f.RemoteAddress, f.RemotePort);
            if (iface.Exclusive is null && iface.Forwarder is null)
                _ = iface.Steering.ClearSocket(0);
            Log($"{iface.Name}: reattach window over: {Reclaimed} filters reclaimed, {iface.Stale.Count} of clients that did not come back removed");
            iface.Stale.Clear();
        }
    }

    /// <summary>Filters reattaching clients took over from the previous daemon.</summary>
    public long Reclaimed;

    // ------------------------------------------------------------------------------------------------ TCP hand-over

    /// <summary>The most queued bytes one hand-over carries: far beyond any socket buffer the stack keeps.</summary>
    private const long MaxHandOverBytes = 64L << 20;

    /// <summary>
    /// Makes the client's socket the TCP connection its stack hands to the kernel (issue 7): TCP_REPAIR needs the
    /// CAP_NET_ADMIN the client lacks. Only for a connection the client's VNIC could carry: an address of its
    /// interface and a port it holds a TCP filter on (so a client cannot make the kernel speak for another's port).
    /// </summary>
    private TcpHandOverReply HandOverTcp(ClientSession client, TcpHandOver h, Span<int> received)
    {
        var reply = TryHandOverTcp(client, h, received);
        var s = h.State;
        Log($"client pid {client.Credentials.Pid}: TCP {new Onload.Stack.Wire.Ipv4Address(s.LocalAddress)}:{s.LocalPort} - " +
            $"{new Onload.Stack.Wire.Ipv4Address(s.RemoteAddress)}:{s.RemotePort} " +
            (reply.Errno == 0 ? "handed to the kernel" : $"not handed to the kernel (errno {reply.Errno}): {reply.Reason}"));
        return reply;
    }

    private TcpHandOverReply TryHandOverTcp(ClientSession client, TcpHandOver h, Span<int> received)
    {
        var s = h.State;
        if (!_vnics.TryGetValue(h.VnicId, out var v) || v.Client != client)
            return new(Errno.EPERM, $"VNIC {h.VnicId} is not this client's");
        if (!v.Interface.Addresses.Any(a => a.Address == s.LocalAddress))
            return new(Errno.EPERM, $"{new Onload.Stack.Wire.Ipv4Address(s.LocalAddress)} is not an address of {v.Interface.Name}");
        if (!v.Filters.Any(f => f.Spec.Protocol == FilterProtocol.Tcp && f.Spec.LocalPort == s.LocalPort &&
                f.Spec.LocalAddress == s.LocalAddress && (f.Spec.Remote is null || f.Spec.Remote == new FilterRemote(s.RemoteAddress, s.RemotePort))))
            return new(Errno.EPERM, $"VNIC {v.Id} holds no TCP filter for local port {s.LocalPort}");
        if (received.Length != 2)
            return new(Errno.EINVAL, $"a hand-over carries two descriptors (the socket, the memfd of its bytes), not {received.Length}");
        if (!InNamespace(received[0]))
            return new(Errno.EPERM, "the socket is not a socket of the daemon's network namespace");
        long total = (long)h.SentLength + h.UnsentLength + h.ReceivedLength;
        if (total > MaxHandOverBytes)
            return new(Errno.EINVAL, $"{total} queued bytes; a hand-over carries at most {MaxHandOverBytes}");
        int memfd = received[1];
        // Only a file sealed against shrinking: one the client could truncate under our mapping would fault us.
        int seals = Libc.Fcntl(memfd, UnixIpcConstants.F_GET_SEALS, 0);
        if (seals < 0 || (seals & UnixIpcConstants.F_SEAL_SHRINK) == 0)
            return new(Errno.EINVAL, "the bytes' memfd is not sealed against shrinking");
        long size = Libc.Lseek(memfd, 0, UnixIpcConstants.SEEK_END);
        if (size < total)
            return new(Errno.EINVAL, $"the bytes' memfd holds {size} bytes, not the {total} the request counts");
        byte* bytes = null;
        if (total > 0)
        {
            bytes = (byte*)Libc.Mmap(null, (nuint)total, LinuxConstants.PROT_READ, LinuxConstants.MAP_SHARED, memfd, 0);
            if (bytes == (byte*)-1)
                return new(Errno.EINVAL, $"mmap of the bytes' memfd: errno {Marshal.GetLastPInvokeError()}");
        }
        try
        {
            var all = new ReadOnlySpan<byte>(bytes, (int)total);
            int sent = (int)h.SentLength, unsent = (int)h.UnsentLength;
            int rc = TcpRepair.Restore(received[0], s, all[..sent], all.Slice(sent, unsent), all[(sent + unsent)..], out string? failure);
            if (rc == 0)
                return new(0, "");
            string reason = failure ?? $"errno {-rc}";
            return new(-rc, reason.Length <= TcpHandOverReply.MaxReasonBytes ? reason : reason[..TcpHandOverReply.MaxReasonBytes]);
        }
        finally
        {
            if (total > 0)
                _ = Libc.Munmap(bytes, (nuint)total);
        }
    }

    /// <summary>Whether <paramref name="fd"/> is an AF_XDP socket (SO_DOMAIN).</summary>
    private static bool IsXdpSocket(int fd)
    {
        const int SO_DOMAIN = 39, AF_XDP = 44;
        int domain = 0;
        uint length = sizeof(int);
        return Libc.GetSockOpt(fd, UnixIpcConstants.SOL_SOCKET, SO_DOMAIN, &domain, &length) == 0 && domain == AF_XDP;
    }

    /// <summary>Whether <paramref name="fd"/> is a socket of the daemon's own network namespace (SO_NETNS_COOKIE):
    /// the checks on addresses and filters speak of this namespace only.</summary>
    private bool InNamespace(int fd)
    {
        const int SO_NETNS_COOKIE = 71;
        ulong theirs = 0, ours = 0;
        uint length = sizeof(ulong);
        if (Libc.GetSockOpt(fd, UnixIpcConstants.SOL_SOCKET, SO_NETNS_COOKIE, &theirs, &length) != 0)
            return false;
        length = sizeof(ulong);
        return Libc.GetSockOpt(_listener.Fd, UnixIpcConstants.SOL_SOCKET, SO_NETNS_COOKIE, &ours, &length) == 0 && theirs == ours;
    }

    // ------------------------------------------------------------------------------------------------ interfaces

    /// <summary>The interface, attached on first use: the XDP program (adopted from its pins if a previous daemon
    /// left it), its link, addresses and default gateway from the kernel.</summary>
    private AcceleratedInterface Interface(string name)
    {
        if (_interfaces.TryGetValue(name, out var known))
            return known;
        var link = _rtnl.DumpLinks().FirstOrDefault(l => l.Name == name)
            ?? throw new ArgumentException($"no interface {name} in this namespace");
        var steering = XdpFilterSteering.AttachOrAdopt(name, _options.MaxFiltersTotal,
            _pinDirectory.Length == 0 ? null : Path.Combine(_pinDirectory, name));
        var iface = new AcceleratedInterface(name, link.Index, link.Mac, link.Mtu, link.CanCarry, steering);
        if (steering.Adopted)
        {
            // The previous daemon's filters stay while its clients may reattach (each proves its port again and takes
            // its filter over); what nobody claims within the window goes then. Meanwhile their flows are dropped
            // (no socket in the XSKMAP) rather than reset by the kernel.
            iface.Stale.UnionWith(steering.ListFilters());
            iface.StaleUntil = Stopwatch.GetTimestamp() + (long)(_options.ReattachWindow.TotalSeconds * Stopwatch.Frequency);
            Log($"{name}: adopted the pinned XDP program; {iface.Stale.Count} filters kept {_options.ReattachWindow.TotalSeconds:0.#} s for their clients to reattach");
        }
        RefreshAddresses(iface);
        _interfaces[name] = iface;
        return iface;
    }

    /// <summary>
    /// Takes over at once every program a dead daemon left pinned in this namespace, rather than at the first attach:
    /// its clients' filters then get their reattach window and go, and the program goes with this daemon's exit, even
    /// if no client ever comes (a service manager's restart after a crash).
    /// </summary>
    private void AdoptLeftovers()
    {
        if (_pinDirectory.Length == 0 || !Directory.Exists(_pinDirectory))
            return;
        foreach (string dir in Directory.GetDirectories(_pinDirectory))
        {
            string name = Path.GetFileName(dir);
            if (_options.Interfaces.Count > 0 && !_options.Interfaces.Contains(name))
                continue;
            try
            {
                Interface(name);
            }
            catch (Exception e) when (e is IOException or ArgumentException or UnauthorizedAccessException)
            {
                Log($"{name}: the pins a previous daemon left in {dir} were not adopted: {e.Message}");
            }
        }
    }

    private void RefreshAddresses(AcceleratedInterface iface)
    {
        iface.Addresses = _rtnl.DumpAddresses().Where(a => a.InterfaceIndex == iface.IfIndex)
            .Select(a => new InterfaceAddress(a.Ipv4, (byte)a.PrefixLength)).Take(AttachReply.MaxAddresses).ToList();
        iface.Forwarder?.SetAddresses(iface.Addresses.Select(a => a.Address).ToArray());
        iface.Gateway = _rtnl.DumpRoutes().FirstOrDefault(r => r.PrefixLength == 0 && r.InterfaceIndex == iface.IfIndex && r.Gateway != 0)?.Gateway ?? 0;
    }

    /// <summary>Tells a VNIC just attached of every reachable neighbour of its interface, from the kernel's table.</summary>
    private void SendNeighbours(VnicRecord v)
    {
        // The interface's only VNIC: what its VNICs were told is now this table, and the kernel's state changes
        // that leave an entry as the table has it need not be sent.
        var told = v.Interface.NeighboursTold;
        bool alone = _vnics.Values.Count(o => o.Interface == v.Interface) == 1;
        if (alone)
            told.Clear();
        foreach (var n in _rtnl.DumpNeighbours())
        {
            if (n.InterfaceIndex != v.Interface.IfIndex || ReportOf(n, removed: false) is not { Reachable: true } r)
                continue;
            Reply(v.Client, new NeighbourEvent(v.Id, n.Ipv4, r.Mac, true));
            if (alone)
                told[n.Ipv4] = r;
        }
    }

    /// <summary>
    /// A client asks when its stack has no usable entry: at first use, and again whenever its own entry ages out (every
    /// ARP reachable time under traffic). The kernel often still holds a live entry then, and refreshing it (NTF_USE)
    /// changes nothing that <see cref="ReportNeighbour"/> tells, so no event would follow: the client is told the
    /// kernel's entry at once. NTF_USE then has the kernel confirm it, or resolve one it lacks (the outcome is told).
    /// </summary>
    private void ResolveFor(VnicRecord v, uint address)
    {
        foreach (var n in _rtnl.DumpNeighbours())
        {
            if (n.InterfaceIndex == v.Interface.IfIndex && n.Ipv4 == address && ReportOf(n, removed: false) is { Reachable: true } r)
            {
                Reply(v.Client, new NeighbourEvent(v.Id, n.Ipv4, r.Mac, true));
                break;
            }
        }
        _ = _rtnl.ResolveNeighbour(v.Interface.IfIndex, address);
    }

    /// <summary>
    /// Tells the VNICs of the neighbour's interface what a kernel change of its entry means for them, unless they were
    /// told that already: under traffic the kernel moves a live entry between REACHABLE, STALE, DELAY and PROBE every
    /// few seconds with the same MAC, and each event would cost every client's reader thread its decoding garbage.
    /// </summary>
    private void ReportNeighbour(Neighbour n, bool removed)
    {
        var iface = _interfaces.Values.FirstOrDefault(i => i.IfIndex == n.InterfaceIndex);
        if (iface is null)
            return;
        var told = iface.NeighboursTold;
        if (ReportOf(n, removed) is not { } report)
        {
            // INCOMPLETE: a resolution under way (perhaps a client's). Nothing to say yet, and its outcome is told
            // even when it is what was told before, so that a client waiting on it hears.
            told.Remove(n.Ipv4);
            return;
        }
        bool unchanged = told.TryGetValue(n.Ipv4, out var last) && last == report;
        if (removed)
            told.Remove(n.Ipv4);
        else
            told[n.Ipv4] = report;
        if (!unchanged)
            ForEachVnic(n.InterfaceIndex, (_, v) => new NeighbourEvent(v.Id, n.Ipv4, report.Mac, report.Reachable));
    }

    /// <summary>What a neighbour event says of the kernel's entry: reachable with its MAC, or gone (failed, deleted);
    /// null while it is INCOMPLETE.</summary>
    private static NeighbourReport? ReportOf(Neighbour n, bool removed)
    {
        bool usable = !removed && n.Mac != MacAddress.Zero &&
            (n.State & (NeighbourState.Incomplete | NeighbourState.Failed | NeighbourState.None)) == 0 && n.State != NeighbourState.None;
        if (usable)
            return new NeighbourReport(n.Mac, true);
        if (removed || (n.State & NeighbourState.Failed) != 0)
            return new NeighbourReport(MacAddress.Zero, false);
        return null;
    }

    private void ReadNetlink()
    {
        _events.Clear();
        _monitor.Poll(_events);
        foreach (var e in _events)
        {
            switch (e)
            {
                case LinkUp up:
                    ForEachVnic(up.Link.Index, (i, v) => { i.Up = true; return new LinkStateEvent(v.Id, true); });
                    break;
                case LinkDown down:
                    ForEachVnic(down.Link.Index, (i, v) => { i.Up = false; return new LinkStateEvent(v.Id, false); });
                    break;
                case MtuChanged m:
                    ForEachVnic(m.Link.Index, (i, v) => { i.Mtu = m.Link.Mtu; return new MtuChangedEvent(v.Id, (ushort)Math.Max(AttachReply.MinMtu, m.Link.Mtu)); });
                    break;
                case NeighbourChanged n:
                    ReportNeighbour(n.Neighbour, removed: false);
                    break;
                case NeighbourRemoved n:
                    ReportNeighbour(n.Neighbour, removed: true);
                    break;
                case AddressAdded or AddressRemoved or RouteAdded or RouteRemoved:
                    foreach (var i in _interfaces.Values)
                        RefreshAddresses(i);
                    RemoveVnicsWithoutAddress();
                    break;
                case ResyncNeeded r:
                    Log($"rtnetlink: {r.Reason}: re-reading addresses and routes");
                    foreach (var i in _interfaces.Values)
                        RefreshAddresses(i);
                    break;
            }
        }
    }

    /// <summary>
    /// A VNIC whose stack address the kernel no longer holds cannot send or bind any more: it is removed (the client
    /// sees its link go down and says so) rather than left to fail every bind with EINVAL.
    /// </summary>
    private void RemoveVnicsWithoutAddress()
    {
        foreach (var v in _vnics.Values.ToArray())
        {
            if (v.Interface.Addresses.Exists(a => a.Address == v.Address))
                continue;
            Log($"client pid {v.Client.Credentials.Pid}: VNIC {v.Id}: {v.Interface.Name} no longer holds {new Onload.Stack.Wire.Ipv4Address(v.Address)}: removed");
            Reply(v.Client, new RemoveEvent(v.Id));
            Release(v);
        }
    }

    private void ForEachVnic(int ifIndex, Func<AcceleratedInterface, VnicRecord, Message?> make)
    {
        foreach (var v in _vnics.Values)
            if (v.Interface.IfIndex == ifIndex && make(v.Interface, v) is { } m)
                Reply(v.Client, m);
    }

    public void Dispose()
    {
        foreach (var c in _clients.ToArray())
        {
            foreach (var v in c.Vnics)
                Reply(c, new RemoveEvent(v.Id));
            Drop(c, null);
        }
        foreach (var i in _interfaces.Values)
        {
            i.RawSender?.Dispose();
            i.Forwarder?.Dispose();
            i.Steering.Dispose();
        }
        _listener.Dispose();
        _monitor.Dispose();
        _rtnl.Dispose();
    }

    public static void Log(string line) =>
        Console.Error.WriteLine($"onload-driverd[{Environment.ProcessId}] {DateTime.UtcNow:HH:mm:ss.fff} {line}");

    private static bool IsPow2(int v) => v > 0 && (v & (v - 1)) == 0;


}

internal sealed class ClientSession(DriverlinkSocket socket, PeerCredentials credentials)
{
    public DriverlinkSocket Socket { get; } = socket;
    public PeerCredentials Credentials { get; } = credentials;
    public bool Greeted { get; set; }
    /// <summary>When it connected (Stopwatch ticks): it must say Hello soon after.</summary>
    public long Since { get; init; }
    /// <summary>Its socket buffer was full: it is dropped at the end of the loop's turn.</summary>
    public bool Stalled { get; set; }
    public List<VnicRecord> Vnics { get; } = [];
}

internal sealed record InstalledFilter(FilterSpec Spec, int BackingSocket);

internal sealed class VnicRecord(uint id, ClientSession client, AcceleratedInterface iface, VnicMode mode, int slot)
{
    public uint Id { get; } = id;
    public ClientSession Client { get; } = client;
    public AcceleratedInterface Interface { get; } = iface;
    public VnicMode Mode { get; } = mode;
    public int Slot { get; } = slot;
    public int XskFd { get; set; } = -1;
    /// <summary>The interface address the client's stack uses (the first at attach).</summary>
    public uint Address { get; set; }
    /// <summary>The client's connection mirror, mapped read-only; 0 if it passed none.</summary>
    public nint Mirror { get; set; }
    public nuint MirrorLength { get; set; }
    public bool SocketInstalled { get; set; }
    public string ShmName { get; set; } = "";
    public List<InstalledFilter> Filters { get; } = [];
}

internal sealed class AcceleratedInterface(string name, int ifIndex, MacAddress mac, int mtu, bool up, XdpFilterSteering steering)
{
    public string Name { get; } = name;
    public int IfIndex { get; } = ifIndex;
    public MacAddress Mac { get; } = mac;
    public int Mtu { get; set; } = mtu;
    public bool Up { get; set; } = up;
    public XdpFilterSteering Steering { get; } = steering;
    public List<InterfaceAddress> Addresses { get; set; } = [];
    public uint Gateway { get; set; }
    public SharedForwarder? Forwarder { get; set; }
    /// <summary>For the frames that close a dead client's connections (opened on first need).</summary>
    public RawFrameSender? RawSender { get; set; }
    public VnicRecord? Exclusive { get; set; }
    public int SharedCount { get; set; }
    public Dictionary<(FilterProtocol, uint, ushort), VnicRecord> Filters { get; } = [];
    /// <summary>Which VNIC owns each (protocol, port), and with how many filters (one per address it bound).</summary>
    public Dictionary<(FilterProtocol, ushort), (VnicRecord Vnic, int Count)> PortOwners { get; } = [];
    /// <summary>What the interface's VNICs were last told of each neighbour (by IPv4 address): the kernel's table as a
    /// VNIC attaching alone was given it, then each change sent since.</summary>
    public Dictionary<uint, NeighbourReport> NeighboursTold { get; } = [];
    /// <summary>An adopted program's filters not yet claimed by a reattaching client, kept until
    /// <see cref="StaleUntil"/> (Stopwatch ticks; 0: no window open).</summary>
    public HashSet<SteeredFlow> Stale { get; } = [];
    public long StaleUntil { get; set; }
}

/// <summary>What a <see cref="NeighbourEvent"/> says of one neighbour.</summary>
internal readonly record struct NeighbourReport(MacAddress Mac, bool Reachable);
