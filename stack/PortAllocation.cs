using Onload.Stack.Tcp;
using Onload.Stack.Wire;

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
    /// algorithm 1, as Linux does for bind() and UDP); <paramref name="exhausted"/> (a negated errno) when every
    /// port is taken. Generic over the table so the search is inlined per protocol without an interface call per port.
    /// </summary>
    private int PickEphemeralPort<TTable>(TTable table, Errno exhausted) where TTable : IPortTable =>
        SearchPorts(table, exhausted, _random.NextUInt64(), out _);

    /// <summary>
    /// The local port for a connect() to <paramref name="remote"/> (RFC 6056 §3.3.3, algorithm 3, as Linux's
    /// __inet_hash_connect): from a keyed hash of the endpoints plus a counter that moves past every port taken, so
    /// successive connections to one server use the ports in turn. A random pick would soon hand out a port whose
    /// last connection the server still holds in TIME_WAIT, and if our new SYN is not newer in sequence and
    /// timestamp than that connection's, the server answers it with an ACK and the connect waits a SYN timeout.
    /// </summary>
    private int PickConnectPort(Ipv4Endpoint remote)
    {
        ulong endpoints = ((ulong)_address.Value << 32) | remote.Address.Value;
        ulong offset = SipHash.Hash(_isnKey1, _isnKey0, endpoints, remote.Port) + _connectPortCounter;
        int port = SearchPorts(_tcp, Errno.EADDRNOTAVAIL, offset, out int tried);
        _connectPortCounter += (uint)tried + 1;
        return port;
    }

    private int SearchPorts<TTable>(TTable table, Errno exhausted, ulong offset, out int tried) where TTable : IPortTable
    {
        int first = Options.EphemeralPortFirst;
        int count = Options.EphemeralPortLast - first + 1;
        ulong start = offset % (ulong)count;
        for (tried = 0; tried < count; tried++)
        {
            ushort port = (ushort)(first + (int)((start + (ulong)tried) % (ulong)count));
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
