using System.Runtime.InteropServices;
using Onload.Stack;
using Onload.Stack.Tcp;
using Onload.Stack.Wire;
using Onload.Vnic;
using Onload.Vnic.AfXdp;
using Onload.Vnic.Native;
using Onload.Vnic.Shm;

namespace Onload.Driverlink;

/// <summary>
/// One process's VNIC on one interface in driverlink mode, and the control plane of the stack that runs on it
/// (<see cref="IStackControl"/>): ports are reserved by kernel sockets and steered by the daemon's filters,
/// neighbours come from the kernel's table, and the daemon's link, MTU and suspend events reach the stack.
/// </summary>
/// <example>
/// <code>
/// using var session = DriverlinkSession.Open("eth0");
/// using var stack = new NetStack(session.Vnic, session.StackOptions());
/// </code>
/// </example>
public sealed unsafe class DriverlinkSession : IStackControl, IDisposable
{
    /// <summary>TCP rows the connection mirror has room for, unless <see cref="Open"/> is told otherwise
    /// (<see cref="Onload.Stack.StackOptions.TcpConnections"/>'s default).</summary>
    public const int DefaultTcpConnections = 256;

    // Replaced when the session reattaches to a new daemon (on the stack's thread, in ApplyEvents).
    private DriverlinkClient _client;
    private AttachReply _attachment;
    private DriverlinkClientOptions _options = new();
    private string _interfaceName = "";
    private AttachRequest? _request;
    private readonly Dictionary<(byte Protocol, ushort Port), int> _backing = [];
    /// <summary>Ports let go of while the VNIC still held frames sent from them (see <see cref="ReleasePort"/>).</summary>
    private readonly List<(byte Protocol, ushort Port, int Fd)> _releasing = [];
    /// <summary>connect()'s TCP ports kept after their connections ended (<see cref="ReleaseConnectPort"/>), oldest
    /// first: still reserved by their kernel sockets and steered here, for the next connects to take.</summary>
    private readonly List<SparePort> _spares = new(MaxSparePorts);
    private volatile bool _disposed;

    private readonly ConnectionMirror _mirror;
    private readonly int _mirrorFd;

    private DriverlinkSession(DriverlinkClient client, AttachReply attachment, DriverlinkVnic vnic, ConnectionMirror mirror, int mirrorFd)
    {
        _mirror = mirror;
        _mirrorFd = mirrorFd;
        _client = client;
        _attachment = attachment;
        Vnic = vnic;
        var first = attachment.Addresses[0];
        Address = new Ipv4Cidr(new Ipv4Address(first.Address), first.PrefixLength);
    }

    public DriverlinkVnic Vnic { get; }

    /// <summary>The interface's first IPv4 address (the kernel's): the stack's address.</summary>
    public Ipv4Cidr Address { get; }

    public uint VnicId => _attachment.VnicId;

    /// <summary>Times this session reattached to a new daemon after its daemon died.</summary>
    public int Reattachments { get; private set; }

    /// <summary>How long the last reattachment took, from noticing the daemon gone to the filters restored.</summary>
    public TimeSpan LastReattachTime { get; private set; }

    public VnicMode Mode => _attachment.Mode;

    public DriverlinkClient Client => _client;

    /// <summary>Ports reserved and steered to this VNIC now (spare connect ports included).</summary>
    public int Filters => _backing.Count + _spares.Count;

    /// <summary>Connect ports kept for reuse (<see cref="ReleaseConnectPort"/>).</summary>
    public int SparePorts => _spares.Count;

    /// <summary>A spare and when it was given back, on the stack's clock (<see cref="MonotonicClock"/>, ns).</summary>
    private readonly record struct SparePort(ushort Port, int Fd, long SinceNs);

    /// <summary>At most this many connect ports are kept: enough for ~30,000 connections a second one after another
    /// with each port resting <see cref="SpareRestNs"/>; a burst of more gives the rest back at once.</summary>
    private const int MaxSparePorts = 64;

