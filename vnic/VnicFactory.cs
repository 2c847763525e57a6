using Onload.Vnic.AfPacket;
using Onload.Vnic.Tap;

namespace Onload.Vnic;

/// <summary>Sizes a backend takes when it opens.</summary>
public sealed record VnicOptions
{
    /// <summary>Buffers in the packet buffer area.</summary>
    public int BufferCount { get; init; } = 4096;

    /// <summary>Slots in each of the backend's RX and TX rings (a power of two).</summary>
    public int RingSize { get; init; } = 512;

    /// <summary>For TAP, the MAC the stack uses; null draws a locally administered one.</summary>
    public MacAddress? MacAddress { get; init; }

    /// <summary>
    /// The stack's own IPv4 address (host byte order), for backends that steer by address: AF_XDP's program
    /// redirects only frames for it (and ARP for it) and passes the rest to the kernel. Null where not needed.
    /// </summary>
    public uint? LocalIpv4 { get; init; }

    /// <summary>
    /// AF_XDP only: filter mode, for an interface whose address the kernel holds (driverlink mode). The XDP program
    /// then steers to the socket only the IPv4 TCP and UDP flows added with <c>AfXdpVnic.AddFilter</c> and passes
    /// everything else, ARP included, to the kernel; <see cref="LocalIpv4"/> is not needed. False: direct mode, the
    /// stack owns <see cref="LocalIpv4"/> and gets all of its traffic.
    /// </summary>
    public bool FilterMode { get; init; }

    /// <summary>AF_XDP filter mode: entries in the filters map; an AddFilter beyond them is refused (ENOSPC).</summary>
    public int MaxFilters { get; init; } = 1024;

    /// <summary>shm only: a user besides our own whose process may join an endpoint we create (onload-driverd names
    /// the client it made the endpoint for); null: our own user only.</summary>
    public uint? ShmPeerUid { get; init; }

    /// <summary>shm only: join only, and only the endpoint this process listens on (SO_PEERCRED): onload-driverd
    /// rejoining the rings of a client that outlived the daemon it attached through. Null: create or join any.</summary>
    public int? ShmJoinPid { get; init; }

    /// <summary>Bytes per packet buffer; null lets the backend choose one that fits its MTU.</summary>
    public int? BufferSize { get; init; }
}

/// <summary>Opens a VNIC from its spec string <c>KIND:NAME</c>.</summary>
public static class VnicFactory
{
    public static readonly IReadOnlyList<string> Kinds = ["af_packet", "tap", "shm", "af_xdp"];

    public static IVnic Open(string spec, VnicOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(spec);
        options ??= new VnicOptions();
        int colon = spec.IndexOf(':', StringComparison.Ordinal);
        if (colon <= 0 || colon == spec.Length - 1)
            throw new ArgumentException($"VNIC spec '{spec}' is not KIND:NAME (kinds: {string.Join(", ", Kinds)})", nameof(spec));
        string kind = spec[..colon];
        string name = spec[(colon + 1)..];
        return kind switch
        {
            "af_packet" => AfPacketVnic.Open(name, options),
            "tap" => TapVnic.Open(name, options),
            "shm" => Shm.ShmVnic.Open(name, options),
            "af_xdp" => AfXdp.AfXdpVnic.Open(name, options),
            _ => throw new ArgumentException($"VNIC kind '{kind}' is not known (kinds: {string.Join(", ", Kinds)})", nameof(spec)),
        };
    }
}
