namespace Onload.Stack;

/// <summary>A protocol's table of bound ports, as the ephemeral port search sees it.</summary>
internal interface IPortTable
{
    bool PortInUse(ushort port);
}

public sealed partial class NetStack
{
    /// <summary>
    /// An unused port from net.ipv4.ip_local_port_range, searched from a random offset (RFC 6056 §3.3.1,
    /// algorithm 1, as Linux does); <paramref name="exhausted"/> (a negated errno) when every port is taken.
    /// Generic over the table so the search is inlined per protocol without an interface call per port.
    /// </summary>
    private int PickEphemeralPort<TTable>(TTable table, Errno exhausted) where TTable : IPortTable
    {
        int first = Options.EphemeralPortFirst;
        int count = Options.EphemeralPortLast - first + 1;
        int offset = (int)(_random.NextUInt64() % (ulong)count);
        for (int n = 0; n < count; n++)
        {
            ushort port = (ushort)(first + (offset + n) % count);
            if (!table.PortInUse(port))
                return port;
        }
        return -(int)exhausted;
    }

    /// <summary>Reports a pending asynchronous error once and clears it, as the kernel's sock_error() does.</summary>
    private static int TakeError(ref int error)
    {
        int e = error;
        error = 0;
        return e;
    }
}