    /// <summary>
    /// How long a spare rests before a connect takes it. The peer may hold the last connection of the same four-tuple
    /// in TIME_WAIT (it closed first), and takes a SYN for a new one only if its timestamp is newer (or its ISN beyond
    /// the old RCV.NXT); the stack's timestamps tick each millisecond, so 2 ms makes the next SYN's newer.
    /// </summary>
    private const long SpareRestNs = 2_000_000;

    /// <summary>A spare unused this long is given back for real: a program that stopped connecting holds no ports.</summary>
    private const long SpareIdleNs = 1_000_000_000;

    /// <summary>Whether the daemon's connection ended (the daemon stopped or died); the VNIC carries nothing more.</summary>
    public bool Removed { get; private set; }

    /// <summary>
    /// Connects to the namespace's daemon (starting it if need be) and attaches to <paramref name="interfaceName"/>.
    /// Throws <see cref="DriverlinkException"/> with the daemon's reason when refused.
    /// </summary>
    public static DriverlinkSession Open(string interfaceName, VnicMode mode = VnicMode.Shared, DriverlinkClientOptions? options = null,
        int ringSize = 0, int bufferCount = 0, int tcpConnections = DefaultTcpConnections)
    {
        ArgumentNullException.ThrowIfNull(interfaceName);
        ArgumentOutOfRangeException.ThrowIfLessThan(tcpConnections, 1);
        // The connection mirror lives in a memfd the daemon maps too: if this process dies, the daemon closes its
        // TCP connections toward their peers from it.
        nuint mirrorBytes = ConnectionMirror.RegionSize(tcpConnections);
        int mirrorFd;
        fixed (byte* name = "onload-connection-mirror\0"u8)
            mirrorFd = Libc.MemfdCreate(name, UnixIpcConstants.MFD_CLOEXEC | UnixIpcConstants.MFD_ALLOW_SEALING);
        // Sealed at its size: the daemon maps it, and a file that shrank under a mapping would fault the daemon.
        if (mirrorFd < 0 || Libc.Ftruncate(mirrorFd, (nint)mirrorBytes) != 0 ||
            Libc.Fcntl(mirrorFd, UnixIpcConstants.F_ADD_SEALS,
                UnixIpcConstants.F_SEAL_SHRINK | UnixIpcConstants.F_SEAL_GROW | UnixIpcConstants.F_SEAL_SEAL) != 0)
        {
            int e = Marshal.GetLastPInvokeError();
            if (mirrorFd >= 0)
                _ = Libc.Close(mirrorFd);
            throw new DriverlinkException($"driverlink: memfd for the connection mirror: errno {e}", e);
        }
        void* region = Libc.Mmap(null, mirrorBytes, LinuxConstants.PROT_READ | LinuxConstants.PROT_WRITE, LinuxConstants.MAP_SHARED, mirrorFd, 0);
        if (region == (void*)-1)
        {
            int e = Marshal.GetLastPInvokeError();
            _ = Libc.Close(mirrorFd);
            throw new DriverlinkException($"driverlink: mmap of the connection mirror: errno {e}", e);
        }
        options ??= new DriverlinkClientOptions();
        DriverlinkClient client;
        try
        {
            client = DriverlinkClient.Connect(options);
        }
        catch
        {
            _ = Libc.Munmap(region, mirrorBytes);
            _ = Libc.Close(mirrorFd);
            throw;
        }
        try
        {
            var request = new AttachRequest(interfaceName, mode, (uint)ringSize, (uint)ringSize, (uint)bufferCount);
            var reply = client.Attach(request, out var fds, mirrorFd);
            IVnic? inner = null;
            try
            {
                if (reply.Addresses.Count == 0)
                    throw new DriverlinkException($"driverlink: {interfaceName} has no IPv4 address");
                var vnicOptions = new VnicOptions
                {
                    MacAddress = reply.Mac,
                    RingSize = ringSize == 0 ? 1024 : ringSize,
                    BufferCount = bufferCount == 0 ? 8192 : bufferCount,
                    // Should the daemon die, our end listens on the rings' name, and the next daemon (its user's)
                    // joins it there (see Reattach).
                    ShmPeerUid = client.Daemon.Uid,
                };
                if (reply.Mode == VnicMode.Exclusive)
                {
                    if (fds.Length != 1)
                        throw new DriverlinkException($"driverlink: an exclusive attach came with {fds.Length} descriptors, not the one socket");
                    int xsk = fds[0];
                    fds = [];
                    inner = AfXdpVnic.OpenOnSocket($"{interfaceName}:{reply.Queue}", xsk, vnicOptions);
                }
                else
                    inner = ShmVnic.Open(reply.ShmName, vnicOptions);
                var vnic = new DriverlinkVnic(interfaceName, inner, reply.Mac, reply.Mtu, client.EventFd);
                return new DriverlinkSession(client, reply, vnic, new ConnectionMirror((byte*)region, mirrorBytes, tcpConnections), mirrorFd)
                {
                    _options = options,
                    _interfaceName = interfaceName,
                    _request = request,
                };
            }
            catch
            {
                inner?.Dispose();
                foreach (int fd in fds)
                    BackingSocket.Release(fd);
                client.Detach(reply.VnicId);
                throw;
            }
        }
        catch
        {
            client.Dispose();
            _ = Libc.Munmap(region, mirrorBytes);
            _ = Libc.Close(mirrorFd);
            throw;
        }
    }

