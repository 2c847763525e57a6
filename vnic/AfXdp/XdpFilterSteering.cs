using Onload.Vnic.Native;

namespace Onload.Vnic.AfXdp;

/// <summary>
/// The filter-mode XDP program (<see cref="FlowFilterProgram"/>) on one interface with its maps — the XSKMAP
/// (RX queue → AF_XDP socket) and the filters hash map — attached by a bpf_link: the half of an <c>af_xdp</c> VNIC
/// that needs CAP_BPF and CAP_NET_ADMIN, so that a daemon can own it while client processes own the sockets.
/// </summary>
/// <remarks>
/// <para>The kernel checks no capability when a socket is bound or its UMEM registered (net/xdp/xsk.c; the UMEM is
/// charged to RLIMIT_MEMLOCK unless the process has CAP_IPC_LOCK), nor when an XSKMAP is updated through an fd the
/// owner already holds. Since Linux 5.10 it also takes an unbound socket into an XSKMAP ("xsk: fix possible
/// segfault at xskmap entry insertion" removed the check), but a frame redirected to a socket that is not bound, or
/// bound to another queue, is dropped (xsk_rcv_check: ENXIO, EINVAL), not passed. So a client binds the socket the
/// daemon created for it, and only then does the daemon call <see cref="SetSocket"/>.</para>
/// <para>With a pin directory the link and both maps are also files on the bpffs, which keep them alive when this
/// process dies or calls <see cref="Release"/>; the next <see cref="AttachOrAdopt"/> on that directory takes them
/// over (<see cref="Adopted"/>) without the interface ever being without its program, and the clients' sockets stay
/// in the XSKMAP. Without one the program lives as long as this object's fds.</para>
/// <para>Control path only: no call allocates on a hot path, and FilterCount is kept with interlocked operations so
/// filters may be added from more than one thread.</para>
/// </remarks>
public sealed unsafe class XdpFilterSteering : IDisposable
{
    /// <summary>XSKMAP entries when the steering is made for any queue: one for every queue an
    /// <c>af_xdp:IF:QUEUE</c> spec can name (0 to 4095). A slot is a pointer: 32 KiB in all.</summary>
    internal const int AnyQueueEntries = 4096;

    private const string LinkPin = "link";
    private const string XsksPin = "xsks";
    private const string FiltersPin = "filters";

    private readonly string _spec;
    private readonly string? _pinDirectory;
    private int _xsksMap = -1;
    private int _filtersMap = -1;
    private int _prog = -1;
    private int _link = -1;
    private int _filterCount;
    /// <summary>Whether the pins in <see cref="_pinDirectory"/> are ours to remove on Dispose (we made them or
    /// adopted them), as opposed to someone else's left alone after a failure.</summary>
    private bool _ownsPins;
    private bool _closed;

    private XdpFilterSteering(string spec, string ifName, int ifIndex, int maxFilters, string? pinDirectory)
    {
        _spec = spec;
        InterfaceName = ifName;
        IfIndex = ifIndex;
        MaxFilters = maxFilters;
        _pinDirectory = pinDirectory;
    }

    public string InterfaceName { get; }

    /// <summary>The interface's index in the namespace it was opened in.</summary>
    public int IfIndex { get; }

    /// <summary>Whether this object took over a program pinned by an earlier owner rather than attaching its own.</summary>
    public bool Adopted { get; private set; }

    /// <summary>Capacity of the filters map: the argument, or after adoption the pinned map's.</summary>
    public int MaxFilters { get; private set; }

    /// <summary>Filters in the map, as this object counts them (after adoption, counted in the map).</summary>
    public int FilterCount => Volatile.Read(ref _filterCount);

    /// <summary>Whether the program runs in the driver (native XDP) rather than on the skb path; false after adoption
    /// (a link's info does not say).</summary>
    internal bool NativeXdp { get; private set; }

    /// <summary>Times an attach slept because the interface's XDP hook was busy (a previous owner dying).</summary>
    internal int BusyRetries { get; private set; }

