using System.Diagnostics;
using Onload.Driverlink;
using Onload.Tests.Netns;
using Onload.Vnic;

namespace Onload.Tests.Driverlink;

/// <summary>onload-driverd on a real veth, spoken to over its socket as a client would, and as a broken or hostile
/// one would.</summary>
[Category("netns")]
[NonParallelizable]
public class DaemonTests
{
    private static readonly TimeSpan Deadline = DriverlinkPair.Deadline;

    [Test]
    public void Attach_gives_a_vnic_with_the_kernels_address_mac_and_mtu()
    {
        using var dl = new DriverlinkPair();
        dl.InHost(() =>
        {
            using var client = DriverlinkClient.Connect(dl.ClientOptions);
            Assert.That(client.DaemonHello.Role, Is.EqualTo(PeerRole.Daemon));
            var reply = client.Attach(new AttachRequest(dl.Interface, VnicMode.Exclusive, 0, 0, 0), out var fds);
            try
            {
                Assert.That(reply.Addresses.Select(a => Ipv4(a.Address)), Does.Contain(dl.HostAddress));
                Assert.That(reply.Mac.ToString(), Is.EqualTo(dl.Pair.StackIfMac));
                Assert.That(reply.Mtu, Is.EqualTo(1500));
                Assert.That(fds, Has.Length.EqualTo(1), "exclusive mode passes the queue's AF_XDP socket");
                Assert.That(SocketDomain(fds[0]), Is.EqualTo(Onload.Vnic.Native.LinuxConstants.AF_XDP), "an AF_XDP socket, not just any descriptor");
            }
            finally
            {
                foreach (int fd in fds)
                    BackingSocket.Release(fd);
            }
            client.Detach(reply.VnicId);
            return 0;
        });
        Poll.Until(() => dl.Daemon.Stderr.Contains("released", StringComparison.Ordinal), Deadline, "the daemon releasing the VNIC");
    }

    [Test]
    public void Attach_is_refused_whole_with_the_reason()
    {
        using var dl = new DriverlinkPair("--max-ring-size", "1024");
        dl.InHost(() =>
        {
            using var client = DriverlinkClient.Connect(dl.ClientOptions);
            var e = Assert.Throws<DriverlinkException>(() => client.Attach(new AttachRequest("lo", VnicMode.Shared, 0, 0, 0), out _));
            Assert.That(e!.Message, Does.Contain("NotAccelerated"));
            e = Assert.Throws<DriverlinkException>(() => client.Attach(new AttachRequest(dl.Interface, VnicMode.Exclusive, 2048, 512, 8192), out _));
            Assert.That(e!.Message, Does.Contain("NoResources").And.Contain("--max-ring-size"));
            var first = AttachExclusive(client, dl);
            e = Assert.Throws<DriverlinkException>(() => client.Attach(new AttachRequest(dl.Interface, VnicMode.Shared, 0, 0, 0), out _));
            Assert.That(e!.Message, Does.Contain("Busy").And.Contain("exclusively"));
            client.Detach(first.VnicId);
            return 0;
        });
    }

    [Test]
    public void Limits_come_from_the_config_file_and_a_request_beyond_them_is_refused_whole()
    {
        string config = Path.Combine(TestContext.CurrentContext.WorkDirectory, $"driverd-{Environment.ProcessId}.conf");
        File.WriteAllText(config, "# test limits\nmax-vnics = 1\nmax-filters = 2   # per VNIC\n");
        try
        {
            using var dl = new DriverlinkPair("--config", config);
            dl.InHost(() =>
            {
                using var client = DriverlinkClient.Connect(dl.ClientOptions);
                var vnic = AttachExclusive(client, dl);
                var e = Assert.Throws<DriverlinkException>(() => client.Attach(new AttachRequest(dl.Interface, VnicMode.Exclusive, 0, 0, 0), out _));
                Assert.That(e!.Message, Does.Contain("NoResources").And.Contain("--max-vnics"));
                // Two filters fit; the third is refused, and the first two still stand.
                uint host = Ipv4(dl.HostAddress);
                var held = new List<int>();
                try
                {
                    for (int i = 0; i < 3; i++)
                    {
                        ushort port = 0;
                        int fd = BackingSocket.Open(FilterProtocol.Udp, host, ref port);
                        held.Add(fd);
                        var status = client.InsertFilter(vnic.VnicId, new FilterSpec(FilterProtocol.Udp, host, port), fd);
                        Assert.That(status, Is.EqualTo(i < 2 ? FilterStatus.Ok : FilterStatus.TableFull), $"filter {i + 1}");
                    }
                }
                finally
                {
                    held.ForEach(BackingSocket.Release);
                }
                return 0;
            });
        }
        finally
        {
            File.Delete(config);
        }
    }

