using System.Security.Cryptography;
using Onload.Stack;
using Onload.Stack.Tcp;
using Onload.Stack.Wire;
using Onload.Vnic;
using Onload.Vnic.Sim;

namespace Onload.Tests.Sim;

/// <summary>
/// Stands for onload-driverd: hands out ports (ephemeral ones from 40000), refuses what it is told to, and
/// answers neighbour resolutions from a table through <see cref="ApplyEvents"/>, as the daemon's events would.
/// Fails the test on a port given back twice or never reserved.
/// </summary>
internal sealed class FakeStackControl : IStackControl
{
    private readonly Queue<Action<NetStack>> _events = new();
    private ushort _nextEphemeral = 40000;

    public HashSet<(byte Protocol, ushort Port)> Held { get; } = [];
    public List<(byte Protocol, ushort Port)> Reserved { get; } = [];
    public List<(byte Protocol, ushort Port)> Released { get; } = [];
    public List<Ipv4Address> Resolves { get; } = [];
    /// <summary>The MACs the "kernel" knows; a resolution of anything else is never answered.</summary>
    public Dictionary<Ipv4Address, MacAddress> Neighbours { get; } = [];
    /// <summary>Explicit ports refused with EADDRINUSE.</summary>
    public HashSet<ushort> Refused { get; } = [];
    /// <summary>A negated errno for ephemeral requests, 0 to grant them.</summary>
    public int EphemeralError { get; set; }

    public int ReservePort(byte protocol, ref ushort port)
    {
        if (port == 0)
        {
            if (EphemeralError != 0)
                return EphemeralError;
            port = _nextEphemeral++;
        }
        else if (Refused.Contains(port) || Held.Contains((protocol, port)))
            return -(int)Errno.EADDRINUSE;
        Held.Add((protocol, port));
        Reserved.Add((protocol, port));
        return 0;
    }

    public void ReleasePort(byte protocol, ushort port)
    {
        Assert.That(Held.Remove((protocol, port)), Is.True, $"released {protocol}/{port}, which is not reserved");
        Released.Add((protocol, port));
    }

    /// <summary>The kernel's memberships, per port's kernel socket: a second join of one is EADDRINUSE, as
    /// ip_mc_join_group says.</summary>
    public List<(ushort Port, Ipv4Address Group)> Joined { get; } = [];

    public int JoinGroup(ushort localPort, Ipv4Address group)
    {
        if (Joined.Contains((localPort, group)))
            return -(int)Errno.EADDRINUSE;
        Joined.Add((localPort, group));
        return 0;
    }

    public void LeaveGroup(ushort localPort, Ipv4Address group) =>
        Assert.That(Joined.Remove((localPort, group)), Is.True, $"left {group} on port {localPort}, which is not joined");

    public void ResolveNeighbour(uint address)
    {
        var a = new Ipv4Address(address);
        Resolves.Add(a);
        if (Neighbours.TryGetValue(a, out var mac))
            _events.Enqueue(stack => stack.SetNeighbour(a, mac));
    }

    public bool EventsPending(long nowNs) => _events.Count > 0;

    public void ApplyEvents(NetStack stack)
    {
        while (_events.TryDequeue(out var e))
            e(stack);
    }
}

/// <summary>Counts every call the stack makes on its VNIC.</summary>
internal sealed class CountingVnic(IVnic inner) : IVnic
{
    public long Receives;
    public long Transmits;

    public string Spec => inner.Spec;
    public MacAddress MacAddress => inner.MacAddress;
    public int Mtu => inner.Mtu;
    public BufferPool Buffers => inner.Buffers;
    public VnicCounters Counters => inner.Counters;
    public int WaitHandle => inner.WaitHandle;

    public int Receive(Span<PacketDescriptor> batch)
    {
        Receives++;
        return inner.Receive(batch);
    }

    public int Transmit(ReadOnlySpan<PacketDescriptor> batch)
    {
        Transmits++;
        return inner.Transmit(batch);
    }

    public void Dispose() { } // the link disposes the real VNIC
}