    /// <summary>
    /// Loads and attaches the filter-mode program on <paramref name="ifName"/> in the calling thread's network
    /// namespace. With a <paramref name="pinDirectory"/> (e.g. <c>/sys/fs/bpf/onload/&lt;netns inode&gt;/&lt;ifname&gt;</c>),
    /// first adopts a program pinned there (link, XSKMAP, filters map) if its link is still attached to this
    /// interface; else attaches anew and pins link and maps there, mounting a bpffs at /sys/fs/bpf if none is and
    /// creating the directories. Stale pins (a link no longer attached there, or maps missing) are replaced.
    /// </summary>
    /// <exception cref="ArgumentException">A bad interface name, or <paramref name="maxFilters"/> below 1.</exception>
    /// <exception cref="IOException">A system call failed; the message names it and errno.</exception>
    public static XdpFilterSteering AttachOrAdopt(string ifName, int maxFilters, string? pinDirectory = null)
    {
        ArgumentNullException.ThrowIfNull(ifName);
        string spec = "af_xdp:" + ifName;
        NetInterface.CheckName(spec, ifName, nameof(ifName));
        if (maxFilters < 1)
            throw new ArgumentException($"{spec}: maxFilters {maxFilters} is below 1", nameof(maxFilters));
        if (pinDirectory is not null && !Path.IsPathFullyQualified(pinDirectory))
            throw new ArgumentException($"{spec}: the pin directory '{pinDirectory}' is not an absolute path", nameof(pinDirectory));
        int ifIndex = NetInterface.Index(spec, ifName);

        var steering = new XdpFilterSteering(spec, ifName, ifIndex, maxFilters, pinDirectory?.TrimEnd('/'));
        try
        {
            if (steering._pinDirectory is not null)
            {
                BpfFs.EnsureMounted(spec);
                if (steering.TryAdopt())
                    return steering;
            }
            steering.CreateMapsAndProgram(AnyQueueEntries);
            steering.Attach();
            if (steering._pinDirectory is not null)
                steering.Pin();
            return steering;
        }
        catch
        {
            // What we attached goes; what we found pinned and could not take over stays for whoever can.
            steering.Dispose();
            throw;
        }
    }

    /// <summary>The maps and the program, not yet attached (for <see cref="AfXdpVnic.Open"/>, which attaches once
    /// its socket is bound, as it always has). Errors start with <paramref name="spec"/>.</summary>
    internal static XdpFilterSteering Create(string spec, string ifName, int ifIndex, int maxFilters, int xskMapEntries)
    {
        var steering = new XdpFilterSteering(spec, ifName, ifIndex, maxFilters, null);
        try
        {
            steering.CreateMapsAndProgram(xskMapEntries);
            return steering;
        }
        catch
        {
            steering.Dispose();
            throw;
        }
    }

    /// <summary>XSKMAP[<paramref name="queue"/>] = <paramref name="xskFd"/>: frames of that RX queue that match a
    /// filter go to that socket from now on. The socket must already be bound to <see cref="IfIndex"/> and that
    /// queue: the kernel does not check (Linux 5.10 on), and drops the matching frames of a socket that is not.</summary>
    /// <returns>0; or a negated errno: EOPNOTSUPP if the fd is not an AF_XDP socket, E2BIG for a queue beyond the
    /// map, EBADF once disposed or released (or for a bad fd).</returns>
    public int SetSocket(int queue, int xskFd)
    {
        if (_closed)
            return -Errno.EBADF;
        if (queue < 0)
            return -Errno.EINVAL;
        uint key = (uint)queue;
        int fd = xskFd;
        return Bpf.MapUpdate(_xsksMap, &key, &fd);
    }

    /// <summary>Empties XSKMAP[<paramref name="queue"/>]: that queue's frames that match a filter are dropped from
    /// now on (the program's redirect falls back to XDP_DROP: the kernel, which holds each filtered port with an
    /// unconnected socket, would reset the connections of a client that is only reattaching); remove the filters
    /// to give their flows back to the kernel. 0, or a negated errno (EINVAL beyond the map, EBADF).</summary>
    public int ClearSocket(int queue)
    {
        if (_closed)
            return -Errno.EBADF;
        if (queue < 0)
            return -Errno.EINVAL;
        uint key = (uint)queue;
        return Bpf.MapDelete(_xsksMap, &key);
    }