    [Test]
    public void Malformed_out_of_order_and_unauthorised_messages_are_refused_and_the_daemon_carries_on()
    {
        using var dl = new DriverlinkPair();
        dl.InHost(() =>
        {
            // Garbage, a message before Hello, an oversized one: each ends that connection, never the daemon.
            byte[][] abuses =
            [
                [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17],
                new AttachRequest(dl.Interface, VnicMode.Shared, 0, 0, 0) { RequestId = 1 }.ToArray(),
                new byte[MessageHeader.MaxMessageLength + 1000],
            ];
            foreach (var abuse in abuses)
            {
                using var raw = DriverlinkSocket.Connect(dl.SocketName);
                Assert.That(raw.Send(abuse), Is.EqualTo(0));
                var r = raw.Receive(new int[4], out _);
                Assert.That(r.Status, Is.EqualTo(ReceiveStatus.PeerClosed), "the daemon hangs up on a broken client");
            }
            // A client that says nothing at all is hung up on too, after a short while.
            using (var silent = DriverlinkSocket.Connect(dl.SocketName))
            {
                var clock = System.Diagnostics.Stopwatch.StartNew();
                Assert.That(silent.Receive(new int[4], out _).Status, Is.EqualTo(ReceiveStatus.PeerClosed));
                Assert.That(clock.Elapsed, Is.LessThan(TimeSpan.FromSeconds(10)), "dropped for saying no Hello");
            }
            // The log comes through a pipe the test reads asynchronously: wait for it rather than race it.
            Poll.Until(() => dl.Daemon.Stderr.Contains("malformed message", StringComparison.Ordinal) &&
                dl.Daemon.Stderr.Contains("before Hello", StringComparison.Ordinal), Deadline, "the daemon's log of the refusals");

            using var owner = DriverlinkClient.Connect(dl.ClientOptions);
            var vnic = owner.Attach(new AttachRequest(dl.Interface, VnicMode.Exclusive, 0, 0, 0), out var fds);
            foreach (int fd in fds)
                BackingSocket.Release(fd);
            uint host = Ipv4(dl.HostAddress);
            ushort port = 0;
            int mine = BackingSocket.Open(FilterProtocol.Udp, host, ref port);
            Assert.That(mine, Is.GreaterThanOrEqualTo(0));
            try
            {
                using var other = DriverlinkClient.Connect(dl.ClientOptions);
                Assert.That(other.InsertFilter(vnic.VnicId, new FilterSpec(FilterProtocol.Udp, host, port), mine),
                    Is.EqualTo(FilterStatus.NoSuchVnic), "another client's VNIC is not there for it");
                Assert.That(other.RemoveFilter(vnic.VnicId, new FilterSpec(FilterProtocol.Udp, host, port)), Is.EqualTo(FilterStatus.NoSuchVnic));
                ushort elsewhere = 0;
                int wrong = BackingSocket.Open(FilterProtocol.Udp, host, ref elsewhere);
                try
                {
                    Assert.That(owner.InsertFilter(vnic.VnicId, new FilterSpec(FilterProtocol.Udp, host, port), wrong),
                        Is.EqualTo(FilterStatus.NotOwner), "a socket bound to another port proves nothing");
                    Assert.That(owner.InsertFilter(vnic.VnicId, new FilterSpec(FilterProtocol.Tcp, host, port), mine),
                        Is.EqualTo(FilterStatus.NotOwner), "a UDP socket does not hold the TCP port");
                }
                finally
                {
                    BackingSocket.Release(wrong);
                }
            }
            finally
            {
                BackingSocket.Release(mine);
            }
            return 0;
        });
        Assert.That(dl.Daemon.HasExited, Is.False, dl.Daemon.Stderr);
    }

