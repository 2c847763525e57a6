using System.Buffers.Binary;
using System.Net;
using Onload.Tests.Netns;
using Onload.Vnic;
using Onload.Vnic.Netlink;

namespace Onload.Tests.Netlink;

/// <summary>
/// The reader and the monitor against a real kernel: a namespace pair joined by a veth, changed with <c>ip</c>,
/// read over rtnetlink from inside the kernel side's namespace.
/// </summary>
[NonParallelizable]
public class RtnetlinkNamespaceTests
{
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(10);

    private static uint Ipv4(string text) => BinaryPrimitives.ReadUInt32BigEndian(IPAddress.Parse(text).GetAddressBytes());

    [SetUp]
    public void NeedRoot() => Netns.Netns.RequireRoot();

    [Test]
    public void A_dump_shows_the_veth_its_address_a_route_and_a_neighbour()
    {
        using var pair = new NamespacePair();
        var ns = pair.Kernel;
        ns.Ip($"link set {pair.KernelIf} mtu 1400");
        ns.Ip($"addr add 10.99.0.1/16 dev {pair.KernelIf}");
        ns.Ip($"route add 192.0.2.0/24 via {pair.StackAddress} dev {pair.KernelIf}");
        ns.Ip($"neigh add {pair.StackAddress} lladdr 02:00:00:00:00:42 dev {pair.KernelIf} nud permanent");

        var (links, addresses, routes, neighbours, counters) = ns.Run(() =>
        {
            using var socket = RtnetlinkSocket.Open();
            return (socket.DumpLinks(), socket.DumpAddresses(), socket.DumpRoutes(), socket.DumpNeighbours(), socket.Counters);
        });

        var veth = links.Single(l => l.Name == pair.KernelIf);
        Assert.Multiple(() =>
        {
            Assert.That(veth.Mtu, Is.EqualTo(1400));
            Assert.That(veth.Mac, Is.EqualTo(MacAddress.Parse(pair.KernelMac)));
            Assert.That(veth.IsUp, Is.True);
            Assert.That(links.Single(l => l.Name == "lo").IsUp, Is.True);

            Assert.That(addresses, Does.Contain(new Address(veth.Index, Ipv4(pair.KernelAddress), pair.PrefixLength)));
            Assert.That(addresses, Does.Contain(new Address(veth.Index, Ipv4("10.99.0.1"), 16)));

            Assert.That(routes.Any(r => r.Destination == Ipv4("192.0.2.0") && r.PrefixLength == 24
                && r.Gateway == Ipv4(pair.StackAddress) && r.InterfaceIndex == veth.Index), Is.True, string.Join("\n", routes));
            Assert.That(routes.All(r => r.Table == Route.MainTable), Is.True, "only the main table");
            // The kernel's own route to the veth's subnet, with no gateway.
            Assert.That(routes.Any(r => r.Destination == Ipv4(pair.Subnet) && r.PrefixLength == 24 && r.Gateway == 0), Is.True);

            Assert.That(neighbours, Does.Contain(new Neighbour(veth.Index, Ipv4(pair.StackAddress),
                MacAddress.Parse("02:00:00:00:00:42"), NeighbourState.Permanent)));
            Assert.That(counters.MalformedMessages, Is.Zero);
        });
    }

    [Test]
    public void The_monitor_reports_link_down_and_up_an_MTU_change_and_new_address_route_and_neighbour()
    {
        using var pair = new NamespacePair();
        var ns = pair.Kernel;
        using var monitor = ns.Run(() => RtnetlinkMonitor.Open());
        var events = new List<NetlinkEvent>();
        var veth = monitor.Links.Values.Single(l => l.Name == pair.KernelIf);

        ns.Ip($"link set {pair.KernelIf} down");
        WaitFor<LinkDown>(monitor, events, e => e.Link.Index == veth.Index, "link down");

        ns.Ip($"link set {pair.KernelIf} up");
        var up = WaitFor<LinkUp>(monitor, events, e => e.Link.Index == veth.Index, "link up");
        Assert.That(up.Link.CanCarry, Is.True);

        ns.Ip($"link set {pair.KernelIf} mtu 1300");
        var mtu = WaitFor<MtuChanged>(monitor, events, e => e.Link.Index == veth.Index, "MTU change");
        Assert.That((mtu.Link.Mtu, mtu.PreviousMtu), Is.EqualTo((1300, 1500)));

        ns.Ip($"addr add 10.99.0.1/16 dev {pair.KernelIf}");
        WaitFor<AddressAdded>(monitor, events, e => e.Address == new Address(veth.Index, Ipv4("10.99.0.1"), 16), "address added");

        ns.Ip($"route add 192.0.2.0/24 via {pair.StackAddress} dev {pair.KernelIf}");
        WaitFor<RouteAdded>(monitor, events, e => e.Route.Destination == Ipv4("192.0.2.0") && e.Route.Gateway == Ipv4(pair.StackAddress),
            "route added");

        ns.Ip($"neigh add {pair.StackAddress} lladdr 02:00:00:00:00:42 dev {pair.KernelIf} nud permanent");
        WaitFor<NeighbourChanged>(monitor, events, e => e.Neighbour.Ipv4 == Ipv4(pair.StackAddress)
            && e.Neighbour.Mac == MacAddress.Parse("02:00:00:00:00:42"), "neighbour added");

        ns.Ip($"addr del 10.99.0.1/16 dev {pair.KernelIf}");
        WaitFor<AddressRemoved>(monitor, events, e => e.Address.Ipv4 == Ipv4("10.99.0.1"), "address removed");

        Assert.That(events.OfType<ResyncNeeded>(), Is.Empty);
        Assert.That(monitor.Counters.MalformedMessages, Is.Zero);
    }

    [Test]
    public void A_monitor_that_falls_behind_is_told_to_resync()
    {
        using var pair = new NamespacePair();
        var ns = pair.Kernel;
        // The smallest receive queue the kernel allows: a burst of notifications overflows it.
        using var monitor = ns.Run(() => RtnetlinkMonitor.Open(receiveBufferBytes: 1));
        var script = string.Join('\n', Enumerable.Range(1, 200).Select(i => $"addr add 10.123.{i}.1/32 dev {pair.KernelIf}"));
        File.WriteAllText(Path.Combine(Path.GetTempPath(), $"netlink-burst-{pair.Instance}.txt"), script);
        try
        {
            ns.Ip($"-batch {Path.Combine(Path.GetTempPath(), $"netlink-burst-{pair.Instance}.txt")}");
        }
        finally
        {
            File.Delete(Path.Combine(Path.GetTempPath(), $"netlink-burst-{pair.Instance}.txt"));
        }

        var events = new List<NetlinkEvent>();
        WaitFor<ResyncNeeded>(monitor, events, _ => true, "resync after an overrun");
        Assert.That(monitor.Counters.Overruns, Is.Positive);
        // After the overrun the socket still works.
        ns.Ip($"link set {pair.KernelIf} mtu 1280");
        WaitFor<MtuChanged>(monitor, events, e => e.Link.Name == pair.KernelIf && e.Link.Mtu == 1280, "MTU change after the resync");
    }

    private static T WaitFor<T>(RtnetlinkMonitor monitor, List<NetlinkEvent> events, Func<T, bool> match, string what)
        where T : NetlinkEvent
    {
        T? found = null;
        Poll.Until(() =>
        {
            monitor.Poll(events);
            found = events.OfType<T>().FirstOrDefault(match);
            return found is not null;
        }, Deadline, what);
        return found!;
    }
}