/// <summary>Two stacks in driverlink mode over a <see cref="SimLink"/>, each with its own fake daemon; by default
/// each daemon knows the other stack's MAC, as the kernel would after its own ARP.</summary>
internal sealed class DriverlinkPair : IDisposable
{
    public DriverlinkPair(ulong seed, LinkFaults? aToB = null, bool directB = false, bool answerA = true)
    {
        Clock = new VirtualClock();
        Link = new SimLink(seed, Clock, aToB);
        VnicA = new CountingVnic(Link.A);
        if (answerA)
            ControlA.Neighbours[SimPair.AddressB.Address] = Link.B.MacAddress;
        ControlB.Neighbours[SimPair.AddressA.Address] = Link.A.MacAddress;
        A = new NetStack(VnicA, new StackOptions { Address = SimPair.AddressA, Control = ControlA }, Clock, new SeededRandom(seed ^ 0xA));
        B = new NetStack(Link.B, new StackOptions { Address = SimPair.AddressB, Control = directB ? null : ControlB }, Clock,
            new SeededRandom(seed ^ 0xB));
    }

    public VirtualClock Clock { get; }
    public SimLink Link { get; }
    public CountingVnic VnicA { get; }
    public FakeStackControl ControlA { get; } = new();
    public FakeStackControl ControlB { get; } = new();
    public NetStack A { get; }
    public NetStack B { get; }

    /// <summary>As <see cref="SimPair.RunFor"/>, and while A is suspended, without waking for frames towards it.</summary>
    public void RunFor(long nanoseconds)
    {
        long end = Clock.NowNanoseconds + nanoseconds;
        while (true)
        {
            int work = A.Poll() + B.Poll();
            if (work > 0)
                continue;
            // Frames towards a suspended A wait on the wire until it receives again: no event to wake for.
            long link = A.Suspended ? Link.A.Wire.NextDelivery : Link.NextDelivery;
            long next = Math.Min(link, Math.Min(A.NextTimerNs, B.NextTimerNs));
            if (next > end)
                break;
            Clock.AdvanceTo(Math.Max(next, Clock.NowNanoseconds + 1));
        }
        Clock.AdvanceTo(end);
        A.Poll();
        B.Poll();
    }

    /// <summary>A connects to B's listener on <paramref name="port"/>; returns (listener, client, accepted).</summary>
    public (int Listener, int Client, int Server) Connect(ushort port = 80)
    {
        int l = B.TcpOpen();
        Assert.That(B.TcpBind(l, new(Ipv4Address.Any, port)), Is.Zero);
        Assert.That(B.TcpListen(l, 16), Is.Zero);
        int c = A.TcpOpen();
        Assert.That(A.TcpConnect(c, new(SimPair.AddressB.Address, port)), Is.EqualTo(-(int)Errno.EINPROGRESS));
        int s = -1;
        for (int i = 0; i < 10_000 && (s < 0 || !A.TcpIsConnected(c)); i++)
        {
            RunFor(1_000_000);
            if (s < 0)
                s = B.TcpAccept(l, out _);
        }
        Assert.That(A.TcpIsConnected(c), Is.True, "handshake");
        Assert.That(s, Is.GreaterThanOrEqualTo(0), "accepted");
        return (l, c, s);
    }

    /// <summary>Sends <paramref name="data"/> from A to B, shuts A's side, reads to EOF; <paramref name="step"/>
    /// runs after every 100 µs of virtual time with the bytes received so far.</summary>
    public byte[] Transfer(int client, int server, byte[] data, Action<long>? step = null, long deadlineNs = 600_000_000_000)
    {
        var received = new MemoryStream();
        var buf = new byte[65536];
        int sent = 0;
        bool shut = false;
        long end = Clock.NowNanoseconds + deadlineNs;
        while (Clock.NowNanoseconds < end)
        {
            if (sent < data.Length)
            {
                int n = A.TcpSend(client, data.AsSpan(sent));
                if (n > 0)
                    sent += n;
                else
                    Assert.That(n, Is.EqualTo(-(int)Errno.EAGAIN), "send");
            }
            else if (!shut)
            {
                Assert.That(A.TcpShutdown(client, read: false, write: true), Is.Zero);
                shut = true;
            }
            RunFor(100_000);
            int r;
            while ((r = B.TcpReceive(server, buf)) > 0)
                received.Write(buf, 0, r);
            if (r == 0)
                return received.ToArray();
            Assert.That(r, Is.EqualTo(-(int)Errno.EAGAIN), "receive");
            step?.Invoke(received.Length);
        }
        Assert.Fail($"transfer did not finish: sent {sent} of {data.Length}, received {received.Length}; " +
            $"sender {StackDump.Connection(A, client)}; {StackDump.TcpCounters(A)}");
        return [];
    }