    [Test]
    public void A_client_that_never_reads_is_dropped_and_the_others_are_still_served()
    {
        using var dl = new DriverlinkPair();
        string batch = Path.Combine(TestContext.CurrentContext.WorkDirectory, $"neigh-{Environment.ProcessId}-{dl.Pair.Instance}.batch");
        try
        {
            dl.InHost(() =>
            {
                using var stalled = DriverlinkSocket.Connect(dl.SocketName);
                Assert.That(stalled.Send(new Hello(PeerRole.Client, "onload stalled") { RequestId = 1 }), Is.EqualTo(0));
                var fds = new int[4];
                Assert.That(stalled.Receive(fds, out _).Status, Is.EqualTo(ReceiveStatus.Ok));
                Assert.That(stalled.Send(new AttachRequest(dl.Interface, VnicMode.Exclusive, 0, 0, 0) { RequestId = 2 }), Is.EqualTo(0));
                // From here it reads nothing. Thousands of neighbour changes become as many events for its VNIC.
                File.WriteAllLines(batch, Enumerable.Range(0, 4000).Select(i =>
                    $"neigh replace 10.200.{i / 250}.{i % 250 + 1} lladdr 02:00:00:00:{i / 256:x2}:{i % 256:x2} dev {dl.Interface} nud permanent"));
                dl.Host.Ip($"-batch {batch}");
                Poll.Until(() => dl.Daemon.Stderr.Contains("does not read its messages", StringComparison.Ordinal), Deadline,
                    "the daemon dropping the client that does not read");
                var clock = System.Diagnostics.Stopwatch.StartNew();
                using var client = DriverlinkClient.Connect(dl.ClientOptions);
                AttachExclusive(client, dl);
                Assert.That(clock.Elapsed, Is.LessThan(TimeSpan.FromSeconds(5)), "another client is served meanwhile");
                return 0;
            });
        }
        finally
        {
            File.Delete(batch);
        }
    }

    [Test]
    public void A_udp_port_shared_with_SO_REUSEADDR_is_not_steered_to_a_client()
    {
        using var dl = new DriverlinkPair();
        // A kernel service holding its UDP port with SO_REUSEADDR, as avahi does on 5353.
        dl.Host.Start("socat", "-u", $"UDP-RECV:5353,bind={dl.HostAddress},reuseaddr", "STDOUT");
        Poll.Until(() => dl.Host.Exec("ss -uln").Contains(":5353", StringComparison.Ordinal), Deadline, "the kernel service bound");
        dl.InHost(() =>
        {
            using var client = DriverlinkClient.Connect(dl.ClientOptions);
            var vnic = AttachExclusive(client, dl);
            using var sharer = new System.Net.Sockets.Socket(System.Net.Sockets.AddressFamily.InterNetwork,
                System.Net.Sockets.SocketType.Dgram, System.Net.Sockets.ProtocolType.Udp);
            sharer.SetSocketOption(System.Net.Sockets.SocketOptionLevel.Socket, System.Net.Sockets.SocketOptionName.ReuseAddress, true);
            sharer.Bind(new System.Net.IPEndPoint(System.Net.IPAddress.Parse(dl.HostAddress), 5353));
            // Cleared after bind, so that getsockopt shows nothing: the daemon must still see the port is shared.
            sharer.SetSocketOption(System.Net.Sockets.SocketOptionLevel.Socket, System.Net.Sockets.SocketOptionName.ReuseAddress, false);
            var status = client.InsertFilter(vnic.VnicId, new FilterSpec(FilterProtocol.Udp, Ipv4(dl.HostAddress), 5353), (int)sharer.Handle);
            Assert.That(status, Is.EqualTo(FilterStatus.Conflict), "the kernel service keeps its datagrams");
            return 0;
        });
    }

