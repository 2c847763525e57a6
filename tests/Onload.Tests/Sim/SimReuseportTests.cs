using Onload.Stack;
using Onload.Stack.Tcp;
using Onload.Stack.Wire;
using Onload.Tests.Tcp;

namespace Onload.Tests.Sim;

/// <summary>
/// SO_REUSEADDR and SO_REUSEPORT on the stack over the simulated link, with Linux's rules: which binds share a port,
/// how an SO_REUSEPORT group shares connections and datagrams, what closing a member does, and when the port's
/// reservation (driverlink mode) goes back.
/// </summary>
[TestFixture]
public class SimReuseportTests
{
    private const long Ms = 1_000_000;
    private const ushort Port = 80;

    private static int Listener(NetStack stack, bool reusePort = true, bool reuseAddr = false)
    {
        int l = stack.TcpOpen();
        Assert.That(stack.TcpSetReusePort(l, reusePort), Is.Zero);
        Assert.That(stack.TcpSetReuseAddress(l, reuseAddr), Is.Zero);
        Assert.That(stack.TcpBind(l, new(Ipv4Address.Any, Port)), Is.Zero);
        Assert.That(stack.TcpListen(l, 64), Is.Zero);
        return l;
    }

    /// <summary>Opens <paramref name="count"/> connections from A to B's port, each from its own port, and waits
    /// for every handshake.</summary>
    private static int[] ConnectMany(SimPair pair, int count)
    {
        var clients = new int[count];
        for (int i = 0; i < count; i++)
        {
            clients[i] = pair.A.TcpOpen();
            Assert.That(pair.A.TcpConnect(clients[i], new(SimPair.AddressB.Address, Port)), Is.EqualTo(-(int)Errno.EINPROGRESS));
        }
        pair.RunFor(50 * Ms);
        Assert.That(clients.All(pair.A.TcpIsConnected), Is.True, "every handshake completed");
        return clients;
    }

    /// <summary>Every connection waiting on <paramref name="listener"/>, by the client's port.</summary>
    private static Dictionary<int, int> AcceptAll(NetStack stack, int listener)
    {
        var accepted = new Dictionary<int, int>();
        int c;
        while ((c = stack.TcpAccept(listener, out var remote)) >= 0)
            accepted.Add(remote.Port, c);
        Assert.That(c, Is.EqualTo(-(int)Errno.EAGAIN));
        return accepted;
    }

    [Test]
    public void A_reuseport_group_shares_its_port_and_each_connection_goes_whole_to_one_listener()
    {
        using var pair = new SimPair(seed: 70);
        int[] listeners = [Listener(pair.B), Listener(pair.B), Listener(pair.B)];
        int[] clients = ConnectMany(pair, 48);

        var byListener = listeners.Select(l => AcceptAll(pair.B, l)).ToList();
        Assert.That(byListener.Sum(a => a.Count), Is.EqualTo(48), "each connection accepted once");
        Assert.That(byListener.Count(a => a.Count > 0), Is.GreaterThanOrEqualTo(2), "the hash spread them");
        // Each connection's later segments reach the connection its SYN made: bytes sent arrive on the accepted socket.
        var buffer = new byte[16];
        foreach (int c in clients)
            Assert.That(pair.A.TcpSend(c, BitConverter.GetBytes((int)pair.A.TcpLocalEndpoint(c).Port)), Is.EqualTo(4));
        pair.RunFor(10 * Ms);
        foreach (var (port, accepted) in byListener.SelectMany(a => a))
        {
            Assert.That(pair.B.TcpReceive(accepted, buffer), Is.EqualTo(4));
            Assert.That(BitConverter.ToInt32(buffer), Is.EqualTo(port), "the bytes of the connection from that port");
        }
        Assert.That(pair.A.Counters.TcpEstabResets + pair.B.Counters.TcpEstabResets, Is.Zero);
    }

