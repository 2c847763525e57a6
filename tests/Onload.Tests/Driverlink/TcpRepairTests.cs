using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using Onload.Driverlink;
using Onload.Tests.Netns;
using Onload.Vnic.Native;

namespace Onload.Tests.Driverlink;

/// <summary>
/// A TCP connection moved from one kernel socket into another with TCP_REPAIR (issue 7's hand-over to the kernel):
/// by <see cref="TcpRepair.Restore"/> directly, and through onload-driverd for a client. The peer, a kernel socket
/// in the other namespace, must see one unbroken conversation: every byte once and in order, and no reset.
/// </summary>
[Category("netns")]
[NonParallelizable]
public class TcpRepairTests
{
    private static readonly TimeSpan Deadline = DriverlinkPair.Deadline;
    private const int AF_INET6 = 10;
    private const int SOCK_STREAM = 1;
    private const int SOCK_DGRAM = 2;

    [Test]
    public void A_connection_restored_into_a_new_socket_carries_on_byte_exact_both_ways_without_a_reset()
    {
        using var dl = DriverlinkPair.WithoutDaemon();
        var (source, peer) = Connect(dl, sendBuffer: 256 * 1024);
        using var _ = peer;
        var random = new Random(7);
        byte[] early = Bytes(random, 1000);
        source.Send(early);
        Assert.That(ReadExactly(peer, early.Length), Is.EqualTo(early));
        byte[] unread = Bytes(random, 3000);
        peer.Send(unread);
        Poll.Until(() => source.Available == unread.Length, Deadline, "the peer's bytes waiting unread at the source");
        long resets = EstabResets(dl.Peer);

        // The peer stops hearing the source: what the source sends now stays unacknowledged in flight, and the rest
        // waits behind it unsent (the congestion window).
        ushort sourcePort = (ushort)((IPEndPoint)source.LocalEndPoint!).Port;
        Nft(dl.Peer, "add table inet repair_test");
        Nft(dl.Peer, "add chain inet repair_test in { type filter hook input priority 0 ; }");
        Nft(dl.Peer, $"add rule inet repair_test in tcp sport {sourcePort} drop");
        byte[] queued = Bytes(random, 200_000);
        int accepted = SendWhatFits(source, queued);
        var checkpoint = KernelTcpCheckpoint.TakeAndCloseSilently(source);
        Nft(dl.Peer, "delete table inet repair_test");
        Assert.That(checkpoint.Sent, Is.Not.Empty, "bytes in flight, unacknowledged");
        Assert.That(checkpoint.Unsent, Is.Not.Empty, "bytes queued behind them");
        Assert.That(checkpoint.Sent.Concat(checkpoint.Unsent), Is.EqualTo(queued[..accepted]));
        Assert.That(checkpoint.Received, Is.EqualTo(unread));

        // As in a hand-over, a socket of the process still holds the port (the stack's backing socket).
        using var backing = dl.InHost(() => new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp));
        backing.Bind(new IPEndPoint(IPAddress.Parse(dl.HostAddress), sourcePort));
        // A dual-stack socket, as the preload shim's placeholders are: the connection is IPv4 through ::ffff:0:0/96.
        int fd = dl.InHost(() => Libc.Socket(AF_INET6, SOCK_STREAM | LinuxConstants.SOCK_CLOEXEC, 0));
        Assert.That(fd, Is.GreaterThanOrEqualTo(0));
        int rc = TcpRepair.Restore(fd, checkpoint.State, checkpoint.Sent, checkpoint.Unsent, checkpoint.Received, out string? failure);
        Assert.That(rc, Is.EqualTo(0), failure);
        using var restored = new Socket(new SafeSocketHandle(fd, ownsHandle: true)) { ReceiveTimeout = (int)Deadline.TotalMilliseconds };

