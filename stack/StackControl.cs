namespace Onload.Stack;

/// <summary>
/// The control plane of a stack in driverlink mode (implemented by Onload.Driverlink's client; null in
/// <see cref="StackOptions.Control"/> = direct mode). In driverlink mode the kernel owns the interface's IPv4 address
/// and MAC and does ARP; onload-driverd steers to the stack's VNIC only the TCP and UDP ports reserved here.
/// </summary>
/// <remarks>The stack calls every member on its own thread; implementations must not call back into it except
/// from <see cref="ApplyEvents"/>, and must expect <see cref="ReleasePort"/> and <see cref="ResolveNeighbour"/>
/// from inside it (an event that ends a connection frees its port; one that forgets a neighbour may start
/// resolving it again).</remarks>
public interface IStackControl
{
    /// <summary>
    /// Reserves a local port for <paramref name="protocol"/> (6 = TCP, 17 = UDP) on the stack's address.
    /// <paramref name="port"/> 0 asks for an ephemeral port and is set to the one chosen. Returns 0 or a negated
    /// errno (EADDRINUSE, EADDRNOTAVAIL, EAGAIN, ENOBUFS...), which the socket call returns as its own.
    /// </summary>
    int ReservePort(byte protocol, ref ushort port);

    /// <summary>
    /// Gives back a port <see cref="ReservePort"/> reserved: the stack calls it once per successful ReservePort,
    /// when the port leaves the stack: the UDP socket is closed, or the TCP row that reserved it is freed (after
    /// TIME_WAIT ends, as Linux keeps the port through TIME_WAIT) and no connection accepted on it is left.
    /// </summary>
    void ReleasePort(byte protocol, ushort port);

    /// <summary>
    /// As <see cref="ReleasePort"/>, for a port that <see cref="ReservePort"/> chose (port 0) for connect()'s implicit
    /// bind and that only that connection used. The control plane may keep it reserved and steered, and hand it out
    /// again for a later port-0 <see cref="ReservePort"/>, as long as it gives it back for real within a bounded
    /// time: a connection per port reserved and released would otherwise cost the daemon two round trips.
    /// </summary>
    void ReleaseConnectPort(byte protocol, ushort port) => ReleasePort(protocol, port);

    /// <summary>
    /// Asks for the MAC of an on-link IPv4 address (<paramref name="address"/> in host byte order), where a stack
    /// in direct mode would send an ARP request. The answer arrives later through <see cref="NetStack.SetNeighbour"/>,
    /// or never: the stack's ARP retransmit and give-up timing then ends resolution as in direct mode, failing
    /// queued sends (a connect with EHOSTUNREACH).
    /// </summary>
    void ResolveNeighbour(uint address);

    /// <summary>True when <see cref="ApplyEvents"/> has work; asked on every <see cref="NetStack.Poll"/>, so it must
    /// be as cheap as a volatile read: <paramref name="nowNs"/> is the stack's clock as that poll read it, for work
    /// that falls due with time (no second clock read per poll).</summary>
    bool EventsPending(long nowNs);

    /// <summary>Applies waiting control events (neighbours, MTU, link state, suspend) to
    /// <paramref name="stack"/>, on the stack's own thread: <see cref="NetStack.Poll"/> calls it.</summary>
    void ApplyEvents(NetStack stack);

    /// <summary>
    /// Sends a UDP datagram from the stack's <paramref name="localPort"/> (reserved through <see cref="ReservePort"/>)
    /// to the host's own address, which only the kernel can deliver (its programs listen there): through the port's
    /// kernel socket. Returns the payload length or a negated errno; by default -ENETUNREACH, as a stack without
    /// loopback answers.
    /// </summary>
    int SendToKernel(ushort localPort, Wire.Ipv4Endpoint destination, ReadOnlySpan<byte> payload) => -(int)Errno.ENETUNREACH;

    /// <summary>
    /// Makes the host's kernel a member of <paramref name="group"/> for the bound UDP <paramref name="localPort"/>:
    /// in driverlink mode the kernel does IGMP, and the group's datagrams, which port filters do not steer (they
    /// match the host's address), reach the stack through the port's kernel socket. Returns 0 or a negated errno.
    /// </summary>
    int JoinGroup(ushort localPort, Wire.Ipv4Address group) => 0;

    /// <summary>
    /// Makes unconnected kernel TCP socket <paramref name="socketFd"/> the connection <paramref name="state"/>
    /// describes, with <paramref name="sent"/> (sent, not yet acknowledged) and <paramref name="unsent"/> queued to
    /// send and <paramref name="received"/> waiting to be read: the kernel carries the connection on from there
    /// (TCP_REPAIR, which onload-driverd does). Returns 0 or a negated errno; by default -EOPNOTSUPP.
    /// </summary>
    int HandOverTcp(in Tcp.TcpHandOverState state, int socketFd, ReadOnlySpan<byte> sent, ReadOnlySpan<byte> unsent,
        ReadOnlySpan<byte> received) => -(int)Errno.EOPNOTSUPP;

    /// <summary>Undoes <see cref="JoinGroup"/>.</summary>
    void LeaveGroup(ushort localPort, Wire.Ipv4Address group)
    {
    }
}