    public void Dispose()
    {
        A.Dispose();
        B.Dispose();
        Link.Dispose();
    }
}

/// <summary>
/// A stack in driverlink mode: ports come from and go back to the control plane, neighbours are resolved through
/// it and never by ARP, and the link's MTU, state and suspension are what the control plane says.
/// </summary>
[TestFixture]
public class SimDriverlinkTests
{
    private const long Ms = 1_000_000;
    private const byte Tcp = IpProtocol.Tcp;
    private const byte Udp = IpProtocol.Udp;

    [Test]
    public void Every_way_of_taking_a_port_reserves_it_and_ephemeral_ports_come_from_the_control_plane()
    {
        using var pair = new DriverlinkPair(seed: 60);
        var a = pair.A;
        var ctl = pair.ControlA;
        var peer = new Ipv4Endpoint(SimPair.AddressB.Address, 9);

        int bound = a.TcpOpen();
        Assert.That(a.TcpBind(bound, new(Ipv4Address.Any, 5000)), Is.Zero);
        int bound0 = a.TcpOpen();
        Assert.That(a.TcpBind(bound0, new(Ipv4Address.Any, 0)), Is.Zero);
        int listener = a.TcpOpen();
        Assert.That(a.TcpListen(listener, 4), Is.Zero);
        int client = a.TcpOpen();
        Assert.That(a.TcpConnect(client, peer), Is.EqualTo(-(int)Errno.EINPROGRESS));
        int udpBound = a.UdpOpen();
        Assert.That(a.UdpBind(udpBound, new(Ipv4Address.Any, 0)), Is.Zero);
        int udpConnected = a.UdpOpen();
        Assert.That(a.UdpConnect(udpConnected, peer), Is.Zero);
        int udpSender = a.UdpOpen();
        Assert.That(a.UdpSendTo(udpSender, "x"u8, peer), Is.EqualTo(1));

        Assert.That(ctl.Reserved, Is.EqualTo(new[]
        {
            (Tcp, (ushort)5000), (Tcp, (ushort)40000), (Tcp, (ushort)40001), (Tcp, (ushort)40002),
            (Udp, (ushort)40003), (Udp, (ushort)40004), (Udp, (ushort)40005),
        }));
        Assert.That(a.TcpLocalEndpoint(bound0).Port, Is.EqualTo(40000));
        Assert.That(a.TcpLocalEndpoint(listener).Port, Is.EqualTo(40001));
        Assert.That(a.TcpLocalEndpoint(client).Port, Is.EqualTo(40002));
        Assert.That(a.UdpLocalEndpoint(udpSender).Port, Is.EqualTo(40005));

        foreach (int s in new[] { udpBound, udpConnected, udpSender })
            Assert.That(a.UdpClose(s), Is.Zero);
        foreach (int c in new[] { bound, bound0, listener, client })
            Assert.That(a.TcpClose(c), Is.Zero);
        Assert.That(ctl.Released, Is.EquivalentTo(ctl.Reserved), "each reservation given back once");
        Assert.That(ctl.Held, Is.Empty);
    }