    [Test]
    public void Binds_beside_a_group_follow_linux_a_socket_without_the_option_is_refused_both_ways()
    {
        using var pair = new SimPair(seed: 71);
        var b = pair.B;
        int first = Listener(b);
        int plain = b.TcpOpen();
        Assert.That(b.TcpBind(plain, new(Ipv4Address.Any, Port)), Is.EqualTo(-(int)Errno.EADDRINUSE), "no SO_REUSEPORT");
        Assert.That(b.TcpSetReuseAddress(plain, true), Is.Zero);
        Assert.That(b.TcpBind(plain, new(Ipv4Address.Any, Port)), Is.EqualTo(-(int)Errno.EADDRINUSE),
            "SO_REUSEADDR does not share with a listener");
        Assert.That(b.TcpClose(first), Is.Zero);
        Assert.That(b.TcpBind(plain, new(Ipv4Address.Any, Port)), Is.Zero, "the port is free once the group is gone");
        int late = b.TcpOpen();
        Assert.That(b.TcpSetReusePort(late, true), Is.Zero);
        Assert.That(b.TcpBind(late, new(Ipv4Address.Any, Port)), Is.EqualTo(-(int)Errno.EADDRINUSE),
            "its holder did not set SO_REUSEPORT");
    }

    [Test]
    public void Reuseaddr_shares_a_port_among_sockets_not_listening_and_lets_only_one_listen()
    {
        using var pair = new SimPair(seed: 72);
        var b = pair.B;
        int x = b.TcpOpen(), y = b.TcpOpen();
        b.TcpSetReuseAddress(x, true);
        b.TcpSetReuseAddress(y, true);
        Assert.That(b.TcpBind(x, new(Ipv4Address.Any, Port)), Is.Zero);
        Assert.That(b.TcpBind(y, new(Ipv4Address.Any, Port)), Is.Zero);
        Assert.That(b.TcpListen(x, 4), Is.Zero);
        Assert.That(b.TcpListen(y, 4), Is.EqualTo(-(int)Errno.EADDRINUSE));
        Assert.That(b.TcpStateOf(y), Is.EqualTo(TcpState.Closed));
    }

    [Test]
    public void Closing_a_member_resets_its_unaccepted_connections_and_the_rest_of_the_group_takes_the_new_ones()
    {
        using var pair = new SimPair(seed: 73);
        int gone = Listener(pair.B), kept = Listener(pair.B);
        int[] before = ConnectMany(pair, 16);
        var keptBefore = AcceptAll(pair.B, kept);
        Assert.That(keptBefore, Has.Count.InRange(1, 15), "both members had some");

        Assert.That(pair.B.TcpClose(gone), Is.Zero);
        pair.RunFor(10 * Ms);
        foreach (int c in before)
        {
            bool wasKept = keptBefore.ContainsKey(pair.A.TcpLocalEndpoint(c).Port);
            Assert.That(pair.A.TcpTakeError(c), Is.EqualTo(wasKept ? 0 : (int)Errno.ECONNRESET),
                "the closed listener's connections were reset, the other's kept");
        }

        ConnectMany(pair, 16);
        Assert.That(AcceptAll(pair.B, kept), Has.Count.EqualTo(16), "every new connection went to the member left");
    }

    [Test]
    public void In_driverlink_mode_a_group_reserves_its_port_once_and_gives_it_back_with_its_last_member()
    {
        using var pair = new DriverlinkPair(seed: 74);
        var a = pair.A;
        int first = Listener(a), second = Listener(a);
        int u1 = a.UdpOpen(), u2 = a.UdpOpen();
        foreach (int u in (int[])[u1, u2])
        {
            Assert.That(a.UdpSetReusePort(u, true), Is.Zero);
            Assert.That(a.UdpBind(u, new(Ipv4Address.Any, Port)), Is.Zero);
        }
        Assert.That(pair.ControlA.Reserved, Is.EqualTo(new[] { (IpProtocol.Tcp, Port), (IpProtocol.Udp, Port) }));

        a.TcpClose(first);
        a.UdpClose(u1);
        Assert.That(pair.ControlA.Released, Is.Empty, "the other members hold the ports still");
        a.TcpClose(second);
        a.UdpClose(u2);
        Assert.That(pair.ControlA.Released, Is.EqualTo(new[] { (IpProtocol.Tcp, Port), (IpProtocol.Udp, Port) }));
    }