        Assert.That(ReadExactly(restored, unread.Length), Is.EqualTo(unread), "the unread bytes, from the restored receive queue");
        Assert.That(ReadExactly(peer, accepted), Is.EqualTo(queued[..accepted]), "the bytes in flight and queued, each once, in order");
        AssertConversationContinues(restored, peer, random);
        Assert.That(EstabResets(dl.Peer), Is.EqualTo(resets), "the peer saw no reset");
    }

    [Test]
    public void A_connection_the_peer_has_closed_restores_with_its_data_then_end_of_file_and_still_sends()
    {
        using var dl = DriverlinkPair.WithoutDaemon();
        var (source, peer) = Connect(dl);
        using var _ = peer;
        var random = new Random(9);
        byte[] last = Bytes(random, 2000);
        peer.Send(last);
        peer.Shutdown(SocketShutdown.Send);
        Poll.Until(() => source.Available == last.Length && source.Poll(0, SelectMode.SelectRead), Deadline, "the peer's bytes and FIN at the source");
        long resets = EstabResets(dl.Peer);
        var checkpoint = KernelTcpCheckpoint.TakeAndCloseSilently(source);
        Assert.That(checkpoint.State.PeerClosed, Is.True, "the source was in CLOSE_WAIT");

        int fd = dl.InHost(() => Libc.Socket(AF_INET6, SOCK_STREAM | LinuxConstants.SOCK_CLOEXEC, 0));
        int rc = TcpRepair.Restore(fd, checkpoint.State, checkpoint.Sent, checkpoint.Unsent, checkpoint.Received, out string? failure);
        Assert.That(rc, Is.EqualTo(0), failure);
        using var restored = new Socket(new SafeSocketHandle(fd, ownsHandle: true)) { ReceiveTimeout = (int)Deadline.TotalMilliseconds };
        Assert.That(ReadExactly(restored, last.Length), Is.EqualTo(last));
        Assert.That(restored.Receive(new byte[1]), Is.EqualTo(0), "end of file after the peer's last bytes");
        byte[] reply = Bytes(random, 30_000);
        restored.Send(reply);
        Assert.That(ReadExactly(peer, reply.Length), Is.EqualTo(reply), "a half-closed connection still carries the other way");
        restored.Shutdown(SocketShutdown.Send);
        Assert.That(peer.Receive(new byte[1]), Is.EqualTo(0), "the restored socket's FIN");
        Assert.That(EstabResets(dl.Peer), Is.EqualTo(resets), "the peer saw no reset");
    }

    [Test]
    public void A_restore_that_fails_sends_nothing_and_leaves_the_connection_free_to_restore_again()
    {
        using var dl = DriverlinkPair.WithoutDaemon();
        var (source, peer) = Connect(dl);
        using var _ = peer;
        var random = new Random(13);
        byte[] unread = Bytes(random, 1000);
        peer.Send(unread);
        Poll.Until(() => source.Available == unread.Length, Deadline, "the peer's bytes waiting unread at the source");
        long resets = EstabResets(dl.Peer);
        var checkpoint = KernelTcpCheckpoint.TakeAndCloseSilently(source);

        // A window update from beyond the receive window: the kernel refuses it, the last step in repair mode.
        var state = checkpoint.State;
        var impossible = state with { SndWl1 = state.RcvNxt + state.RcvWnd + 1000 };
        int failed = dl.InHost(() => Libc.Socket(LinuxConstants.AF_INET, SOCK_STREAM | LinuxConstants.SOCK_CLOEXEC, 0));
        try
        {
            int rc = TcpRepair.Restore(failed, impossible, checkpoint.Sent, checkpoint.Unsent, checkpoint.Received, out string? failure);
            Assert.That(rc, Is.EqualTo(-Errno.EINVAL), failure);
            Assert.That(failure, Does.StartWith("TCP_REPAIR_WINDOW"));

            int fd = dl.InHost(() => Libc.Socket(LinuxConstants.AF_INET, SOCK_STREAM | LinuxConstants.SOCK_CLOEXEC, 0));
            rc = TcpRepair.Restore(fd, state, checkpoint.Sent, checkpoint.Unsent, checkpoint.Received, out failure);
            Assert.That(rc, Is.EqualTo(0), failure);
            using var restored = new Socket(new SafeSocketHandle(fd, ownsHandle: true)) { ReceiveTimeout = (int)Deadline.TotalMilliseconds };
            Assert.That(ReadExactly(restored, unread.Length), Is.EqualTo(unread));
            AssertConversationContinues(restored, peer, random);
        }
        finally
        {
            BackingSocket.Release(failed); // in repair mode: its close is silent
        }
        Assert.That(EstabResets(dl.Peer), Is.EqualTo(resets), "the peer saw no reset");
    }

    [Test]
    public void The_daemon_hands_a_connection_to_the_kernel_for_the_client_whose_vnic_holds_its_port()
    {
        using var dl = new DriverlinkPair();
        var (source, peer) = Connect(dl);
        using var _ = peer;
        var random = new Random(11);
        byte[] unread = Bytes(random, 5000);
        peer.Send(unread);
        Poll.Until(() => source.Available == unread.Length, Deadline, "the peer's bytes waiting unread at the source");
        long resets = EstabResets(dl.Peer);
        var checkpoint = KernelTcpCheckpoint.TakeAndCloseSilently(source);
        var state = checkpoint.State;
        // Queues as large as a stack's buffers: a megabyte not yet read before the peer's last bytes (the receive
        // queue starts that much earlier in sequence space), and a megabyte queued but not yet sent.
        byte[] received = [.. Bytes(random, 1 << 20), .. checkpoint.Received];
        byte[] unsent = Bytes(random, 1 << 20);

        dl.InHost(() =>
        {
            using var client = DriverlinkClient.Connect(dl.ClientOptions);
            var vnic = AttachExclusive(client, dl);
            ushort port = state.LocalPort;
            int backing = BackingSocket.Open(FilterProtocol.Tcp, state.LocalAddress, ref port);
            Assert.That(backing, Is.GreaterThanOrEqualTo(0), "the backing socket takes the connection's port");
            try
            {
                var filter = new FilterSpec(FilterProtocol.Tcp, state.LocalAddress, state.LocalPort);
                Assert.That(client.InsertFilter(vnic.VnicId, filter, backing), Is.EqualTo(FilterStatus.Ok));
                int fd = Libc.Socket(LinuxConstants.AF_INET, SOCK_STREAM | LinuxConstants.SOCK_CLOEXEC, 0);
                int rc = client.HandOverTcp(vnic.VnicId, state with { RemotePort = 0 }, fd, [], [], [], out string? reason);
                Assert.That(rc, Is.EqualTo(-Errno.EINVAL), "a state the protocol cannot carry is an errno, not an exception");
                Assert.That(reason, Does.Contain("cannot carry"));
                rc = client.HandOverTcp(vnic.VnicId, state, fd, checkpoint.Sent, unsent, received, out reason);
                Assert.That(rc, Is.EqualTo(0), reason);
                // The stack lets go of the port's frames: the kernel's now.
                Assert.That(client.RemoveFilter(vnic.VnicId, filter), Is.EqualTo(FilterStatus.Ok));
                using var restored = new Socket(new SafeSocketHandle(fd, ownsHandle: true)) { ReceiveTimeout = (int)Deadline.TotalMilliseconds };
                Assert.That(ReadExactly(restored, received.Length), Is.EqualTo(received));
                Assert.That(ReadExactly(peer, unsent.Length), Is.EqualTo(unsent));
                AssertConversationContinues(restored, peer, random);
            }
            finally
            {
                BackingSocket.Release(backing);
            }
            return 0;
        });
        Assert.That(EstabResets(dl.Peer), Is.EqualTo(resets), "the peer saw no reset");
        Poll.Until(() => dl.Daemon.Stderr.Contains($":{state.LocalPort} - {dl.PeerAddress}:{state.RemotePort} handed to the kernel", StringComparison.Ordinal),
            Deadline, "the daemon's log line for the hand-over");
    }

    [Test]
    public void A_hand_over_the_client_may_not_make_or_did_not_pass_whole_is_refused_with_the_reason_and_the_daemon_serves_on()
    {
        using var dl = new DriverlinkPair();
        dl.InHost(() =>
        {
            using var raw = DriverlinkSocket.Connect(dl.SocketName);
            Assert.That(Ask(raw, new Hello(PeerRole.Client, "onload test") { RequestId = 1 }), Is.TypeOf<Hello>());
            var vnic = (AttachReply)Ask(raw, new AttachRequest(dl.Interface, VnicMode.Exclusive, 0, 0, 0) { RequestId = 2 });
            uint host = DaemonTests.Ipv4(dl.HostAddress);
            ushort port = 0;
            int backing = BackingSocket.Open(FilterProtocol.Tcp, host, ref port);
            var filter = new FilterSpec(FilterProtocol.Tcp, host, port);
            int tcp = Libc.Socket(LinuxConstants.AF_INET, SOCK_STREAM | LinuxConstants.SOCK_CLOEXEC, 0);
            int udp = Libc.Socket(LinuxConstants.AF_INET, SOCK_DGRAM | LinuxConstants.SOCK_CLOEXEC, 0);
            int bytes = Memfd(10, seal: true), unsealed = Memfd(10, seal: false), shorter = Memfd(4, seal: true);
            try
            {
                Assert.That(Ask(raw, new FilterInsert(vnic.VnicId, filter) { RequestId = 3 }, [backing]), Is.EqualTo(new FilterReply(FilterStatus.Ok) { RequestId = 3 }));
                var state = new TcpRepairState(host, port, DaemonTests.Ipv4(dl.PeerAddress), 5000, 1000, 2000, 65535, 2000, 65535, 65535,
                    1448, false, 0, 0, false, 0, false, false);
                var refusals = new (TcpHandOver Request, int[] Fds, int Errno, string Reason)[]
                {
                    (new(vnic.VnicId + 1, state, 4, 4, 2), [tcp, bytes], Errno.EPERM, "is not this client's"),
                    (new(vnic.VnicId, state with { LocalAddress = DaemonTests.Ipv4(dl.PeerAddress) }, 4, 4, 2), [tcp, bytes], Errno.EPERM, "is not an address of"),
                    (new(vnic.VnicId, state with { LocalPort = (ushort)(port + 1) }, 4, 4, 2), [tcp, bytes], Errno.EPERM, "holds no TCP filter"),
                    (new(vnic.VnicId, state, 4, 4, 2), [tcp], Errno.EINVAL, "two descriptors"),
                    (new(vnic.VnicId, state, 4, 4, 2), [tcp, unsealed], Errno.EINVAL, "not sealed against shrinking"),
                    (new(vnic.VnicId, state, 4, 4, 2), [tcp, shorter], Errno.EINVAL, "holds 4 bytes, not the 10"),
                    (new(vnic.VnicId, state, 4, 4, 2), [udp, bytes], 92, "TCP_REPAIR on"), // ENOPROTOOPT: not a TCP socket
                };
                uint id = 10;
                foreach (var (request, fds, errno, reason) in refusals)
                {
                    var reply = Ask(raw, request with { RequestId = ++id }, fds);
                    Assert.That(reply, Is.TypeOf<TcpHandOverReply>());
                    var answer = (TcpHandOverReply)reply;
                    Assert.That(answer.Errno, Is.EqualTo(errno), answer.Reason);
                    Assert.That(answer.Reason, Does.Contain(reason));
                }
                // Still served, on the same connection.
                Assert.That(Ask(raw, new FilterRemove(vnic.VnicId, filter) { RequestId = 99 }), Is.EqualTo(new FilterReply(FilterStatus.Ok) { RequestId = 99 }));
            }
            finally
            {
                foreach (int fd in new[] { backing, tcp, udp, bytes, unsealed, shorter })
                    BackingSocket.Release(fd);
            }
            return 0;
        });
        Assert.That(dl.Daemon.HasExited, Is.False, dl.Daemon.Stderr);
        Poll.Until(() => dl.Daemon.Stderr.Contains("not handed to the kernel (errno 22)", StringComparison.Ordinal), Deadline,
            "the daemon's log line for a refused hand-over");
    }

    /// <summary>Sends <paramref name="request"/> and returns the reply with its id (events in between are skipped),
    /// closing whatever descriptors come.</summary>
    private static Message Ask(DriverlinkSocket raw, Message request, int[]? fds = null)
    {
        Assert.That(raw.Send(request, fds), Is.EqualTo(0));
        var received = new int[DriverlinkSocket.MaxDescriptors];
        while (true)
        {
            Assert.That(raw.WaitReady(writable: false, (int)Deadline.TotalMilliseconds), Is.True, $"a reply to {request.Kind}");
            var r = raw.Receive(received, out var message);
            foreach (int fd in received.AsSpan(0, r.DescriptorCount))
                BackingSocket.Release(fd);
            Assert.That(r.Status, Is.EqualTo(ReceiveStatus.Ok), $"the daemon's answer to {request.Kind}");
            if (message!.RequestId == request.RequestId)
                return message;
        }
    }

    private static unsafe int Memfd(int length, bool seal)
    {
        int fd;
        fixed (byte* name = "hand-over-test\0"u8)
            fd = Libc.MemfdCreate(name, UnixIpcConstants.MFD_CLOEXEC | UnixIpcConstants.MFD_ALLOW_SEALING);
        Assert.That(fd, Is.GreaterThanOrEqualTo(0));
        Assert.That(Libc.Ftruncate(fd, length), Is.EqualTo(0));
        if (seal)
            Assert.That(Libc.Fcntl(fd, UnixIpcConstants.F_ADD_SEALS, UnixIpcConstants.F_SEAL_SHRINK | UnixIpcConstants.F_SEAL_GROW), Is.EqualTo(0));
        return fd;
    }

    private static AttachReply AttachExclusive(DriverlinkClient client, DriverlinkPair dl)
    {
        var reply = client.Attach(new AttachRequest(dl.Interface, VnicMode.Exclusive, 0, 0, 0), out var fds);
        foreach (int fd in fds)
            BackingSocket.Release(fd);
        return reply;
    }

    /// <summary>After the move, more bytes each way, then an orderly close: the connection is whole.</summary>
    private static void AssertConversationContinues(Socket restored, Socket peer, Random random)
    {
        byte[] toRestored = Bytes(random, 50_000), toPeer = Bytes(random, 50_000);
        peer.Send(toRestored);
        Assert.That(ReadExactly(restored, toRestored.Length), Is.EqualTo(toRestored), "bytes from the peer after the move");
        restored.Send(toPeer);
        Assert.That(ReadExactly(peer, toPeer.Length), Is.EqualTo(toPeer), "bytes to the peer after the move");
        restored.Shutdown(SocketShutdown.Send);
        Assert.That(peer.Receive(new byte[1]), Is.EqualTo(0), "the restored socket's FIN");
    }

    /// <summary>A connection from the stack side's kernel to a listener on the peer side.</summary>
    private static (Socket Source, Socket Peer) Connect(DriverlinkPair dl, int sendBuffer = 0)
    {
        using var listener = dl.Peer.Run(() => new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp));
        listener.Bind(new IPEndPoint(IPAddress.Parse(dl.PeerAddress), 0));
        listener.Listen(1);
        var source = dl.InHost(() => new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp));
        if (sendBuffer > 0)
            source.SendBufferSize = sendBuffer;
        source.Connect((IPEndPoint)listener.LocalEndPoint!);
        var peer = listener.Accept();
        peer.ReceiveTimeout = (int)Deadline.TotalMilliseconds;
        return (source, peer);
    }

    /// <summary>Sends from <paramref name="bytes"/> until the socket buffer is full; returns how many it took.</summary>
    private static int SendWhatFits(Socket s, byte[] bytes)
    {
        s.Blocking = false;
        int done = 0;
        while (done < bytes.Length)
        {
            int n = s.Send(bytes, done, bytes.Length - done, SocketFlags.None, out var error);
            if (error == SocketError.WouldBlock)
                break;
            Assert.That(error, Is.EqualTo(SocketError.Success));
            done += n;
        }
        return done;
    }

    private static byte[] ReadExactly(Socket s, int count)
    {
        var bytes = new byte[count];
        for (int done = 0; done < count;)
        {
            int n = s.Receive(bytes, done, count - done, SocketFlags.None);
            Assert.That(n, Is.GreaterThan(0), $"the connection ended after {done} of {count} bytes");
            done += n;
        }
        return bytes;
    }

    private static byte[] Bytes(Random random, int count)
    {
        var bytes = new byte[count];
        random.NextBytes(bytes);
        return bytes;
    }

    private static void Nft(TestNamespace ns, string command)
    {
        var r = Netns.Netns.Exec("ip", ["netns", "exec", ns.Name, "nft", command], Deadline);
        Assert.That(r.Succeeded, Is.True, $"nft {command}: {r.Stderr}");
    }

    /// <summary>Tcp EstabResets of the namespace (/proc/net/snmp): connections reset by a RST they received.</summary>
    private static long EstabResets(TestNamespace ns)
    {
        var lines = ns.Exec("cat /proc/net/snmp").Split('\n').Where(l => l.StartsWith("Tcp:", StringComparison.Ordinal)).ToArray();
        var names = lines[0].Split(' ', StringSplitOptions.RemoveEmptyEntries);
        var values = lines[1].Split(' ', StringSplitOptions.RemoveEmptyEntries);
        return long.Parse(values[Array.IndexOf(names, "EstabResets")], System.Globalization.CultureInfo.InvariantCulture);
    }
}