    /// <summary>Stack options for this VNIC: the kernel's address and gateway, this control plane, no ARP of our own.</summary>
    public StackOptions StackOptions(StackOptions? template = null)
    {
        var gateway = _attachment.Gateway != 0 ? new Ipv4Address(_attachment.Gateway) : (Ipv4Address?)null;
        var options = template is null
            ? new StackOptions { Address = Address, Gateway = gateway, Control = this, GratuitousArp = false, ConnectionMirror = _mirror }
            : template with { Address = Address, Gateway = gateway, Control = this, GratuitousArp = false, ConnectionMirror = _mirror };
        if (options.TcpConnections > _mirror.Records)
            throw new ArgumentException($"the stack has {options.TcpConnections} TCP rows and the connection mirror {_mirror.Records}: " +
                "open the session with tcpConnections set to the stack's", nameof(template));
        return options;
    }

    // ------------------------------------------------------------------------------------------------ IStackControl

    public int ReservePort(byte protocol, ref ushort port)
    {
        if (protocol is not (6 or 17))
            return -(int)Onload.Stack.Errno.EINVAL;
        if (Removed)
            return -(int)Onload.Stack.Errno.ENETDOWN;
        var p = (FilterProtocol)protocol;
        if (p == FilterProtocol.Tcp && TakeSpare(port, out int spare))
        {
            port = _spares[spare].Port;
            _backing[(protocol, port)] = _spares[spare].Fd;
            _spares.RemoveAt(spare);
            return 0;
        }
        // A port given back whose release still waits for the TX ring (a connection closed by a reset, bound again
        // at once) is still steered here: it is kept, where asking the daemon again would find it taken.
        for (int i = 0; port != 0 && i < _releasing.Count; i++)
            if (_releasing[i].Protocol == protocol && _releasing[i].Port == port)
            {
                _backing[(protocol, port)] = _releasing[i].Fd;
                _releasing.RemoveAt(i);
                return 0;
            }
        // A UDP port's kernel socket is bound to every address, so that it also receives the datagrams of the
        // groups the stack joins (a socket bound to one unicast address hears no multicast).
        int fd = BackingSocket.Open(p, p == FilterProtocol.Udp ? 0 : Address.Address.Value, ref port);
        if (fd < 0)
            return fd;
        FilterStatus status;
        try
        {
            status = _client.InsertFilter(VnicId, new FilterSpec(p, Address.Address.Value, port), fd);
        }
        catch (DriverlinkException)
        {
            BackingSocket.Release(fd);
            return -(int)Onload.Stack.Errno.ENOBUFS;
        }
        if (status != FilterStatus.Ok)
        {
            BackingSocket.Release(fd);
            return status switch
            {
                FilterStatus.Conflict or FilterStatus.NotOwner => -(int)Onload.Stack.Errno.EADDRINUSE,
                FilterStatus.TableFull => -(int)Onload.Stack.Errno.ENOBUFS,
                _ => -(int)Onload.Stack.Errno.EINVAL,
            };
        }
        _backing[(protocol, port)] = fd;
        if (p == FilterProtocol.Udp)
            Vnic.AddKernelSocket(fd, Address.Address.Value, port);
        return 0;
    }