    [Test]
    public void A_refused_reservation_is_the_calls_result_and_leaves_nothing_bound()
    {
        using var pair = new DriverlinkPair(seed: 61);
        var a = pair.A;
        var ctl = pair.ControlA;
        ctl.Refused.Add(6000);

        int t = a.TcpOpen();
        Assert.That(a.TcpBind(t, new(Ipv4Address.Any, 6000)), Is.EqualTo(-(int)Errno.EADDRINUSE));
        Assert.That(a.TcpLocalEndpoint(t).Port, Is.Zero, "not bound");
        Assert.That(a.TcpBind(t, new(Ipv4Address.Any, 6001)), Is.Zero, "a later bind still works");
        int u = a.UdpOpen();
        Assert.That(a.UdpBind(u, new(Ipv4Address.Any, 6000)), Is.EqualTo(-(int)Errno.EADDRINUSE));
        Assert.That(a.UdpLocalEndpoint(u).Port, Is.Zero, "not bound");

        // The kernel out of ephemeral ports: connect, listen and sendto fail with what it said, and send nothing.
        ctl.EphemeralError = -(int)Errno.EAGAIN;
        long sent = a.Counters.TxFrames;
        int c = a.TcpOpen();
        Assert.That(a.TcpConnect(c, new(SimPair.AddressB.Address, 80)), Is.EqualTo(-(int)Errno.EAGAIN));
        Assert.That(a.TcpStateOf(c), Is.EqualTo(TcpState.Closed));
        int l = a.TcpOpen();
        Assert.That(a.TcpListen(l, 4), Is.EqualTo(-(int)Errno.EAGAIN));
        Assert.That(a.TcpStateOf(l), Is.EqualTo(TcpState.Closed));
        Assert.That(a.UdpSendTo(u, "x"u8, new(SimPair.AddressB.Address, 9)), Is.EqualTo(-(int)Errno.EAGAIN));
        Assert.That(a.Counters.TxFrames, Is.EqualTo(sent));

        ctl.EphemeralError = 0;
        Assert.That(a.TcpConnect(c, new(SimPair.AddressB.Address, 80)), Is.EqualTo(-(int)Errno.EINPROGRESS), "it works once the kernel has ports");
        foreach (int s in new[] { t, c, l })
            a.TcpClose(s);
        a.UdpClose(u);
        Assert.That(ctl.Reserved, Is.EqualTo(new[] { (Tcp, (ushort)6001), (Tcp, (ushort)40000) }));
        Assert.That(ctl.Released, Is.EquivalentTo(ctl.Reserved));
        Assert.That(ctl.Held, Is.Empty);
    }

    [Test]
    public void Tcp_ports_go_back_after_time_wait_and_accepted_connections_never_reserve()
    {
        using var pair = new DriverlinkPair(seed: 62);
        var (l, c, s) = pair.Connect(80);
        Assert.That(pair.ControlA.Reserved, Is.EqualTo(new[] { (Tcp, (ushort)40000) }));
        Assert.That(pair.ControlB.Reserved, Is.EqualTo(new[] { (Tcp, (ushort)80) }), "the accepted connection shares the listener's");
        var data = TestData.Random(62, 100_000);
        Assert.That(SHA256.HashData(pair.Transfer(c, s, data)), Is.EqualTo(SHA256.HashData(data)));

        // The listener goes first: the port stays with the connection accepted on it, as Linux's child keeps the
        // listener's bind bucket.
        Assert.That(pair.B.TcpClose(l), Is.Zero);
        Assert.That(pair.ControlB.Released, Is.Empty, "the accepted connection still uses port 80");
        Assert.That(pair.A.TcpClose(c), Is.Zero);
        Assert.That(pair.B.TcpClose(s), Is.Zero);
        pair.RunFor(100 * Ms);
        Assert.That(pair.A.TcpStateOf(c), Is.EqualTo(TcpState.TimeWait));
        Assert.That(pair.ControlB.Released, Is.EqualTo(new[] { (Tcp, (ushort)80) }), "the last user of port 80 is gone");
        Assert.That(pair.ControlA.Released, Is.Empty, "Linux keeps the port through TIME_WAIT");

        pair.RunFor(61_000 * Ms);
        Assert.That(pair.A.TcpConnections.Open, Is.Zero, "TIME_WAIT ended");
        Assert.That(pair.ControlA.Released, Is.EqualTo(new[] { (Tcp, (ushort)40000) }));
        Assert.That(pair.ControlA.Held, Is.Empty);
        Assert.That(pair.ControlB.Held, Is.Empty);
    }

    [Test]
    public void Rebinding_a_listeners_port_while_its_accepted_connection_lives_reuses_the_reservation()
    {
        using var pair = new DriverlinkPair(seed: 63);
        var (l, c, s) = pair.Connect(80);
        Assert.That(pair.B.TcpClose(l), Is.Zero);
        int again = pair.B.TcpOpen();
        Assert.That(pair.B.TcpBind(again, new(Ipv4Address.Any, 80)), Is.Zero);
        Assert.That(pair.B.TcpListen(again, 4), Is.Zero);
        Assert.That(pair.ControlB.Reserved, Has.Count.EqualTo(1), "the reservation still held passes to the new listener");
        pair.A.TcpClose(c); // A closes first, so B's connection ends without TIME_WAIT
        pair.RunFor(100 * Ms);
        pair.B.TcpClose(s);
        pair.RunFor(100 * Ms);
        Assert.That(pair.B.TcpConnections.Open, Is.EqualTo(1), "only the new listener is left");
        Assert.That(pair.ControlB.Released, Is.Empty, "the new listener holds port 80");
        pair.B.TcpClose(again);
        Assert.That(pair.ControlB.Released, Is.EqualTo(new[] { (Tcp, (ushort)80) }));
    }

