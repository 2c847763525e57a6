using System.Security.Cryptography;
using Onload.Driverlink;
using Onload.Stack;
using Onload.Stack.Tcp;
using Onload.Stack.Wire;
using Onload.Tests.Netns;

namespace Onload.Tests.Driverlink;

/// <summary>
/// A stack in this process on a driverlink VNIC: the kernel's address and MAC, ports reserved by kernel sockets and
/// steered by the daemon, neighbours resolved by the kernel. Its TCP client talks to a kernel server.
/// </summary>
[TestFixture("shared")]
[TestFixture("exclusive")]
[Category("netns")]
[NonParallelizable]
public class DriverlinkStackTests(string mode)
{
    private static readonly TimeSpan Deadline = DriverlinkPair.Deadline;

    private DriverlinkSession Open(DriverlinkPair dl) =>
        DriverlinkSession.Open(dl.Interface, mode == "shared" ? VnicMode.Shared : VnicMode.Exclusive, dl.ClientOptions);

    /// <summary>
    /// Sends <paramref name="data"/> on connection <paramref name="c"/> and reads the echo back, polling the stack
    /// until all of it came or the deadline passes; <paramref name="afterPoll"/> runs after each poll with the bytes
    /// received so far.
    /// </summary>
    private static byte[] EchoThrough(NetStack stack, int c, byte[] data, TimeSpan deadline, Action<int>? afterPoll = null)
    {
        var back = new byte[data.Length];
        int sent = 0, received = 0;
        Poll.Until(() =>
        {
            stack.Poll();
            afterPoll?.Invoke(received);
            if (sent < data.Length)
            {
                int n = stack.TcpSend(c, data.AsSpan(sent, Math.Min(65536, data.Length - sent)));
                if (n > 0)
                    sent += n;
            }
            int r = stack.TcpReceive(c, back.AsSpan(received));
            if (r > 0)
                received += r;
            return received == data.Length;
        }, deadline, $"the echo ({StackDump.Connection(stack, c)})");
        return back;
    }

    /// <summary>A kernel echo server (socat) on the peer; 4 KiB blocks keep PIPE from blocking on itself.</summary>
    private static void StartKernelEcho(DriverlinkPair dl, int port)
    {
        dl.Peer.Start("socat", "-b", "4096", $"TCP-LISTEN:{port},reuseaddr", "PIPE");
        Poll.Until(() => dl.Peer.Exec("ss -tln").Contains($":{port}", StringComparison.Ordinal), Deadline, "socat listening");
    }

    [Test]
    public void The_stacks_tcp_client_gets_a_megabyte_echoed_by_a_kernel_server()
    {
        using var dl = new DriverlinkPair();
        StartKernelEcho(dl, 9300);
        var data = RandomNumberGenerator.GetBytes(1 << 20);
        dl.InHost(() =>
        {
            using var session = Open(dl);
            using var stack = new NetStack(session.Vnic, session.StackOptions());
            Assert.That(session.Address.Address.ToString(), Is.EqualTo(dl.HostAddress));
            int c = stack.TcpOpen();
            Assert.That(stack.TcpConnect(c, new Ipv4Endpoint(Ipv4Address.Parse(dl.PeerAddress), 9300)), Is.EqualTo(-(int)Errno.EINPROGRESS));
            Assert.That(session.Filters, Is.EqualTo(1), "connect reserved its port through the daemon");
            ushort port = stack.TcpLocalEndpoint(c).Port;
            Assert.That(dl.KernelPortHeld("tcp", port), Is.True, "the kernel holds the connection's port for us");
            Poll.Until(() => { stack.Poll(); return stack.TcpIsConnected(c); }, Deadline, "connected through the kernel's ARP");

            Assert.That(EchoThrough(stack, c, data, Deadline), Is.EqualTo(data));
            Assert.That(stack.TcpClose(c), Is.Zero);
            return 0;
        });
    }

