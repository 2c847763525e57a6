using Onload.Stack.Tcp;
using Onload.Stack.Wire;

namespace Onload.Stack;

/// <summary>A protocol's table of bound ports, as the ephemeral port search and the bind rule see it.</summary>
internal interface IPortTable
{
    bool PortInUse(ushort port);
    /// <summary>The rows bound to a port (<see cref="Memory.PortLists"/>): the first, or -1 ...</summary>
    int FirstOnPort(ushort port);
    /// <summary>... and each one's next, or -1.</summary>
    int NextOnPort(int row);
    PortBinder Binder(int row);
}

/// <summary>What Linux's bind rule looks at in a socket holding or taking a port (one user, no SO_BINDTODEVICE).
/// <paramref name="Listening"/>: a TCP listener (a UDP socket never is).</summary>
public readonly record struct PortBinder(Ipv4Address Address, bool ReuseAddr, bool ReusePort, bool Listening)
{
    /// <summary>
    /// Whether this socket may not take the port beside <paramref name="holder"/>, as Linux's inet_bind_conflict
    /// (TCP) and udp_lib_lport_inuse (UDP): sockets on different addresses never conflict; on one (or the wildcard)
    /// they share the port when both set SO_REUSEPORT, or both set SO_REUSEADDR and the holder is not listening.
    /// </summary>
    public bool ConflictsWith(in PortBinder holder) =>
        (Address.IsAny || holder.Address.IsAny || Address == holder.Address) &&
        !(ReuseAddr && holder.ReuseAddr && !holder.Listening) &&
        !(ReusePort && holder.ReusePort);
}

public sealed partial class NetStack
{
    /// <summary>Driverlink mode only (else null): by port, the connections accepted on it that still have a row.
    /// They share the listener's reservation, so it goes back only when the last of them and the listener are gone,
    /// as Linux's children hold the listener's bind bucket.</summary>
    private readonly ushort[]? _tcpAcceptedOnPort;
    /// <summary>Driverlink mode only: the reserving row was freed while accepted connections still used the port.</summary>
    private readonly bool[]? _tcpReleasePending;
    /// <summary>Driverlink mode only: the port was reserved by connect()'s implicit bind and no other row joined it,
    /// so it goes back through <see cref="IStackControl.ReleaseConnectPort"/>, which may keep it for the next
    /// connect.</summary>
    private readonly bool[]? _tcpConnectPort;
    /// <summary>Keys <see cref="ReuseportPick"/> apart from the ISNs (drawn from their keys, so that start takes no
    /// random number more).</summary>
    private readonly ulong _reuseportKey;

    /// <summary>
    /// An unused port from net.ipv4.ip_local_port_range, searched from a random offset (RFC 6056 §3.3.1,
    /// algorithm 1, as Linux does for bind() and UDP); <paramref name="exhausted"/> (a negated errno) when every
    /// port is taken. One search for both tables (an interface call per port looked at: the tables are classes, so
    /// the runtime shares one compiled copy of it); a cold path, at bind and connect.
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

    /// <summary>
    /// Driverlink mode: reserves <paramref name="port"/> (0: an ephemeral one, which the kernel picks and which is
    /// returned in <paramref name="port"/>) through the control plane, so the daemon steers it to our VNIC. The
    /// reservation is the port's, taken once: a socket the bind rule let share a port already held joins it. An
    /// ephemeral port the stack itself still holds is given back at once and refused, never shared. Returns 0 or a
    /// negated errno; on failure nothing stays reserved.
    /// </summary>
    private int ReserveControlPort<TTable>(TTable table, byte protocol, ref ushort port, Errno exhausted) where TTable : IPortTable
    {
        if (port != 0 && table.PortInUse(port))
            return 0;
        int rc = _control!.ReservePort(protocol, ref port);
        if (rc != 0)
            return rc < 0 ? rc : -rc;
        if (port != 0 && !table.PortInUse(port))
            return 0;
        if (port != 0)
            _control.ReleasePort(protocol, port);
        return -(int)exhausted; // only an ephemeral port gets here: a port asked for was free on entry
    }