    /// <summary>
    /// Lets go of a port: its filter and its kernel socket. Frames the stack sent from the port may still be in the
    /// VNIC's rings (the RST of a connection closed with SO_LINGER zero is sent and its port released in one
    /// call), and the daemon forwards a client's frame only from a port it holds: so while the VNIC has frames
    /// pending, the release waits for <see cref="ApplyEvents"/> to find them gone.
    /// </summary>
    public void ReleasePort(byte protocol, ushort port)
    {
        if (!_backing.Remove((protocol, port), out int fd))
            return;
        if (Vnic.TxPending() > 0)
            _releasing.Add((protocol, port, fd));
        else
            Release(protocol, port, fd);
    }

    /// <summary>
    /// Keeps a TCP port connect() used, with its kernel socket and its filter, for a later connect to take
    /// (<see cref="ReservePort"/> with port 0, after it rested <see cref="SpareRestNs"/>) or a bind to name: so a
    /// program opening connection after connection makes no request to the daemon, where each cost two round trips
    /// (insert on connect, remove on free), and no socket, bind, getsockname and close of a kernel socket. The port
    /// stays reserved against the kernel's programs meanwhile, and is given back for real once unused for
    /// <see cref="SpareIdleNs"/> (on the stack's next poll), when more than <see cref="MaxSparePorts"/> wait, and at
    /// <see cref="Dispose"/>.
    /// </summary>
    public void ReleaseConnectPort(byte protocol, ushort port)
    {
        if (protocol != (byte)FilterProtocol.Tcp || Removed || _spares.Count == MaxSparePorts ||
            !_backing.Remove((protocol, port), out int fd))
        {
            ReleasePort(protocol, port);
            return;
        }
        // Frames sent from the port may still be in the TX ring: the filter stays, so the forwarder still passes them.
        _spares.Add(new SparePort(port, fd, MonotonicClock.Instance.NowNanoseconds));
    }

    /// <summary>The index of the spare a reservation of <paramref name="port"/> takes: that port itself, or for port 0
    /// the oldest, if it has rested.</summary>
    private bool TakeSpare(ushort port, out int index)
    {
        index = -1;
        if (port != 0)
        {
            for (int i = 0; i < _spares.Count && index < 0; i++)
                if (_spares[i].Port == port)
                    index = i;
        }
        else if (_spares.Count > 0 && MonotonicClock.Instance.NowNanoseconds - _spares[0].SinceNs >= SpareRestNs)
            index = 0;
        return index >= 0;
    }

    private void Release(byte protocol, ushort port, int fd)
    {
        StopSteering(protocol, port, fd);
        BackingSocket.Release(fd);
    }

    /// <summary>The port's frames no longer come to this VNIC (its filter goes), nor its kernel socket's datagrams.</summary>
    private void StopSteering(byte protocol, ushort port, int fd)
    {
        if (protocol == (byte)FilterProtocol.Udp)
            Vnic.RemoveKernelSocket(fd);
        try
        {
            if (!Removed)
                _client.RemoveFilter(VnicId, new FilterSpec((FilterProtocol)protocol, Address.Address.Value, port));
        }
        catch (DriverlinkException)
        {
            // The daemon is gone and took the filter with it.
        }
    }