    [Test]
    public void In_driverlink_mode_members_of_a_udp_group_joining_one_multicast_group_join_the_ports_kernel_socket_once()
    {
        using var pair = new DriverlinkPair(seed: 76);
        var a = pair.A;
        var group = new Ipv4Address(0xEF01_0203); // 239.1.2.3
        int[] members = [a.UdpOpen(), a.UdpOpen()];
        foreach (int u in members)
        {
            Assert.That(a.UdpSetReusePort(u, true), Is.Zero);
            Assert.That(a.UdpBind(u, new(Ipv4Address.Any, Port)), Is.Zero);
            Assert.That(a.UdpJoinGroup(u, group), Is.Zero, "the kernel socket is joined already for the second");
        }
        Assert.That(pair.ControlA.Joined, Is.EqualTo(new[] { (Port, group) }));

        Assert.That(a.UdpLeaveGroup(members[0], group), Is.Zero);
        Assert.That(pair.ControlA.Joined, Has.Count.EqualTo(1), "the other member still wants the group's datagrams");
        a.UdpClose(members[1]);
        Assert.That(pair.ControlA.Joined, Is.Empty, "the last member's close left the group");
    }

    [Test]
    public void Unicast_datagrams_go_each_to_one_member_of_a_udp_group_and_broadcasts_to_every_member()
    {
        using var pair = new SimPair(seed: 75);
        var b = pair.B;
        int[] members = new int[3];
        for (int i = 0; i < members.Length; i++)
        {
            members[i] = b.UdpOpen();
            Assert.That(b.UdpSetReusePort(members[i], true), Is.Zero);
            Assert.That(b.UdpBind(members[i], new(Ipv4Address.Any, Port)), Is.Zero);
        }
        int plain = b.UdpOpen();
        Assert.That(b.UdpBind(plain, new(Ipv4Address.Any, Port)), Is.EqualTo(-(int)Errno.EADDRINUSE));

        // 40 flows, each from its own port, two datagrams each: a flow's datagrams meet one member.
        var senders = Enumerable.Range(0, 40).Select(_ => pair.A.UdpOpen()).ToArray();
        for (int round = 0; round < 2; round++)
        {
            foreach (int s in senders)
                Assert.That(pair.A.UdpSendTo(s, BitConverter.GetBytes(s), new(SimPair.AddressB.Address, Port)), Is.EqualTo(4));
            pair.RunFor(10 * Ms);
        }
        var flowsOf = members.Select(m => Drain(b, m)).ToList();
        Assert.That(flowsOf.SelectMany(f => f).Order(), Is.EqualTo(senders.SelectMany(s => (int[])[s, s]).Order()),
            "every datagram received once");
        Assert.That(flowsOf.Count(f => f.Count > 0), Is.GreaterThanOrEqualTo(2), "the hash spread the flows");
        foreach (var f in flowsOf)
            Assert.That(f.GroupBy(s => s).All(g => g.Count() == 2), Is.True, "both datagrams of a flow met the same member");

        int broadcaster = pair.A.UdpOpen();
        pair.A.UdpSetBroadcast(broadcaster, true);
        Assert.That(pair.A.UdpSendTo(broadcaster, BitConverter.GetBytes(-1), new(Ipv4Address.Broadcast, Port)), Is.EqualTo(4));
        pair.RunFor(10 * Ms);
        Assert.That(members.Select(m => Drain(b, m)), Is.All.EqualTo(new[] { -1 }), "a copy for every member");

        b.UdpClose(members[0]);
        b.UdpClose(members[1]);
        foreach (int s in senders)
            pair.A.UdpSendTo(s, BitConverter.GetBytes(s), new(SimPair.AddressB.Address, Port));
        pair.RunFor(10 * Ms);
        Assert.That(Drain(b, members[2]), Has.Count.EqualTo(senders.Length), "the member left takes every flow");
    }

    private static List<int> Drain(NetStack stack, int socket)
    {
        var got = new List<int>();
        var buffer = new byte[16];
        while (stack.UdpReceiveFrom(socket, buffer, out _) == 4)
            got.Add(BitConverter.ToInt32(buffer));
        return got;
    }
}