    [Test]
    public void Disposing_the_stack_gives_back_every_port_it_holds()
    {
        var pair = new DriverlinkPair(seed: 64);
        var (_, c, _) = pair.Connect(80);
        pair.A.TcpClose(c);
        pair.RunFor(100 * Ms); // A in TIME_WAIT, B's accepted connection in LAST_ACK or gone
        int u = pair.A.UdpOpen();
        pair.A.UdpBind(u, new(Ipv4Address.Any, 53));
        pair.Dispose();
        Assert.That(pair.ControlA.Held, Is.Empty);
        Assert.That(pair.ControlB.Held, Is.Empty);
    }

    private static bool IsArp(ReadOnlySpan<byte> frame) => frame.Length >= 14 && frame[12] == 0x08 && frame[13] == 0x06;

    [Test]
    public void No_arp_frame_is_sent_and_a_connect_completes_once_the_control_plane_gives_the_mac()
    {
        using var pair = new DriverlinkPair(seed: 65, answerA: false);
        int arpFrames = 0;
        pair.A.Trace = (tx, frame) => arpFrames += tx && IsArp(frame) ? 1 : 0;
        pair.B.Trace = (tx, frame) => arpFrames += tx && IsArp(frame) ? 1 : 0;
        int l = pair.B.TcpOpen();
        pair.B.TcpBind(l, new(Ipv4Address.Any, 80));
        pair.B.TcpListen(l, 4);
        int c = pair.A.TcpOpen();
        Assert.That(pair.A.TcpConnect(c, new(SimPair.AddressB.Address, 80)), Is.EqualTo(-(int)Errno.EINPROGRESS));
        pair.RunFor(500 * Ms);
        Assert.That(pair.ControlA.Resolves, Is.EqualTo(new[] { SimPair.AddressB.Address }));
        Assert.That(pair.A.TcpIsConnected(c), Is.False, "the SYN waits for the MAC");

        pair.A.SetNeighbour(SimPair.AddressB.Address, pair.Link.B.MacAddress);
        pair.RunFor(100 * Ms);
        Assert.That(pair.A.TcpIsConnected(c), Is.True);
        Assert.That(pair.B.TcpAccept(l, out _), Is.GreaterThanOrEqualTo(0));
        Assert.That(arpFrames, Is.Zero);
        Assert.That(pair.A.Counters.ArpOutRequests + pair.B.Counters.ArpOutRequests + pair.A.Counters.ArpOutReplies +
            pair.B.Counters.ArpOutReplies, Is.Zero);
        Assert.That(pair.A.Counters.ArpOutControlResolves, Is.EqualTo(1));
        Assert.That(pair.B.Counters.ArpOutControlResolves, Is.EqualTo(1), "B asked its daemon for A's MAC");
    }

    [Test]
    public void Arp_frames_that_reach_a_driverlink_stack_are_dropped_unanswered()
    {
        // B in direct mode asks for A's MAC by ARP: A, whose address the kernel owns, does not answer.
        using var pair = new DriverlinkPair(seed: 66, directB: true);
        int u = pair.B.UdpOpen();
        pair.B.UdpSendTo(u, "x"u8, new(SimPair.AddressA.Address, 9));
        pair.RunFor(10 * Ms);
        Assert.That(pair.A.Counters.Drop(DropReason.ArpInDriverlinkMode), Is.EqualTo(2), "B's gratuitous ARP and its request");
        Assert.That(pair.A.Counters.ArpOutReplies, Is.Zero);
    }