    public int HandOverTcp(in TcpHandOverState state, int socketFd, ReadOnlySpan<byte> sent, ReadOnlySpan<byte> unsent,
        ReadOnlySpan<byte> received)
    {
        if (Removed)
            return -(int)Onload.Stack.Errno.ENETDOWN;
        var repair = new TcpRepairState(
            state.Local.Address.Value, state.Local.Port, state.Remote.Address.Value, state.Remote.Port,
            state.SndUna, state.RcvNxt, state.SndWnd, state.SndWl1, state.RcvWnd, MaxWindow: state.SndWnd,
            state.Mss, state.WindowScaling, state.SndWscale, state.RcvWscale, state.Timestamps, state.TsVal, state.Sack,
            state.PeerClosed);
        int rc = _client.HandOverTcp(VnicId, in repair, socketFd, sent, unsent, received, out string? reason);
        if (rc != 0)
            Console.Error.WriteLine($"onload: handing {state.Local} -> {state.Remote} to the kernel: {reason}");
        return rc;
    }

    /// <summary>
    /// Gives the port's kernel socket to the caller instead of closing it, and stops steering the port to this VNIC:
    /// the socket, bound to the port all along (and a member of the groups the stack joined), then receives what
    /// arrives for it, with no moment when the port is nobody's. Call with the VNIC's TX ring empty (the daemon
    /// forwards a frame only from a port the VNIC holds). The stack's later <see cref="ReleasePort"/> of the port
    /// does nothing. Returns the socket, or a negated errno.
    /// </summary>
    public int TakePortSocket(byte protocol, ushort port)
    {
        if (!_backing.Remove((protocol, port), out int fd))
            return -(int)Onload.Stack.Errno.EINVAL;
        StopSteering(protocol, port, fd);
        return fd;
    }

    /// <summary>
    /// Lets a kernel socket that sets SO_REUSEADDR bind the port and listen on it while the port is still reserved
    /// and steered here: a listener going to the kernel listens before its port's frames go there, so no SYN meets
    /// the kernel with nobody listening (a reset, ECONNREFUSED). 0, or a negated errno (EINVAL: not reserved).
    /// </summary>
    public int SharePort(byte protocol, ushort port) =>
        _backing.TryGetValue((protocol, port), out int fd) ? BackingSocket.AllowReuse(fd) : -(int)Onload.Stack.Errno.EINVAL;

    /// <summary>Whether the port is still reserved: steered to this VNIC, or its release waiting for the TX ring.</summary>
    public bool Holds(byte protocol, ushort port) =>
        _backing.ContainsKey((protocol, port)) || _releasing.Exists(r => r.Protocol == protocol && r.Port == port) ||
        (protocol == (byte)FilterProtocol.Tcp && _spares.Exists(s => s.Port == port));

    public void ResolveNeighbour(uint address) => _client.ResolveNeighbour(VnicId, address);

    public int JoinGroup(ushort localPort, Ipv4Address group) =>
        _backing.TryGetValue(((byte)FilterProtocol.Udp, localPort), out int fd)
            ? BackingSocket.Membership(fd, group.Value, Address.Address.Value, join: true)
            : -(int)Onload.Stack.Errno.EINVAL;

    public void LeaveGroup(ushort localPort, Ipv4Address group)
    {
        if (_backing.TryGetValue(((byte)FilterProtocol.Udp, localPort), out int fd))
            _ = BackingSocket.Membership(fd, group.Value, Address.Address.Value, join: false);
    }

    public int SendToKernel(ushort localPort, Ipv4Endpoint destination, ReadOnlySpan<byte> payload) =>
        _backing.TryGetValue(((byte)FilterProtocol.Udp, localPort), out int fd)
            ? BackingSocket.SendTo(fd, payload, destination.Address.Value, destination.Port)
            : -(int)Onload.Stack.Errno.ENETUNREACH;