    /// <summary>
    /// Steers to the socket of the receiving queue the IPv4 <paramref name="protocol"/> (TCP or UDP) frames for
    /// <paramref name="localAddress"/>:<paramref name="localPort"/>, from anyone (a wild filter: remote address and
    /// port both 0) or only from <paramref name="remoteAddress"/>:<paramref name="remotePort"/> (a full filter, tried
    /// first). Addresses and ports in host byte order. Takes effect for the next frame.
    /// </summary>
    /// <returns>0; or a negated errno: EADDRINUSE if that exact filter exists, ENOSPC if the map holds
    /// <see cref="MaxFilters"/> already, EINVAL for another protocol, a zero local address or port, or a remote half
    /// given in part; EBADF once disposed or released.</returns>
    public int AddFilter(System.Net.Sockets.ProtocolType protocol, uint localAddress, ushort localPort, uint remoteAddress = 0, ushort remotePort = 0)
    {
        if (!TryFilterKey(protocol, localAddress, localPort, remoteAddress, remotePort, out var key, out int error))
            return error;
        byte value = 1;
        int rc = Bpf.MapUpdate(_filtersMap, &key, &value, Bpf.BPF_NOEXIST);
        switch (rc)
        {
            case 0:
                Interlocked.Increment(ref _filterCount);
                return 0;
            case -Errno.EEXIST:
                return -Errno.EADDRINUSE;
            case -Errno.E2BIG: // a full hash map (kernel/bpf/hashtab.c)
            case -Errno.ENOMEM:
                return -Errno.ENOSPC;
            default:
                return rc;
        }
    }

    /// <summary>Removes a filter <see cref="AddFilter"/> added (same arguments): its frames go to the kernel again.
    /// Returns 0, or a negated errno: ENOENT if there is no such filter, else as AddFilter.</summary>
    public int RemoveFilter(System.Net.Sockets.ProtocolType protocol, uint localAddress, ushort localPort, uint remoteAddress = 0, ushort remotePort = 0)
    {
        if (!TryFilterKey(protocol, localAddress, localPort, remoteAddress, remotePort, out var key, out int error))
            return error;
        int rc = Bpf.MapDelete(_filtersMap, &key);
        if (rc == 0)
            Interlocked.Decrement(ref _filterCount);
        return rc;
    }

    /// <summary>The filters in the map now, in host byte order (a daemon that adopted the program learns what its
    /// predecessor's clients had steered, to keep it for those that reattach). Throws <see cref="IOException"/> if
    /// the map cannot be walked.</summary>
    public List<SteeredFlow> ListFilters()
    {
        ObjectDisposedException.ThrowIf(_closed, this);
        var flows = new List<SteeredFlow>();
        ForEachFilterKey(k => flows.Add(new SteeredFlow((System.Net.Sockets.ProtocolType)k.Protocol,
            XdpProgramParts.Wire(k.LocalAddress), XdpProgramParts.Wire16(k.LocalPort),
            XdpProgramParts.Wire(k.RemoteAddress), XdpProgramParts.Wire16(k.RemotePort))));
        return flows;
    }

    /// <summary>Removes every filter, whoever added it (a daemon that adopted the program cleans up after clients
    /// that died with it down). Throws <see cref="IOException"/> if the map cannot be walked or emptied.</summary>
    public void ClearFilters()
    {
        ObjectDisposedException.ThrowIf(_closed, this);
        // Keys first, then deletes: deleting the key being walked from would restart the walk (hashtab.c).
        var keys = new List<FlowFilterKey>();
        ForEachFilterKey(keys.Add);
        foreach (var k in keys)
        {
            var key = k;
            int rc = Bpf.MapDelete(_filtersMap, &key);
            if (rc < 0 && rc != -Errno.ENOENT)
                throw XdpAttach.Failure(_spec, "bpf(BPF_MAP_DELETE_ELEM) of the filters map", -rc);
        }
        Volatile.Write(ref _filterCount, CountFilters());
    }

    /// <summary>Detaches the program and removes the pins (if any): the interface's frames all go to the kernel
    /// again. Idempotent; after <see cref="Release"/> it does nothing.</summary>
    public void Dispose()
    {
        if (_closed)
            return;
        if (_ownsPins && _pinDirectory is not null)
        {
            // The pins hold the link too, and another process may still hold an fd of it: detach explicitly.
            if (_link >= 0)
                Bpf.LinkDetach(_link);
            RemovePins();
            try
            {
                Directory.Delete(_pinDirectory);
            }
            catch (IOException)
            {
                // Not empty (something else pinned there) or already gone: leave it.
            }
        }
        Close();
    }

    /// <summary>Closes this process's fds and leaves the program attached and the pins in place, for the next
    /// <see cref="AttachOrAdopt"/> on the same directory (a daemon handing over or restarting). Without a pin
    /// directory nothing else holds the link, so the program goes as on Dispose.</summary>
    public void Release() => Close();