    [Test]
    public void A_closed_connections_port_stays_reserved_for_the_next_connect_and_then_goes_back_to_the_kernel()
    {
        using var dl = new DriverlinkPair();
        dl.Peer.Start("socat", "-b", "4096", "TCP-LISTEN:9302,reuseaddr,fork", "PIPE"); // a connection per child
        Poll.Until(() => dl.Peer.Exec("ss -tln").Contains(":9302", StringComparison.Ordinal), Deadline, "socat listening");
        var peer = new Ipv4Endpoint(Ipv4Address.Parse(dl.PeerAddress), 9302);
        var data = RandomNumberGenerator.GetBytes(1000);
        dl.InHost(() =>
        {
            using var session = Open(dl);
            using var stack = new NetStack(session.Vnic, session.StackOptions());
            int Connect()
            {
                int c = stack.TcpOpen();
                Assert.That(stack.TcpConnect(c, peer), Is.EqualTo(-(int)Errno.EINPROGRESS));
                Poll.Until(() => { stack.Poll(); return stack.TcpIsConnected(c); }, Deadline, $"connected ({StackDump.Connection(stack, c)})");
                Assert.That(EchoThrough(stack, c, data, Deadline), Is.EqualTo(data));
                return c;
            }
            void CloseUntilFreed(int c)
            {
                // socat closes when we do: our FIN first, so this side keeps TIME_WAIT; SO_LINGER 0 frees the row at once.
                Assert.That(stack.TcpSetLingerZero(c, true), Is.Zero);
                Assert.That(stack.TcpClose(c), Is.Zero);
                Poll.Until(() => { stack.Poll(); return session.SparePorts == 1; }, Deadline, "the port kept as a spare");
            }

            int first = Connect();
            ushort port = stack.TcpLocalEndpoint(first).Port;
            CloseUntilFreed(first);
            Assert.That(session.Filters, Is.EqualTo(1), "the spare is still steered to the stack");
            Assert.That(dl.KernelPortHeld("tcp", port), Is.True, "and the kernel still cannot hand it out or bind it");

            // A spare rests 2 ms before a connect takes it (the peer's TIME_WAIT must see a newer timestamp).
            var resting = System.Diagnostics.Stopwatch.StartNew();
            Poll.Until(() => { stack.Poll(); return resting.Elapsed >= TimeSpan.FromMilliseconds(3); }, Deadline, "the spare rested");
            int second = Connect();
            Assert.That(stack.TcpLocalEndpoint(second).Port, Is.EqualTo(port), "the next connect reused the spare");
            Assert.That(session.SparePorts, Is.Zero);
            CloseUntilFreed(second);

            // Unused for a second, the spare goes back: its filter is removed and its kernel socket closed.
            Poll.Until(() => { stack.Poll(); return session.Filters == 0; }, Deadline, "the idle spare given back");
            Assert.That(dl.KernelPortHeld("tcp", port), Is.False, "the kernel may use the port again");
            return 0;
        });
    }