    [TestCase(true)]
    [TestCase(false)]
    public void An_unresolved_neighbour_fails_the_connect_with_EHOSTUNREACH(bool driverlink)
    {
        // Linux reports a failed resolution to the socket as a host unreachable (ipv4_link_failure), which ends
        // a connect in SYN-SENT; the same give-up timing in both modes: three requests a second apart.
        using var sim = new SimPair(seed: 67, tweak: o => driverlink ? o with { Control = new FakeStackControl() } : o);
        var a = sim.A;
        int c = a.TcpOpen();
        Assert.That(a.TcpConnect(c, new(Ipv4Address.Parse("10.1.0.77"), 80)), Is.EqualTo(-(int)Errno.EINPROGRESS));
        sim.RunFor(2_900 * Ms);
        Assert.That(a.TcpStateOf(c), Is.EqualTo(TcpState.SynSent));
        sim.RunFor(200 * Ms);
        Assert.That(a.TcpStateOf(c), Is.EqualTo(TcpState.Closed));
        Assert.That(a.TcpTakeError(c), Is.EqualTo((int)Errno.EHOSTUNREACH));
        if (driverlink)
            Assert.That(a.Counters.ArpOutControlResolves, Is.EqualTo(3));
        else
            Assert.That(a.Counters.ArpOutRequests, Is.EqualTo(1 + 3), "one gratuitous, three to resolve");
        Assert.That(a.Neighbours.Count, Is.Zero);
        Assert.That(a.TcpClose(c), Is.Zero);
    }

    [TestCase(0.0)]
    [TestCase(0.05)]
    public void SetMtu_lowers_the_frames_of_an_established_connection_and_every_byte_arrives(double loss)
    {
        // A 500 µs link keeps full-size segments in flight when the MTU falls; with loss some of them are
        // retransmitted after the change: in pieces that fit.
        var faults = new LinkFaults { Loss = loss, MinDelayNs = 500_000, MaxDelayNs = 500_000 };
        using var pair = new DriverlinkPair(seed: 68, faults);
        var (_, c, s) = pair.Connect();
        const int Mtu = 1000;
        bool lowered = false;
        int largeBefore = 0, tooLarge = 0, afterward = 0;
        pair.A.Trace = (tx, frame) =>
        {
            if (!tx)
                return;
            if (!lowered)
                largeBefore += frame.Length > Mtu + 14 ? 1 : 0;
            else
            {
                afterward++;
                tooLarge += frame.Length > Mtu + 14 ? 1 : 0;
            }
        };
        var data = TestData.Random(68, 1_000_000);
        var got = pair.Transfer(c, s, data, received =>
        {
            if (!lowered && received > 200_000)
            {
                pair.A.SetMtu(Mtu);
                pair.B.SetMtu(Mtu);
                lowered = true;
            }
        });
        Assert.That(SHA256.HashData(got), Is.EqualTo(SHA256.HashData(data)));
        Assert.That(lowered, Is.True);
        Assert.That(largeBefore, Is.GreaterThan(0), "full-size frames before");
        Assert.That(afterward, Is.GreaterThan(500));
        Assert.That(tooLarge, Is.Zero, "no frame over the new MTU");
        Assert.That(pair.A.Mtu, Is.EqualTo(Mtu));
        Assert.That(pair.A.TcpConnections[c].SndMss, Is.LessThanOrEqualTo(Mtu - 40));
        if (loss > 0)
            Assert.That(pair.A.Counters.TcpRetransSegs, Is.GreaterThan(0));
    }

    [Test]
    public void SetMtu_applies_to_new_connections_and_fragments_udp_that_no_longer_fits()
    {
        using var pair = new DriverlinkPair(seed: 69);
        pair.A.SetMtu(600);
        pair.B.SetMtu(600);
        int maxFrame = 0;
        pair.A.Trace = (tx, frame) => maxFrame = tx ? Math.Max(maxFrame, frame.Length) : maxFrame;
        var (_, c, s) = pair.Connect();
        Assert.That(pair.B.TcpConnections[s].PeerMss, Is.EqualTo(600 - 40), "the SYN offers an MSS that fits");
        var data = TestData.Random(69, 50_000);
        Assert.That(SHA256.HashData(pair.Transfer(c, s, data)), Is.EqualTo(SHA256.HashData(data)));

        int ua = pair.A.UdpOpen(), ub = pair.B.UdpOpen();
        pair.B.UdpBind(ub, new(Ipv4Address.Any, 7));
        var datagram = TestData.Random(70, 1400);
        Assert.That(pair.A.UdpSendTo(ua, datagram, new(SimPair.AddressB.Address, 7)), Is.EqualTo(1400));
        pair.RunFor(10 * Ms);
        var buf = new byte[2000];
        Assert.That(pair.B.UdpReceiveFrom(ub, buf, out _), Is.EqualTo(1400));
        Assert.That(buf.AsSpan(0, 1400).SequenceEqual(datagram), Is.True);
        Assert.That(pair.A.Counters.IpFragOKs, Is.EqualTo(1));
        Assert.That(maxFrame, Is.LessThanOrEqualTo(600 + 14));
    }