    private void Close()
    {
        _closed = true;
        XdpAttach.CloseFd(ref _link);
        XdpAttach.CloseFd(ref _prog);
        XdpAttach.CloseFd(ref _xsksMap);
        XdpAttach.CloseFd(ref _filtersMap);
    }

    /// <summary>
    /// Loads the program afresh on the same maps and swaps it in through the link (BPF_LINK_UPDATE): filters and
    /// sockets stay, and no frame finds the interface without a program. What a daemon does when asked to reload.
    /// Returns 0 or a negated errno.
    /// </summary>
    public int Reload()
    {
        ObjectDisposedException.ThrowIf(_closed, this);
        int prog = XdpAttach.LoadProgram(_spec, FlowFilterProgram.Build(_xsksMap, _filtersMap), FlowFilterProgram.Name);
        int rc = Bpf.LinkUpdate(_link, prog);
        if (rc < 0)
        {
            Libc.Close(prog);
            return rc;
        }
        if (_prog >= 0)
            Libc.Close(_prog);
        _prog = prog;
        Reloads++;
        return 0;
    }

    /// <summary>Programs swapped in by <see cref="Reload"/>.</summary>
    public int Reloads { get; private set; }

    // ------------------------------------------------------------------------------------------------ attach

    private void CreateMapsAndProgram(int xskMapEntries)
    {
        _xsksMap = Bpf.MapCreate(Bpf.BPF_MAP_TYPE_XSKMAP, 4, 4, (uint)xskMapEntries, "onload_xsks");
        if (_xsksMap < 0)
            throw XdpAttach.Failure(_spec, "bpf(BPF_MAP_CREATE, XSKMAP)", -_xsksMap);
        _filtersMap = Bpf.MapCreate(Bpf.BPF_MAP_TYPE_HASH, FlowFilterKey.Size, 1, (uint)MaxFilters, "onload_filters");
        if (_filtersMap < 0)
            throw XdpAttach.Failure(_spec, $"bpf(BPF_MAP_CREATE, HASH of {MaxFilters} filters)", -_filtersMap);
        _prog = XdpAttach.LoadProgram(_spec, FlowFilterProgram.Build(_xsksMap, _filtersMap), FlowFilterProgram.Name);
    }

    /// <summary>Attaches the loaded program (see <see cref="XdpAttach.Attach"/>); sleeps while retrying are added
    /// to <paramref name="busyRetries"/>.</summary>
    internal void Attach(ref int busyRetries)
    {
        _link = XdpAttach.Attach(_spec, InterfaceName, IfIndex, _prog, ref busyRetries, out bool native);
        NativeXdp = native;
    }

    private void Attach()
    {
        int retries = 0;
        Attach(ref retries);
        BusyRetries += retries;
    }

    // ------------------------------------------------------------------------------------------------ pins

    private string PinPath(string name) => Path.Combine(_pinDirectory!, name);

    /// <summary>
    /// Takes over link and maps pinned in the directory if the link is an XDP link attached to this interface. A
    /// link that is not (its interface gone: ifindex 0; or another one) is stale: its pins are removed and false
    /// returned. A live link without usable maps cannot steer for anyone: it is detached and false returned.
    /// </summary>
    private bool TryAdopt()
    {
        string linkPath = PinPath(LinkPin);
        int link = Bpf.ObjGet(linkPath);
        if (link == -Errno.ENOENT)
        {
            RemovePins(); // maps pinned by an owner that died before pinning its link
            return false;
        }
        if (link < 0)
            throw XdpAttach.Failure(_spec, $"bpf(BPF_OBJ_GET, {linkPath})", -link);
        _link = link;
        int rc = Bpf.LinkInfo(link, out uint type, out _, out int ifIndex);
        if (rc < 0)
            throw XdpAttach.Failure(_spec, $"bpf(BPF_OBJ_GET_INFO_BY_FD) of the link pinned at {linkPath}", -rc);
        if (type != Bpf.BPF_LINK_TYPE_XDP || ifIndex != IfIndex)
        {
            XdpAttach.CloseFd(ref _link);
            RemovePins();
            return false;
        }

        _xsksMap = AdoptMap(XsksPin, Bpf.BPF_MAP_TYPE_XSKMAP, 4, 4, out _);
        _filtersMap = AdoptMap(FiltersPin, Bpf.BPF_MAP_TYPE_HASH, FlowFilterKey.Size, 1, out uint maxFilters);
        if (_xsksMap < 0 || _filtersMap < 0)
        {
            Bpf.LinkDetach(_link);
            XdpAttach.CloseFd(ref _link);
            XdpAttach.CloseFd(ref _xsksMap);
            XdpAttach.CloseFd(ref _filtersMap);
            RemovePins();
            return false;
        }
        MaxFilters = (int)maxFilters;
        Adopted = true;
        _ownsPins = true;
        Volatile.Write(ref _filterCount, CountFilters());
        return true;
    }