    [Test]
    public void What_the_daemon_grants_after_the_client_stopped_waiting_is_given_back()
    {
        using var dl = new DriverlinkPair();
        dl.InHost(() =>
        {
            // A client that waits no time at all: the attach reply always comes after it gave up (or, rarely, just
            // as it looks: then try again).
            using var impatient = DriverlinkClient.Connect(dl.ClientOptions with { ReplyTimeout = TimeSpan.Zero });
            for (int attempt = 0; ; attempt++)
            {
                try
                {
                    var granted = impatient.Attach(new AttachRequest(dl.Interface, VnicMode.Exclusive, 0, 0, 0), out var fds);
                    foreach (int fd in fds)
                        BackingSocket.Release(fd);
                    impatient.Detach(granted.VnicId);
                    Assert.That(attempt, Is.LessThan(20), "the reply never came late");
                }
                catch (DriverlinkException e) when (e.Errno == 110)
                {
                    break; // ETIMEDOUT: the case under test
                }
            }
            // The late VNIC is detached again, so the queue is free for the next exclusive client.
            using var patient = DriverlinkClient.Connect(dl.ClientOptions);
            AttachReply? reply = null;
            Poll.Until(() =>
            {
                try
                {
                    reply = AttachExclusive(patient, dl);
                    return true;
                }
                catch (DriverlinkException e) when (e.Message.Contains("Busy", StringComparison.Ordinal))
                {
                    return false;
                }
            }, Deadline, "the late-granted exclusive VNIC given back");
            Assert.That(reply!.Status, Is.EqualTo(AttachStatus.Ok));
            return 0;
        });
    }

    [Test]
    public void An_incompatible_client_is_refused_with_both_versions_named()
    {
        using var dl = new DriverlinkPair();
        dl.InHost(() =>
        {
            using var raw = DriverlinkSocket.Connect(dl.SocketName);
            var future = new Hello(PeerRole.Client, "onload 9.0.0") { Version = new ProtocolVersion(2, 0), RequestId = 1 };
            Assert.That(raw.Send(future), Is.EqualTo(0));
            var r = raw.Receive(new int[4], out var message);
            Assert.That(r.Status, Is.EqualTo(ReceiveStatus.Ok));
            var daemon = (Hello)message!;
            Assert.That(Hello.Incompatibility(future, daemon), Does.Contain($"speaks protocol {ProtocolVersion.Current}").And.Contain("protocol 2.0"));
            Assert.That(raw.Receive(new int[4], out _).Status, Is.EqualTo(ReceiveStatus.PeerClosed));
            return 0;
        });
        Poll.Until(() => dl.Daemon.Stderr.Contains("incompatible protocol versions", StringComparison.Ordinal), Deadline,
            "the daemon's log of the refusal");
    }

    [Test]
    public void Ten_thousand_attach_detach_cycles_leave_the_daemon_no_bigger()
    {
        // The garbage collector lets the heap grow to its budget first: measured here, RSS rises for ~13,000 cycles
        // (to ~22 MB) and then stays flat. What must not happen is growth after that.
        const int Warmup = 15_000;
        using var dl = new DriverlinkPair();
        (long, int) before = default;
        dl.InHost(() =>
        {
            using var client = DriverlinkClient.Connect(dl.ClientOptions);
            for (int i = 0; i < Warmup + 10_000; i++)
            {
                if (i % 5000 == 0)
                    TestContext.Out.WriteLine($"after {i} cycles: {dl.DaemonFootprint()}");
                if (i == Warmup)
                    before = dl.DaemonFootprint();
                var reply = AttachExclusive(client, dl);
                client.Detach(reply.VnicId);
            }
            return 0;
        });
        // A descriptor may be open for a moment when sampled (the runtime reads /proc and cgroup files for its GC):
        // a leak is one that stays, so the count must come back down, and the ones that stay are named.
        var after = dl.DaemonFootprint();
        bool settled = Poll.TryUntil(() => (after = dl.DaemonFootprint()).Fds <= before.Item2, TimeSpan.FromSeconds(5));
        TestContext.Out.WriteLine($"daemon after {Warmup:N0} cycles: {before}; 10,000 later: {after} (RSS KiB, fds)");
        Assert.That(settled, Is.True, "no descriptor kept; open now: " + string.Join(", ", dl.DaemonDescriptors()));
        Assert.That(after.RssKiB - before.Item1, Is.LessThan(2048), "RSS grew by less than 2 MiB over 10,000 cycles once warm");
    }