    [Test]
    public void SetMtu_is_bounded_by_ipv4_below_and_by_the_vnic_buffers_above()
    {
        using var pair = new DriverlinkPair(seed: 70);
        Assert.Throws<ArgumentOutOfRangeException>(() => pair.A.SetMtu(67));
        pair.A.SetMtu(68);
        Assert.That(pair.A.Mtu, Is.EqualTo(68));
        pair.A.SetMtu(1_000_000);
        Assert.That(pair.A.Mtu, Is.EqualTo(pair.A.Vnic.Buffers.BufferSize - 14));
    }

    [Test]
    public void While_the_link_is_down_frames_are_dropped_and_tcp_recovers_once_it_is_up()
    {
        using var pair = new DriverlinkPair(seed: 71);
        var (_, c, s) = pair.Connect();
        bool down = false;
        long downAt = 0;
        var data = TestData.Random(71, 500_000);
        var got = pair.Transfer(c, s, data, received =>
        {
            if (!down && received > 100_000 && downAt == 0)
            {
                pair.A.SetLinkUp(false);
                down = true;
                downAt = pair.Clock.NowNanoseconds;
            }
            else if (down && pair.Clock.NowNanoseconds - downAt > 2_000 * Ms)
            {
                pair.A.SetLinkUp(true);
                down = false;
            }
        });
        Assert.That(SHA256.HashData(got), Is.EqualTo(SHA256.HashData(data)));
        Assert.That(pair.A.LinkUp, Is.True);
        Assert.That(pair.A.Counters.Drop(DropReason.TxLinkDown), Is.GreaterThan(0));
        Assert.That(pair.A.Counters.Snapshot().Any(kv => kv.Key == "Drop.TxLinkDown"), Is.True);
    }

    [Test]
    public void While_suspended_the_vnic_is_never_touched_and_a_transfer_spanning_it_completes()
    {
        // A 100 µs link, so that the transfer takes many round trips and both suspensions fall inside it.
        using var pair = new DriverlinkPair(seed: 72, new LinkFaults { MinDelayNs = 100_000, MaxDelayNs = 100_000 });
        var (_, c, s) = pair.Connect();
        var vnic = pair.VnicA;
        long receives = 0, transmits = 0, suspendedAt = -1, resumedWith = 100_000;
        int suspensions = 0;
        var data = TestData.Random(72, 1_000_000);
        var got = pair.Transfer(c, s, data, received =>
        {
            if (pair.A.Suspended)
            {
                Assert.That(vnic.Receives, Is.EqualTo(receives), "Receive while suspended");
                Assert.That(vnic.Transmits, Is.EqualTo(transmits), "Transmit while suspended");
                if (pair.Clock.NowNanoseconds - suspendedAt > 3_000 * Ms)
                {
                    pair.A.Resume();
                    resumedWith = received;
                }
            }
            else if (suspensions < 2 && received > resumedWith && received < data.Length)
            {
                pair.A.Suspend();
                suspensions++;
                suspendedAt = pair.Clock.NowNanoseconds;
                receives = vnic.Receives;
                transmits = vnic.Transmits;
            }
        });
        Assert.That(SHA256.HashData(got), Is.EqualTo(SHA256.HashData(data)));
        Assert.That(suspensions, Is.EqualTo(2));
        Assert.That(pair.A.Suspended, Is.False);
        Assert.That(pair.A.Counters.TcpExtTCPTimeouts, Is.GreaterThan(0), "timers ran while suspended");
    }

    [Test]
    public void Control_events_are_applied_by_poll_on_the_stacks_thread()
    {
        using var pair = new DriverlinkPair(seed: 73);
        int u = pair.A.UdpOpen();
        pair.A.UdpSendTo(u, "x"u8, new(SimPair.AddressB.Address, 9));
        Assert.That(pair.A.Neighbours.PendingCount, Is.EqualTo(1), "waits for the daemon's answer");
        Assert.That(pair.ControlA.EventsPending(0), Is.True);
        pair.A.Poll();
        Assert.That(pair.ControlA.EventsPending(0), Is.False);
        Assert.That(pair.A.Neighbours.PendingCount, Is.Zero, "answered and sent in the same poll");
    }
}