    /// <summary>Daemon events, releases waiting for the TX ring, or a spare idle past <see cref="SpareIdleNs"/> at
    /// <paramref name="nowNs"/> (the stack's clock, which is <see cref="MonotonicClock"/>).</summary>
    public bool EventsPending(long nowNs) => _client.EventsPending || _releasing.Count > 0 || SpareExpired(nowNs) || _reattachOutcome is not null;

    private bool SpareExpired(long nowNs) => _spares.Count > 0 && nowNs - _spares[0].SinceNs >= SpareIdleNs;

    public void ApplyEvents(NetStack stack)
    {
        if (_releasing.Count > 0 && Vnic.TxPending() == 0)
        {
            foreach (var (protocol, port, fd) in _releasing)
                Release(protocol, port, fd);
            _releasing.Clear();
        }
        long now = MonotonicClock.Instance.NowNanoseconds;
        while (SpareExpired(now))
        {
            Release((byte)FilterProtocol.Tcp, _spares[0].Port, _spares[0].Fd);
            _spares.RemoveAt(0);
        }
        if (_reattachOutcome is not null)
            FinishReattach(stack);
        while (_client.TryTakeEvent(out var message))
        {
            switch (message)
            {
                case NeighbourEvent n when n.VnicId == VnicId:
                    if (n.Reachable)
                        stack.SetNeighbour(new Ipv4Address(n.Address), n.Mac);
                    else
                        stack.ForgetNeighbour(new Ipv4Address(n.Address));
                    break;
                case MtuChangedEvent m when m.VnicId == VnicId:
                    Vnic.SetMtu(m.Mtu);
                    stack.SetMtu(Vnic.Mtu);
                    break;
                case LinkStateEvent l when l.VnicId == VnicId:
                    stack.SetLinkUp(l.Up);
                    break;
                case SuspendEvent s when s.VnicId == VnicId:
                    stack.Suspend();
                    _client.AcknowledgeSuspend(VnicId);
                    break;
                case ResumeEvent r when r.VnicId == VnicId:
                    stack.Resume();
                    break;
                case RemoveEvent { VnicId: 0 } when _client.DaemonGone && !Removed && _reattachStarted == 0:
                    StartReattach(stack);
                    break;
                case RemoveEvent r when r.VnicId == VnicId || r.VnicId == 0:
                    if (_reattachStarted != 0)
                        break; // the closed connection of a daemon we are reattaching from, or have left
                    if (!Removed)
                        Console.Error.WriteLine($"onload: {Vnic.Spec}: the VNIC is gone ({_client.CloseReason ?? "removed by onload-driverd"}); " +
                            "its sockets now see the link down");
                    Removed = true;
                    stack.SetLinkUp(false);
                    break;
            }
        }
    }

    // ------------------------------------------------------------------------------------------------ reattach

    /// <summary>When the reattachment began (Stopwatch ticks; 0: none under way).</summary>
    private long _reattachStarted;

    /// <summary>What the reattaching thread ended with, for the stack's thread: a new client and its VNIC, or why
    /// it gave up. Written once by that thread, then the old client is woken.</summary>
    private volatile ReattachOutcome? _reattachOutcome;

    private sealed record ReattachOutcome(DriverlinkClient? Client, AttachReply? Reply, string? Failure);