    [Test]
    public void Link_down_up_mtu_and_address_changes_reach_the_client_as_events()
    {
        using var dl = new DriverlinkPair();
        dl.InHost(() =>
        {
            using var client = DriverlinkClient.Connect(dl.ClientOptions);
            var reply = AttachExclusive(client, dl);
            var seen = new List<Message>();
            Message Expect(Func<Message, bool> what, string description)
            {
                Message? found = null;
                Poll.Until(() =>
                {
                    while (client.TryTakeEvent(out var m))
                        seen.Add(m!);
                    found = seen.FirstOrDefault(what);
                    return found is not null;
                }, Deadline, description);
                seen.Remove(found!);
                return found!;
            }
            dl.Host.Ip($"link set {dl.Interface} down");
            Expect(m => m is LinkStateEvent { Up: false } l && l.VnicId == reply.VnicId, "a link-down event");
            dl.Host.Ip($"link set {dl.Interface} up");
            Expect(m => m is LinkStateEvent { Up: true }, "a link-up event");
            dl.Host.Ip($"link set {dl.Interface} mtu 1280");
            Expect(m => m is MtuChangedEvent { Mtu: 1280 }, "an MTU event");
            // The kernel gives up the address the VNIC's stack uses: the VNIC is removed rather than left broken.
            dl.Host.Ip($"addr del {dl.HostAddress}/{dl.Pair.PrefixLength} dev {dl.Interface}");
            Expect(m => m is RemoveEvent r && r.VnicId == reply.VnicId, "the VNIC removed with its address");
            return 0;
        });
    }

    /// <summary>The next event saying <paramref name="address"/> is reachable (others are passed over).</summary>
    private static NeighbourEvent ReachableEvent(DriverlinkClient client, string address, string description)
    {
        NeighbourEvent? answer = null;
        Poll.Until(() =>
        {
            while (answer is null && client.TryTakeEvent(out var m))
                if (m is NeighbourEvent { Reachable: true } n && n.Address == Ipv4(address))
                    answer = n;
            return answer is not null;
        }, Deadline, description);
        return answer!;
    }

    [Test]
    public void The_kernel_resolves_a_neighbour_for_the_client()
    {
        using var dl = new DriverlinkPair();
        dl.InHost(() =>
        {
            using var client = DriverlinkClient.Connect(dl.ClientOptions);
            var reply = AttachExclusive(client, dl);
            client.ResolveNeighbour(reply.VnicId, Ipv4(dl.PeerAddress));
            var answer = ReachableEvent(client, dl.PeerAddress, "the kernel's ARP answer as a neighbour event");
            Assert.That(answer.Mac.ToString(), Is.EqualTo(dl.Pair.KernelMac));
            return 0;
        });
    }

    /// <summary>
    /// A stack asks again whenever its own entry ages out, while the kernel's entry is still live and unchanged: the
    /// answer must come all the same (no kernel event follows a refresh that changes nothing; without the answer the
    /// stack could send nothing to that neighbour from then on).
    /// </summary>
    [Test]
    public void A_neighbour_asked_for_again_is_answered_while_the_kernel_entry_is_unchanged()
    {
        using var dl = new DriverlinkPair();
        dl.InHost(() =>
        {
            using var client = DriverlinkClient.Connect(dl.ClientOptions);
            var reply = AttachExclusive(client, dl);
            for (int ask = 1; ask <= 3; ask++)
            {
                client.ResolveNeighbour(reply.VnicId, Ipv4(dl.PeerAddress));
                var answer = ReachableEvent(client, dl.PeerAddress, $"an answer to request {ask}");
                Assert.That(answer.Mac.ToString(), Is.EqualTo(dl.Pair.KernelMac));
            }
            return 0;
        });
    }