    /// <summary>Exhaustion (issue 10): the daemon's per-VNIC filter table (here 4) bounds the ports a stack may
    /// steer; a connect beyond it gets ENOBUFS, leaves nothing behind, and works once a port is free again.</summary>
    [Test]
    [Category("hostile")]
    public void A_full_filter_table_gives_connect_ENOBUFS_and_a_freed_port_serves_the_next_connect()
    {
        const int Filters = 4;
        using var dl = new DriverlinkPair("--max-filters", $"{Filters}");
        dl.Peer.Start("socat", "-b", "4096", "TCP-LISTEN:9304,reuseaddr,fork", "PIPE");
        Poll.Until(() => dl.Peer.Exec("ss -tln").Contains(":9304", StringComparison.Ordinal), Deadline, "socat listening");
        var peer = new Ipv4Endpoint(Ipv4Address.Parse(dl.PeerAddress), 9304);
        var data = RandomNumberGenerator.GetBytes(10_000);
        dl.InHost(() =>
        {
            using var session = Open(dl);
            using var stack = new NetStack(session.Vnic, session.StackOptions());
            var held = new List<int>();
            for (int i = 0; i < Filters; i++)
            {
                int c = stack.TcpOpen();
                Assert.That(stack.TcpConnect(c, peer), Is.EqualTo(-(int)Errno.EINPROGRESS), $"connect {i + 1}");
                held.Add(c);
            }
            int refused = stack.TcpOpen();
            Assert.That(stack.TcpConnect(refused, peer), Is.EqualTo(-(int)Errno.ENOBUFS), "a connect past the table");
            Assert.That(session.Filters, Is.EqualTo(Filters), "the refused connect left no filter");
            Assert.That(stack.TcpClose(refused), Is.Zero);
            foreach (int c in held)
            {
                Poll.Until(() => { stack.Poll(); return stack.TcpIsConnected(c); }, Deadline, $"connected ({StackDump.Connection(stack, c)})");
                Assert.That(EchoThrough(stack, c, data, Deadline), Is.EqualTo(data), "the connections within the table work");
            }

            // One closed (SO_LINGER 0: no TIME_WAIT): its port, kept as a spare, serves the next connect.
            Assert.That(stack.TcpSetLingerZero(held[0], true), Is.Zero);
            Assert.That(stack.TcpClose(held[0]), Is.Zero);
            Poll.Until(() => { stack.Poll(); return session.SparePorts == 1; }, Deadline, "the port kept as a spare");
            var resting = System.Diagnostics.Stopwatch.StartNew();
            Poll.Until(() => { stack.Poll(); return resting.Elapsed >= TimeSpan.FromMilliseconds(3); }, Deadline, "the spare rested");
            int next = stack.TcpOpen();
            Assert.That(stack.TcpConnect(next, peer), Is.EqualTo(-(int)Errno.EINPROGRESS), "a connect once a port is free");
            Poll.Until(() => { stack.Poll(); return stack.TcpIsConnected(next); }, Deadline, $"connected ({StackDump.Connection(stack, next)})");
            Assert.That(EchoThrough(stack, next, data, Deadline), Is.EqualTo(data));
            TestContext.Out.WriteLine($"--max-filters {Filters}: connect {Filters + 1} gave ENOBUFS with no filter left behind; " +
                $"after one close its port served the next connect, 10 KB echoed intact ({mode} mode)");
            return 0;
        });
    }

    [Test]
    public void A_reconfiguration_suspends_and_resumes_the_stack_and_loses_no_connection()
    {
        using var dl = new DriverlinkPair();
        StartKernelEcho(dl, 9301);
        var data = RandomNumberGenerator.GetBytes(8 << 20);
        dl.InHost(() =>
        {
            using var session = Open(dl);
            using var stack = new NetStack(session.Vnic, session.StackOptions());
            int c = stack.TcpOpen();
            stack.TcpConnect(c, new Ipv4Endpoint(Ipv4Address.Parse(dl.PeerAddress), 9301));
            Poll.Until(() => { stack.Poll(); return stack.TcpIsConnected(c); }, Deadline, "connected");
            bool reloaded = false;
            var back = EchoThrough(stack, c, data, TimeSpan.FromSeconds(60), received =>
            {
                if (received > data.Length / 4 && !reloaded)
                {
                    // Mid-transfer: the daemon suspends every VNIC, reloads its program and resumes them. The echo
                    // waits for the suspension to arrive, or the rest of it could be over first (it was, in a run).
                    Netns.Netns.Run($"kill -HUP {dl.Daemon.Pid}");
                    reloaded = true;
                    Poll.Until(() => { stack.Poll(); return stack.Counters.VnicSuspends > 0; }, Deadline, "the daemon's suspension");
                }
            });
            Assert.That(back, Is.EqualTo(data), "every byte, in order, across the reconfiguration");
            Assert.That(stack.Counters.VnicSuspends, Is.EqualTo(1), "suspended once");
            Assert.That(stack.Suspended, Is.False, "and resumed");
            return 0;
        });
        Poll.Until(() => dl.Daemon.Stderr.Contains("reconfigured", StringComparison.Ordinal), Deadline, "the daemon's reconfiguration");
        Assert.That(dl.Daemon.Stderr, Does.Contain("XDP program reloaded").And.Not.Contain("did not answer"));
    }

