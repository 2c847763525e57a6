namespace Onload.Apps.Driverd;

/// <summary>What the daemon accelerates and how much it hands out (flags, then ONLOAD_INTERFACES).</summary>
public sealed record DaemonOptions
{
    /// <summary>The interfaces clients may attach to; empty: any interface but loopback.</summary>
    public IReadOnlyList<string> Interfaces { get; init; } = [];

    public string SocketName { get; init; } = Onload.Driverlink.DriverlinkSocket.DefaultName;

    /// <summary>Stay attached to the terminal (a service manager's child) instead of starting a session of its own.</summary>
    public bool Foreground { get; init; }

    /// <summary>Exit this long after the last client left; null: never (the default in the foreground).</summary>
    public TimeSpan? Grace { get; init; }

    /// <summary>VNICs in all, over every client and interface.</summary>
    public int MaxVnics { get; init; } = 64;

    /// <summary>Filters (ports) per VNIC.</summary>
    public int MaxFiltersPerVnic { get; init; } = 16384;

    /// <summary>Filters per interface over all its VNICs: the XDP program's filter map (kernel memory, ~100 B each).</summary>
    public int MaxFiltersTotal { get; init; } = 65536;

    /// <summary>The largest RX or TX ring a client may ask for, and the default.</summary>
    public int MaxRingSize { get; init; } = 4096;
    public int DefaultRingSize { get; init; } = 1024;

    /// <summary>The most packet buffers per VNIC, and the default.</summary>
    public int MaxBuffers { get; init; } = 65536;
    public int DefaultBuffers { get; init; } = 8192;

    /// <summary>Where the XDP program's link and maps are pinned, per namespace and interface; null: not pinned.</summary>
    public string? PinRoot { get; init; } = "/sys/fs/bpf/onload";

    /// <summary>
    /// Who may attach besides root and the daemon's own user: (uid, interface) grants, interface null for every
    /// interface (<c>--allow UID[@IF]</c>, config <c>allow = UID[@IF], ...</c>).
    /// </summary>
    public IReadOnlyList<(uint Uid, string? Interface)> Grants { get; init; } = [];

    /// <summary>How long a daemon that adopted a pinned program keeps its predecessor's filters for the clients that
    /// outlived it to reattach and claim (each proving its port again); the rest are removed then.</summary>
    public TimeSpan ReattachWindow { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>How long the shared-mode forwarder busy-polls an idle interface before it sleeps.</summary>
    public TimeSpan ForwarderSpin { get; init; } = TimeSpan.FromMicroseconds(200);
}