    /// <summary>
    /// Under traffic the kernel moves a live neighbour entry between REACHABLE, STALE, DELAY and PROBE every few
    /// seconds, its MAC the same: the client hears only of changes to what a neighbour event says, the MAC and whether
    /// the neighbour is reachable.
    /// </summary>
    [Test]
    public void A_neighbour_event_is_sent_only_when_the_neighbours_mac_or_reachability_changes()
    {
        using var dl = new DriverlinkPair();
        var first = MacAddress.Parse("02:00:00:00:00:aa");
        var second = MacAddress.Parse("02:00:00:00:00:bb");
        dl.InHost(() =>
        {
            using var client = DriverlinkClient.Connect(dl.ClientOptions);
            AttachExclusive(client, dl);
            // The next event about the peer that satisfies `what`, passing over any other about it.
            NeighbourEvent Next(Func<NeighbourEvent, bool> what, string description)
            {
                NeighbourEvent? found = null;
                Poll.Until(() =>
                {
                    while (found is null && client.TryTakeEvent(out var m))
                        if (m is NeighbourEvent n && n.Address == Ipv4(dl.PeerAddress) && what(n))
                            found = n;
                    return found is not null;
                }, Deadline, description);
                return found!;
            }
            void SetEntry(string what) => dl.Host.Ip($"neigh replace {dl.PeerAddress} dev {dl.Interface} {what}");

            SetEntry($"lladdr {first} nud permanent");
            Next(n => n.Reachable && n.Mac == first, "the peer reachable at its first MAC");
            foreach (string state in new[] { "stale", "reachable", "noarp", "stale", "permanent" })
                SetEntry($"lladdr {first} nud {state}");
            SetEntry($"lladdr {second} nud permanent");
            // Events arrive in the kernel's order: had the daemon sent one for the state changes, it would come first.
            var next = Next(_ => true, "the next event about the peer");
            Assert.That((next.Mac, next.Reachable), Is.EqualTo((second, true)),
                "after five state changes with the same MAC, the next event is the new MAC's");
            dl.Host.Ip($"neigh del {dl.PeerAddress} dev {dl.Interface}");
            next = Next(_ => true, "the peer gone");
            Assert.That((next.Mac, next.Reachable), Is.EqualTo((MacAddress.Zero, false)));
            return 0;
        });
    }

    /// <summary>Attaches in exclusive mode and closes the AF_XDP socket that comes with it (these tests never bind it).</summary>
    private static AttachReply AttachExclusive(DriverlinkClient client, DriverlinkPair dl)
    {
        var reply = client.Attach(new AttachRequest(dl.Interface, VnicMode.Exclusive, 0, 0, 0), out var fds);
        foreach (int fd in fds)
            BackingSocket.Release(fd);
        return reply;
    }

    /// <summary>SO_DOMAIN of a socket descriptor; -errno if it is none.</summary>
    private static unsafe int SocketDomain(int fd)
    {
        int domain = 0;
        uint length = sizeof(int);
        return Onload.Vnic.Native.Libc.GetSockOpt(fd, Onload.Vnic.Native.LinuxConstants.SOL_SOCKET,
            Onload.Vnic.Native.LinuxConstants.SO_DOMAIN, &domain, &length) == 0 ? domain : -System.Runtime.InteropServices.Marshal.GetLastPInvokeError();
    }

    internal static uint Ipv4(string dotted) => Onload.Stack.Wire.Ipv4Address.Parse(dotted).Value;

    internal static string Ipv4(uint address) => new Onload.Stack.Wire.Ipv4Address(address).ToString();
}