    /// <summary>
    /// The daemon died (or stopped) under a running stack. Its connections live in this process, and the kernel still
    /// holds every port through our backing sockets; with the XDP program pinned the flows are dropped meanwhile,
    /// not reset. So the VNIC is kept (shared mode: our end of the rings listens on their name; exclusive mode: we
    /// hold the queue's AF_XDP socket) and a thread looks for the next daemon until
    /// <see cref="DriverlinkClientOptions.ReattachTimeout"/>. The stack goes on meanwhile: what it sends finds no
    /// forwarder (shared) and TCP sends it again once back.
    /// </summary>
    private void StartReattach(NetStack stack)
    {
        _reattachStarted = System.Diagnostics.Stopwatch.GetTimestamp();
        var timeout = _options.ReattachTimeout;
        if (timeout <= TimeSpan.Zero)
        {
            GiveUp(stack, $"{_client.CloseReason}; reattaching is off (ONLOAD_DRIVERD_REATTACH=0)");
            return;
        }
        Console.Error.WriteLine($"onload: {Vnic.Spec}: onload-driverd (pid {_client.Daemon.Pid}) is gone ({_client.CloseReason}); " +
            $"reattaching to a new one for up to {timeout.TotalSeconds:0.#} s (ONLOAD_DRIVERD_REATTACH); connections wait meanwhile");
        var old = _client;
        var request = _request! with { Reattach = true, ResumeName = Mode == VnicMode.Shared ? _attachment.ShmName : "" };
        int xsk = Mode == VnicMode.Exclusive ? Vnic.Inner.WaitHandle : -1;
        var shm = Vnic.Inner as ShmVnic;
        new Thread(() =>
        {
            _reattachOutcome = Reattach(request, xsk, shm, timeout);
            // The outcome is looked at on the stack's next poll: wake it if it sleeps (on the old connection's
            // event descriptor, still in its VNIC's wait set).
            old.Wake();
        }, 0) { IsBackground = true, Name = "driverlink reattach" }.Start();
    }

    /// <summary>The reattaching thread: connect (starting the daemon if so configured), attach with our rings or
    /// socket, retrying with a growing pause until <paramref name="timeout"/>; a refusal ends it at once.</summary>
    private ReattachOutcome Reattach(AttachRequest request, int xsk, ShmVnic? shm, TimeSpan timeout)
    {
        var clock = System.Diagnostics.Stopwatch.StartNew();
        string last = "no daemon answered";
        int pauseMs = 10;
        try
        {
            while (clock.Elapsed < timeout && !_disposed)
            {
                // Our end of the rings takes the name over once it sees the daemon's end gone: a daemon can join it then.
                if (shm is not null && !shm.IsListener)
                {
                    Thread.Sleep(2);
                    continue;
                }
                DriverlinkClient? client = null;
                try
                {
                    client = DriverlinkClient.Connect(_options with { StartTimeout = Max(timeout - clock.Elapsed, TimeSpan.FromMilliseconds(100)) });
                    if (client.DaemonHello.ProtocolVersion.Minor < 1)
                        return new ReattachOutcome(null, null, $"the daemon ({client.DaemonHello.SoftwareVersion}) speaks protocol " +
                            $"{client.DaemonHello.ProtocolVersion}, which cannot take a client back (1.1 can)");
                    int[] pass = xsk >= 0 ? [xsk, _mirrorFd] : [_mirrorFd];
                    var reply = client.Attach(request, out var fds, pass);
                    foreach (int fd in fds)
                        BackingSocket.Release(fd);
                    var outcome = new ReattachOutcome(client, reply, null);
                    client = null;
                    return outcome;
                }
                catch (DriverlinkException e) when (e.Refusal is not null)
                {
                    return new ReattachOutcome(null, null, e.Message);
                }
                catch (Exception e) when (e is DriverlinkException or DriverlinkSocketException)
                {
                    last = e.Message; // no daemon yet (refused, or one still starting), or it went during the attach
                }
                finally
                {
                    client?.Dispose();
                }
                Thread.Sleep(pauseMs);
                pauseMs = Math.Min(pauseMs * 2, 250);
            }
            return new ReattachOutcome(null, null, $"no daemon took it back within {timeout.TotalSeconds:0.#} s (last: {last})");
        }
        catch (Exception e) when (e is IOException or InvalidOperationException)
        {
            return new ReattachOutcome(null, null, e.Message);
        }
    }

    private static TimeSpan Max(TimeSpan a, TimeSpan b) => a > b ? a : b;

