using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using Onload.Driverlink;
using Onload.Tests.Interop;
using Onload.Tests.Netns;
using Onload.Vnic;
using Onload.Vnic.Shm;

namespace Onload.Tests.Driverlink;

/// <summary>
/// What a local user without privileges can do to the daemon and to other users' accelerated processes: attach only
/// where granted, steer only ports it holds, touch no other client's filters, rings or traffic. The user is nobody
/// (65534), taken on by one thread of the test process (setresuid on that thread alone: credentials are per thread in
/// Linux, and the threads it starts inherit them), so the daemon sees uid 65534 through SO_PEERCRED.
/// </summary>
[Category("netns")]
[Category("hostile")]
[NonParallelizable]
public partial class UnprivilegedClientTests
{
    private static readonly TimeSpan Deadline = DriverlinkPair.Deadline;
    private const uint Nobody = 65534;

    [LibraryImport("libc", EntryPoint = "syscall", SetLastError = true)]
    private static partial long Syscall(long number, long a, long b, long c);

    private const long SysSetgroups = 116, SysSetresuid = 117, SysSetresgid = 119;

    /// <summary>Runs <paramref name="f"/> on a thread in the stack side's namespace that is nobody: no groups, gid and
    /// uid 65534, and so no capability. Only that thread (and those it starts) changes user.</summary>
    private static T AsNobody<T>(DriverlinkPair dl, Func<T> f) => dl.InHost(() =>
    {
        if (Syscall(SysSetgroups, 0, 0, 0) != 0 || Syscall(SysSetresgid, Nobody, Nobody, Nobody) != 0 ||
            Syscall(SysSetresuid, Nobody, Nobody, Nobody) != 0)
            throw new InvalidOperationException($"becoming nobody: errno {Marshal.GetLastPInvokeError()}");
        return f();
    });

    private static uint Ipv4(string address) => BinaryPrimitives.ReadUInt32BigEndian(System.Net.IPAddress.Parse(address).GetAddressBytes());

    [Test]
    public void Nobody_is_refused_an_interface_it_was_not_granted()
    {
        using var dl = new DriverlinkPair("--allow", $"{Nobody}@someother0");
        var refusal = AsNobody(dl, () =>
        {
            using var client = DriverlinkClient.Connect(dl.ClientOptions);
            var e = Assert.Throws<DriverlinkException>(() => client.Attach(new AttachRequest(dl.Interface, VnicMode.Shared, 0, 0, 0), out _));
            return e!;
        });
        Assert.That(refusal.Refusal, Is.EqualTo(AttachStatus.NotPermitted));
        Assert.That(refusal.Message, Does.Contain($"uid {Nobody} is not granted {dl.Interface}"));
    }