    [Test]
    public void A_joined_socket_hears_a_kernel_multicast_sender_through_the_hosts_membership()
    {
        using var dl = new DriverlinkPair();
        dl.Peer.Ip($"route add 224.0.0.0/4 dev {dl.Pair.KernelIf}");
        var group = Ipv4Address.Parse("239.7.7.8");
        dl.InHost(() =>
        {
            using var session = Open(dl);
            using var stack = new NetStack(session.Vnic, session.StackOptions());
            int s = stack.UdpOpen();
            Assert.That(stack.UdpBind(s, new Ipv4Endpoint(Ipv4Address.Any, 5008)), Is.Zero);
            Assert.That(stack.UdpJoinGroup(s, group), Is.Zero);
            Assert.That(dl.Host.Ip($"maddr show dev {dl.Interface}"), Does.Contain("239.7.7.8"), "the host's kernel is a member (and does IGMP)");
            var buf = new byte[2048];
            int n = 0;
            Poll.Until(() =>
            {
                Netns.Netns.Exec("ip", ["netns", "exec", dl.Peer.Name, "sh", "-c",
                    $"echo to-the-group | socat -u - UDP-DATAGRAM:239.7.7.8:5008,ip-multicast-if={dl.PeerAddress}"], Deadline);
                for (int i = 0; i < 200 && n <= 0; i++)
                {
                    stack.Poll();
                    n = stack.UdpReceiveFrom(s, buf, out _);
                }
                return n > 0;
            }, Deadline, "a datagram sent to the group");
            Assert.That(System.Text.Encoding.ASCII.GetString(buf, 0, n), Is.EqualTo("to-the-group\n"));
            Assert.That(stack.UdpLeaveGroup(s, group), Is.Zero);
            Poll.Until(() => !dl.Host.Ip($"maddr show dev {dl.Interface}").Contains("239.7.7.8", StringComparison.Ordinal), Deadline,
                "the host's kernel leaving the group");
            return 0;
        });
    }

    [Test]
    public unsafe void A_forged_mirror_row_closes_nothing_that_is_not_the_clients_own()
    {
        using var dl = new DriverlinkPair();
        StartKernelEcho(dl, 9302);
        dl.InHost(() =>
        {
            var session = Open(dl);
            var stack = new NetStack(session.Vnic, session.StackOptions());
            int c = stack.TcpOpen();
            stack.TcpConnect(c, new Ipv4Endpoint(Ipv4Address.Parse(dl.PeerAddress), 9302));
            Poll.Until(() => { stack.Poll(); return stack.TcpIsConnected(c); }, Deadline, "connected");
            // What a hostile client could write: a connection on a port it never held (22, say the host's sshd), in
            // the last row of its mirror, whole and with a valid check word.
            var mirror = stack.Options.ConnectionMirror!;
            var record = ConnectionMirrorLayout.RecordAt(mirror.Region, mirror.Records - 1);
            uint generation = ConnectionMirrorLayout.Next(record->Control);
            var copy = ConnectionMirrorLayout.CopyOf(record, generation);
            *copy = new ConnectionMirrorLayout.Copy
            {
                Generation = generation,
                State = TcpState.Established,
                LocalPort = 22,
                RemoteAddress = Ipv4Address.Parse(dl.PeerAddress).Value,
                RemotePort = 40000,
                NextHop = Ipv4Address.Parse(dl.PeerAddress).Value,
                SndNxt = 1,
                RcvNxt = 1,
            };
            copy->Check = ConnectionMirrorLayout.CheckOf(copy);
            Volatile.Write(ref record->Control, generation);
            // The process "dies": the VNIC is released without its stack closing anything.
            session.Dispose();
            return 0;
        });
        Poll.Until(() => dl.Daemon.Stderr.Contains("TCP connections toward their peers", StringComparison.Ordinal), Deadline,
            "the daemon closing the client's connections");
        Assert.That(dl.Daemon.Stderr, Does.Contain("closed 1 TCP connections toward their peers (1 FIN, 0 RST; 0 without a neighbour, 0 not sent, 1 not its own)"),
            "its real connection closed, the forged one refused");
    }
}