    /// <summary>On the stack's thread: takes the new daemon's VNIC in place of the dead one's (same rings or
    /// socket, so the stack's buffers stay) and inserts again the filter of every port it holds, proving each with
    /// its kernel socket as at first; or gives up.</summary>
    private void FinishReattach(NetStack stack)
    {
        var outcome = _reattachOutcome!;
        _reattachOutcome = null;
        if (outcome.Client is not { } client || outcome.Reply is not { } reply)
        {
            GiveUp(stack, outcome.Failure!);
            return;
        }
        if (_disposed)
        {
            client.Dispose();
            return;
        }
        var first = reply.Addresses.Count > 0 ? reply.Addresses[0].Address : 0;
        if (first != Address.Address.Value)
        {
            client.Dispose();
            GiveUp(stack, $"the new daemon gives {_interfaceName} the address {new Ipv4Address(first)}, not {Address.Address}");
            return;
        }
        var old = _client;
        Vnic.ReplaceEventFd(old.EventFd, client.EventFd);
        _client = client;
        _attachment = reply;
        old.Dispose();
        int restored = 0;
        var lost = new List<string>();
        void Restore(byte protocol, ushort port, int fd)
        {
            string name = $"{(protocol == 6 ? "tcp" : "udp")}/{port}";
            try
            {
                var status = _client.InsertFilter(VnicId, new FilterSpec((FilterProtocol)protocol, Address.Address.Value, port), fd);
                if (status == FilterStatus.Ok)
                    restored++;
                else
                    lost.Add($"{name} ({status})");
            }
            catch (DriverlinkException e)
            {
                lost.Add($"{name} ({e.Message})");
            }
        }
        foreach (var ((protocol, port), fd) in _backing)
            Restore(protocol, port, fd);
        foreach (var spare in _spares)
            Restore((byte)FilterProtocol.Tcp, spare.Port, spare.Fd);
        foreach (var (protocol, port, fd) in _releasing)
            Restore(protocol, port, fd);
        LastReattachTime = System.Diagnostics.Stopwatch.GetElapsedTime(_reattachStarted);
        _reattachStarted = 0;
        Reattachments++;
        Console.Error.WriteLine($"onload: {Vnic.Spec}: reattached to onload-driverd (pid {client.Daemon.Pid}) after " +
            $"{LastReattachTime.TotalMilliseconds:0} ms: VNIC {VnicId}, {restored} filters restored" +
            (lost.Count > 0 ? $"; not restored: {string.Join(", ", lost)}" : ""));
    }

    /// <summary>No daemon took us back: the VNIC is gone for good, and every TCP connection fails with ENETDOWN so
    /// that no call waits for ever on a peer it can no longer reach.</summary>
    private void GiveUp(NetStack stack, string why)
    {
        Removed = true;
        stack.SetLinkUp(false);
        int failed = stack.FailTcp((int)Onload.Stack.Errno.ENETDOWN);
        Console.Error.WriteLine($"onload: {Vnic.Spec}: onload-driverd is gone and this process could not reattach: {why}. " +
            $"Its {failed} accelerated TCP sockets (connections and listeners) failed (ENETDOWN) and its sockets cannot bind; " +
            "restart the program once onload-driverd runs (see ONLOAD_DRIVERD_LOG).");
    }

    public void Dispose()
    {
        if (_disposed)
            return;
        _disposed = true;
        foreach (var ((protocol, port), fd) in _backing)
            BackingSocket.Release(fd);
        _backing.Clear();
        foreach (var (_, _, fd) in _releasing)
            BackingSocket.Release(fd);
        _releasing.Clear();
        foreach (var spare in _spares)
            BackingSocket.Release(spare.Fd);
        _spares.Clear();
        if (!Removed)
            _client.Detach(VnicId);
        Vnic.Dispose();
        _client.Dispose();
        _ = Libc.Munmap(_mirror.Region, ConnectionMirror.RegionSize(_mirror.Records));
        _ = Libc.Close(_mirrorFd);
    }
}
