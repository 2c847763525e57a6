using System.Buffers;
using System.Net;
using Onload.Driverlink;
using Onload.Sockets;

namespace Onload.Kestrel;

/// <summary>Makes the user-level stack that <see cref="OnloadTransportOptions"/> describe.</summary>
internal static class OnloadTransports
{
    /// <summary>
    /// Attaches to the interface through onload-driverd (driverlink mode) or opens the VNIC (direct mode). Throws
    /// ArgumentException for bad options, IOException when the daemon or the VNIC refuses.
    /// </summary>
    public static ITransport Open(OnloadTransportOptions options, MemoryPool<byte> memoryPool)
    {
        // The connections' pipes take Kestrel's pool unless the options name one.
        var stack = options.Stack.MemoryPool is null ? options.Stack with { MemoryPool = memoryPool } : options.Stack;
        if (options.Interface is { } name)
            return OnloadStack.Attach(name, options.Mode == "exclusive" ? VnicMode.Exclusive : VnicMode.Shared, stack);
        var (address, prefix) = OnloadTransportOptions.ParseCidr(options.Address!);
        return OnloadStack.Open(stack with
        {
            Vnic = options.Vnic,
            Address = address,
            PrefixLength = prefix,
            Gateway = options.Gateway is { } g ? IPAddress.Parse(g) : null,
        });
    }
}
