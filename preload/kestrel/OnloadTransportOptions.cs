using System.Globalization;
using System.Net;
using Onload.Sockets;

namespace Onload.Kestrel;

/// <summary>
/// Which transport <c>UseOnload</c> serves from. One of three: <see cref="Interface"/> (driverlink mode: the kernel
/// holds the interface's address, onload-driverd steers our flows to us), <see cref="Vnic"/> and
/// <see cref="Address"/> (direct mode: the stack owns an address the kernel does not hold), or an existing
/// <see cref="Transport"/> (which the caller keeps and disposes of).
/// </summary>
public sealed class OnloadTransportOptions
{
    /// <summary>Driverlink mode: the interface to accelerate, e.g. "eth0".</summary>
    public string? Interface { get; set; }

    /// <summary>Driverlink mode: "shared" (the daemon forwards into our rings, the default) or "exclusive" (an AF_XDP
    /// socket of our own).</summary>
    public string Mode { get; set; } = "shared";

    /// <summary>Direct mode: the VNIC spec KIND:NAME (af_xdp:IF[:QUEUE], af_packet:IF, tap:NAME, shm:NAME).</summary>
    public string? Vnic { get; set; }

    /// <summary>Direct mode: the stack's own address, IP/PREFIX.</summary>
    public string? Address { get; set; }

    /// <summary>Direct mode: the default gateway, if destinations lie off the subnet.</summary>
    public string? Gateway { get; set; }

    /// <summary>The stack's other options (spin time, pipe thresholds, table sizes...); direct mode's VNIC, address
    /// and gateway come from the properties above.</summary>
    public OnloadStackOptions Stack { get; set; } = new();

    /// <summary>A transport made elsewhere; the options above are then left unset. Not disposed by Kestrel.</summary>
    public ITransport? Transport { get; set; }

    /// <summary>Throws <see cref="ArgumentException"/> unless exactly one of the three ways is given, completely.</summary>
    public void Validate()
    {
        int ways = (Interface is not null ? 1 : 0) + (Vnic is not null || Address is not null ? 1 : 0) + (Transport is not null ? 1 : 0);
        if (ways != 1)
            throw new ArgumentException("give exactly one of: Interface (driverlink mode), Vnic and Address (direct mode), Transport");
        if ((Vnic is null) != (Address is null))
            throw new ArgumentException("direct mode needs both Vnic and Address");
        if (Interface is not null && Mode is not ("shared" or "exclusive"))
            throw new ArgumentException($"Mode '{Mode}': expected shared or exclusive");
        if (Address is not null)
            ParseCidr(Address);
        if (Gateway is not null && !IPAddress.TryParse(Gateway, out _))
            throw new ArgumentException($"Gateway '{Gateway}': expected an IPv4 address");
    }

    /// <summary>"10.0.0.2/24" → (10.0.0.2, 24); ArgumentException otherwise.</summary>
    internal static (IPAddress Address, int PrefixLength) ParseCidr(string cidr)
    {
        int slash = cidr.IndexOf('/', StringComparison.Ordinal);
        if (slash < 0 ||
            !IPAddress.TryParse(cidr.AsSpan(0, slash), out var address) ||
            !int.TryParse(cidr.AsSpan(slash + 1), NumberStyles.None, CultureInfo.InvariantCulture, out int prefix) ||
            prefix is < 1 or > 32)
            throw new ArgumentException($"Address '{cidr}': expected IP/PREFIX, e.g. 10.0.0.2/24");
        return (address, prefix);
    }
}