    /// <summary>Whether <paramref name="binder"/>, row <paramref name="self"/> of <paramref name="table"/> (on the port
    /// already when it starts to listen), may not take <paramref name="port"/> beside the rows bound to it.</summary>
    private static bool BindConflict<TTable>(TTable table, int self, ushort port, in PortBinder binder) where TTable : IPortTable
    {
        for (int o = table.FirstOnPort(port); o >= 0; o = table.NextOnPort(o))
            if (o != self && binder.ConflictsWith(table.Binder(o)))
                return true;
        return false;
    }

    /// <summary>
    /// Which of <paramref name="members"/> sockets of an SO_REUSEPORT group a flow goes to: a keyed hash of its
    /// four-tuple scaled to the group's size, as Linux's reuseport_select_sock, so every segment or datagram of one
    /// flow (a connection's retransmitted SYNs too) meets the same member and flows spread across the group.
    /// </summary>
    private uint ReuseportPick(Ipv4Address local, ushort port, Ipv4Address remote, ushort remotePort, uint members)
    {
        ulong endpoints = ((ulong)local.Value << 32) | remote.Value;
        uint hash = (uint)SipHash.Hash(_reuseportKey, _isnKey1, endpoints, ((ulong)port << 16) | remotePort);
        return (uint)((ulong)hash * members >> 32);
    }

    /// <summary>Driverlink mode: binds TCP row <paramref name="c"/> to <paramref name="port"/> (0: ephemeral)
    /// reserved through the control plane. The reservation is the port's, taken once: a row sharing the port with
    /// others (SO_REUSEADDR, SO_REUSEPORT) joins theirs, and one still held for connections accepted on the port
    /// passes to the new row. <paramref name="forConnect"/>: connect()'s implicit bind (port 0).</summary>
    private int TcpBindReserved(int c, ushort port, bool forConnect = false)
    {
        if (port != 0 && _tcpReleasePending![port])
            _tcpReleasePending[port] = false;
        else
        {
            int rc = ReserveControlPort(_tcp, IpProtocol.Tcp, ref port, Errno.EADDRNOTAVAIL);
            if (rc != 0)
                return rc;
        }
        _tcp.BindPort(c, port);
        _tcp[c].PortReserved = true;
        _tcpConnectPort![port] = forConnect; // a row joining the port makes it an ordinary one
        return 0;
    }

    /// <summary>Driverlink mode, TCP row <paramref name="c"/> being freed: gives its port back once no row uses it.</summary>
    private void TcpReleaseReserved(int c)
    {
        ref var t = ref _tcp[c];
        ushort port = t.LocalPort;
        if (t.PortReserved)
        {
            t.PortReserved = false;
            _tcp.UnbindPort(c);
            if (_tcp.PortInUse(port))
                return; // the others bound to the port hold it still
            if (_tcpAcceptedOnPort![port] > 0)
                _tcpReleasePending![port] = true;
            else if (_tcpConnectPort![port])
            {
                _tcpConnectPort[port] = false;
                _control!.ReleaseConnectPort(IpProtocol.Tcp, port);
            }
            else
                _control!.ReleasePort(IpProtocol.Tcp, port);
        }
        else if (!t.Bound && port != 0 && --_tcpAcceptedOnPort![port] == 0 && _tcpReleasePending![port])
        {
            // Accepted on a listener's port (bound rows reserve their own), the last one there.
            _tcpReleasePending[port] = false;
            _control!.ReleasePort(IpProtocol.Tcp, port);
        }
    }

    /// <summary>Driverlink mode, the stack going away: every reservation still held goes back, once per port.</summary>
    private void ReleaseAllReserved()
    {
        for (int port = 1; port < 65536; port++)
            if (_tcp.PortInUse((ushort)port) || _tcpReleasePending![port])
                _control!.ReleasePort(IpProtocol.Tcp, (ushort)port);
    }

    /// <summary>Reports a pending asynchronous error once and clears it, as the kernel's sock_error() does.</summary>
    private static int TakeError(ref int error)
    {
        int e = error;
        error = 0;
        return e;
    }
}