    /// <summary>The map pinned under <paramref name="name"/> if it is what the program expects, else -1.</summary>
    private int AdoptMap(string name, uint type, uint keySize, uint valueSize, out uint maxEntries)
    {
        maxEntries = 0;
        int fd = Bpf.ObjGet(PinPath(name));
        if (fd < 0)
            return -1;
        if (Bpf.MapInfo(fd, out uint t, out uint k, out uint v, out maxEntries) < 0 || t != type || k != keySize || v != valueSize)
        {
            Libc.Close(fd);
            return -1;
        }
        return fd;
    }

    /// <summary>Pins maps, then the link: a link pin means a complete set (<see cref="TryAdopt"/> starts from it).</summary>
    private void Pin()
    {
        string dir = _pinDirectory!;
        try
        {
            Directory.CreateDirectory(dir);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw OpenFailure.Message(_spec, $"cannot create the pin directory {dir}: {e.Message}");
        }
        _ownsPins = true;
        PinOne(_xsksMap, XsksPin);
        PinOne(_filtersMap, FiltersPin);
        PinOne(_link, LinkPin);
    }

    private void PinOne(int fd, string name)
    {
        string path = PinPath(name);
        int rc = Bpf.ObjPin(fd, path);
        if (rc == -Errno.EPERM)
            throw OpenFailure.Message(_spec, $"bpf(BPF_OBJ_PIN, {path}) failed: {Errno.Describe(Errno.EPERM)}: pins live on a bpffs ({BpfFs.MountPoint})", Errno.EPERM);
        if (rc < 0)
            throw XdpAttach.Failure(_spec, $"bpf(BPF_OBJ_PIN, {path})", -rc);
    }

    private void RemovePins()
    {
        BpfFs.Unpin(PinPath(LinkPin));
        BpfFs.Unpin(PinPath(XsksPin));
        BpfFs.Unpin(PinPath(FiltersPin));
    }

    // ------------------------------------------------------------------------------------------------ filters map

    private int CountFilters()
    {
        int n = 0;
        ForEachFilterKey(_ => n++);
        return n;
    }

    private void ForEachFilterKey(Action<FlowFilterKey> visit)
    {
        FlowFilterKey key;
        FlowFilterKey next;
        int rc = Bpf.MapGetNextKey(_filtersMap, null, &next);
        while (rc == 0)
        {
            visit(next);
            key = next;
            rc = Bpf.MapGetNextKey(_filtersMap, &key, &next);
        }
        if (rc != -Errno.ENOENT)
            throw XdpAttach.Failure(_spec, "bpf(BPF_MAP_GET_NEXT_KEY) of the filters map", -rc);
    }

    private bool TryFilterKey(System.Net.Sockets.ProtocolType protocol, uint localAddress, ushort localPort,
        uint remoteAddress, ushort remotePort, out FlowFilterKey key, out int error)
    {
        key = default;
        error = _closed ? -Errno.EBADF : 0;
        if (error != 0)
            return false;
        bool wild = remoteAddress == 0 && remotePort == 0;
        bool full = remoteAddress != 0 && remotePort != 0;
        if (protocol is not (System.Net.Sockets.ProtocolType.Tcp or System.Net.Sockets.ProtocolType.Udp)
            || localAddress == 0 || localPort == 0 || !(wild || full))
        {
            error = -Errno.EINVAL;
            return false;
        }
        key = FlowFilterKey.From((byte)protocol, localAddress, localPort, remoteAddress, remotePort);
        return true;
    }
}

/// <summary>One entry of the filters map, as <see cref="XdpFilterSteering.AddFilter"/> took it (host byte order; the
/// remote half zero for a wild filter).</summary>
public readonly record struct SteeredFlow(System.Net.Sockets.ProtocolType Protocol, uint LocalAddress, ushort LocalPort,
    uint RemoteAddress, ushort RemotePort);