    [Test]
    public unsafe void A_granted_user_can_touch_neither_another_clients_filters_and_ports_nor_its_rings_and_traffic()
    {
        using var dl = new DriverlinkPair("--allow", $"{Nobody}");
        // The victim: root's accelerated echo.
        var victim = dl.StartClient("onload-echo", "--interface", dl.Interface, "--mode", "shared", "--udp", "7801", "--tcp", "7802");
        victim.WaitForOutput("onload-echo: ready", Deadline);
        // Its rings: the memfd it maps, and the endpoint's name in the namespace's table of unix sockets.
        string memfd = Directory.GetFiles($"/proc/{victim.Pid}/fd").First(f => new FileInfo(f).LinkTarget?.Contains("memfd:onload-shm/", StringComparison.Ordinal) == true);
        string rings = dl.InHost(() => File.ReadLines("/proc/thread-self/net/unix")
            .Select(l => l.Split(' ', StringSplitOptions.RemoveEmptyEntries).Last())
            .First(n => n.StartsWith("@onload-shm/driverd-", StringComparison.Ordinal)))["@onload-shm/".Length..];
        // The peer sends to the victim's UDP port and to nobody's, every 20 ms, while nobody looks.
        const ushort Mine = 7805;
        dl.Peer.Start("sh", "-c", $"while :; do echo to-victim | socat -u - UDP:{dl.HostAddress}:7801; " +
            $"echo to-nobody | socat -u - UDP:{dl.HostAddress}:{Mine}; sleep 0.02; done");
        uint host = Ipv4(dl.HostAddress);
        var victimTcp = new FilterSpec(FilterProtocol.Tcp, host, 7802);

        var seen = AsNobody(dl, () =>
        {
            // (c) The victim's memory: its rings' memfd through /proc is another user's process's (ptrace check).
            Assert.Throws<UnauthorizedAccessException>(() => File.OpenRead(memfd).Dispose(), "opening another user's memfd through /proc");
            // Its rings' endpoint: the daemon's end is taken, and accepts only the victim anyway.
            Assert.Throws(Is.InstanceOf<IOException>(), () => ShmVnic.Open(rings, new VnicOptions { RingSize = 64, BufferCount = 64 }).Dispose(),
                "joining another client's rings");

            // Nor can it pretend to reattach to them: the daemon joins kept rings only where the asker listens.
            using (var liar = DriverlinkClient.Connect(dl.ClientOptions))
            {
                var stolen = Assert.Throws<DriverlinkException>(() => liar.Attach(
                    new AttachRequest(dl.Interface, VnicMode.Shared, 0, 0, 0) { Reattach = true, ResumeName = rings }, out _));
                Assert.That(stolen!.Message, Does.Contain("not pid"), "refused: the rings are not the asker's");
                using var udp = new System.Net.Sockets.Socket(System.Net.Sockets.AddressFamily.InterNetwork, System.Net.Sockets.SocketType.Dgram, System.Net.Sockets.ProtocolType.Udp);
                var notXsk = Assert.Throws<DriverlinkException>(() => liar.Attach(
                    new AttachRequest(dl.Interface, VnicMode.Exclusive, 0, 0, 0) { Reattach = true }, out _, [(int)udp.Handle]));
                Assert.That(notXsk!.Refusal, Is.EqualTo(AttachStatus.InvalidRequest), "an exclusive reattach with no AF_XDP socket");
            }

            using var session = DriverlinkSession.Open(dl.Interface, VnicMode.Shared, dl.ClientOptions);
            var client = session.Client;
            ushort mine = Mine;
            Assert.That(session.ReservePort(17, ref mine), Is.Zero, "its own port: granted");

            // (b) Another client's filter: not there for it on any VNIC id but its own, where it is not its to remove.
            for (uint id = 1; id <= 8; id++)
                Assert.That(client.RemoveFilter(id, victimTcp), Is.EqualTo(id == session.VnicId ? FilterStatus.NotFound : FilterStatus.NoSuchVnic), $"VNIC {id}");
            // Nor can it steer the victim's port to itself: it cannot hold the port, and nothing else proves it.
            ushort taken = 7802;
            Assert.That(BackingSocket.Open(FilterProtocol.Tcp, host, ref taken), Is.LessThan(0), "binding the victim's port");
            ushort elsewhere = 0;
            int other = BackingSocket.Open(FilterProtocol.Tcp, host, ref elsewhere);
            try
            {
                Assert.That(client.InsertFilter(session.VnicId, victimTcp, other), Is.EqualTo(FilterStatus.NotOwner), "a socket on another port");
                Assert.That(client.InsertFilter(session.VnicId, new FilterSpec(FilterProtocol.Udp, host, 7801), other), Is.EqualTo(FilterStatus.NotOwner), "the victim's UDP port");
            }
            finally
            {
                BackingSocket.Release(other);
            }

            // (c) Its own VNIC: its own datagrams, never one of the victim's ports.
            var counts = (Mine: 0, Victim: 0);
            var batch = new PacketDescriptor[64];
            var clock = System.Diagnostics.Stopwatch.StartNew();
            while (clock.Elapsed < TimeSpan.FromSeconds(1) || (counts.Mine == 0 && clock.Elapsed < Deadline))
            {
                int n = session.Vnic.Receive(batch);
                for (int i = 0; i < n; i++)
                {
                    var frame = new ReadOnlySpan<byte>(session.Vnic.Buffers.Pointer(batch[i].Buffer), batch[i].Length);
                    if (frame.Length >= 14 + 20 + 4 && BinaryPrimitives.ReadUInt16BigEndian(frame[12..]) == 0x0800)
                    {
                        int l4 = 14 + (frame[14] & 0xF) * 4;
                        ushort port = BinaryPrimitives.ReadUInt16BigEndian(frame[(l4 + 2)..]);
                        if (port == Mine)
                            counts.Mine++;
                        else if (port is 7801 or 7802)
                            counts.Victim++;
                    }
                    session.Vnic.Buffers.Release(batch[i].Buffer);
                }
                if (n == 0)
                    Thread.Sleep(1);
            }
            session.ReleasePort(17, Mine);
            return counts;
        });
        TestContext.Out.WriteLine($"nobody's VNIC, 1 s: {seen.Mine} datagrams of its own port, {seen.Victim} of the victim's");
        Assert.That(seen.Mine, Is.GreaterThan(0), "its own port's datagrams reach it");
        Assert.That(seen.Victim, Is.Zero, "none of the victim's");

        // The victim still has its filters and its traffic.
        var blob = RandomNumberGenerator.GetBytes(100_000);
        Assert.That(dl.Peer.Pipe($"socat -b 65536 -t 30 - TCP:{dl.HostAddress}:7802", blob, Deadline), Is.EqualTo(blob), "the victim serves on");
        Assert.That(dl.Daemon.HasExited, Is.False);
    }

    [Test]
    public void A_reattach_naming_rings_that_never_answer_holds_the_daemon_half_a_second_at_most()
    {
        using var dl = new DriverlinkPair("--allow", $"{Nobody}");
        var took = AsNobody(dl, () =>
        {
            // A listener on a rings' name that never accepts: a connect succeeds into its backlog, and nothing follows.
            using var silent = new System.Net.Sockets.Socket(System.Net.Sockets.AddressFamily.Unix, System.Net.Sockets.SocketType.Seqpacket, System.Net.Sockets.ProtocolType.Unspecified);
            string name = $"silent-{Environment.ProcessId}";
            silent.Bind(new System.Net.Sockets.UnixDomainSocketEndPoint("\0" + ShmVnic.AbstractPrefix + name));
            silent.Listen(4);
            using var client = DriverlinkClient.Connect(dl.ClientOptions);
            var clock = System.Diagnostics.Stopwatch.StartNew();
            var e = Assert.Throws<DriverlinkException>(() => client.Attach(
                new AttachRequest(dl.Interface, VnicMode.Shared, 0, 0, 0) { Reattach = true, ResumeName = name }, out _));
            Assert.That(e!.Refusal, Is.EqualTo(AttachStatus.NoResources), e.Message);
            return clock.Elapsed;
        });
        TestContext.Out.WriteLine($"a reattach onto a silent listener refused after {took.TotalMilliseconds:0} ms");
        Assert.That(took, Is.LessThan(TimeSpan.FromSeconds(2)), "the daemon's control loop serves everyone: one client may not hold it");
    }
}
