using System.Security.Cryptography;
using Onload.Tests.Interop;
using Onload.Tests.Netns;

namespace Onload.Tests.Driverlink;

/// <summary>
/// Accelerated processes on an interface whose address the kernel holds, through onload-driverd: each gets its own
/// ports' traffic while the kernel keeps serving everything else on the same address.
/// </summary>
[Category("netns")]
[NonParallelizable]
public class DriverlinkEchoTests
{
    private static readonly TimeSpan Deadline = DriverlinkPair.Deadline;

    /// <summary>Sends <paramref name="data"/> from the kernel side and returns what came back: TCP until the server
    /// closes after our half-close; UDP for a second after the datagram (socat would wait its -t otherwise).</summary>
    private static byte[] Echo(DriverlinkPair dl, string target, byte[] data) =>
        dl.Peer.Pipe(target.StartsWith("UDP", StringComparison.Ordinal) ? $"socat -t 1 -T 3 - {target}" : $"socat -b 65536 -t 30 - {target}", data, Deadline);

    private static NsProcess StartEcho(DriverlinkPair dl, string mode, params string[] ports)
    {
        var p = dl.StartClient("onload-echo", ["--interface", dl.Interface, "--mode", mode, .. ports]);
        p.WaitForOutput("onload-echo: ready", Deadline);
        return p;
    }

    [Test]
    public void Two_processes_each_get_only_their_own_ports_while_the_kernel_serves_the_rest()
    {
        using var dl = new DriverlinkPair();
        var a = StartEcho(dl, "shared", "--udp", "7001", "--tcp", "7002");
        var b = StartEcho(dl, "shared", "--udp", "7003", "--tcp", "7004");
        Assert.That(dl.KernelPortHeld("tcp", 7002) && dl.KernelPortHeld("udp", 7003), Is.True, "the backing sockets hold the ports against kernel programs");
        // Kernel services on other ports of the same address.
        dl.Host.Start("socat", "UDP-LISTEN:7005,fork", "SYSTEM:echo kernel-udp");
        dl.Host.Start("socat", "TCP-LISTEN:7006,fork,reuseaddr", "SYSTEM:echo kernel-tcp");
        Poll.Until(() => dl.Host.Exec("ss -ulnt").Contains(":7006", StringComparison.Ordinal), Deadline, "the kernel's services listening");

        var blob = RandomNumberGenerator.GetBytes(300_000);
        foreach (var (port, who) in new[] { (7002, "a"), (7004, "b") })
        {
            var back = Echo(dl, $"TCP:{dl.HostAddress}:{port}", blob);
            Assert.That(back, Is.EqualTo(blob), $"process {who} echoes its TCP port byte for byte");
        }
        foreach (var port in new[] { 7001, 7003 })
        {
            var msg = System.Text.Encoding.ASCII.GetBytes($"datagram to {port}\n");
            Assert.That(Echo(dl, $"UDP:{dl.HostAddress}:{port}", msg), Is.EqualTo(msg), $"UDP {port} echoed");
        }
        Assert.That(System.Text.Encoding.ASCII.GetString(Echo(dl, $"UDP:{dl.HostAddress}:7005", "hi\n"u8.ToArray())).Trim(), Is.EqualTo("kernel-udp"));
        Assert.That(System.Text.Encoding.ASCII.GetString(Echo(dl, $"TCP:{dl.HostAddress}:7006", [])).Trim(), Is.EqualTo("kernel-tcp"));
        Assert.That(dl.Peer.Exec($"ping -c 10 -i 0.01 -W 2 -q {dl.HostAddress}"), Does.Contain("10 packets transmitted, 10 received"),
            "the kernel still answers ping on the shared address");

        a.Kill();
        Assert.That(Echo(dl, $"TCP:{dl.HostAddress}:7004", blob), Is.EqualTo(blob), "b carries on after a is gone");
        Poll.Until(() => !dl.KernelPortHeld("tcp", 7002) && !dl.KernelPortHeld("udp", 7001), Deadline, "a's ports given back to the kernel");
        Assert.That(dl.Daemon.HasExited, Is.False);
        b.Kill();
    }

    [Test]
    public void An_exclusive_client_has_the_queue_to_itself_and_the_kernel_keeps_its_services()
    {
        using var dl = new DriverlinkPair();
        StartEcho(dl, "exclusive", "--udp", "7101", "--tcp", "7102");
        dl.Host.Start("socat", "TCP-LISTEN:7106,fork,reuseaddr", "SYSTEM:echo kernel-tcp");
        Poll.Until(() => dl.Host.Exec("ss -lnt").Contains(":7106", StringComparison.Ordinal), Deadline, "the kernel's server listening");
        var blob = RandomNumberGenerator.GetBytes(1_000_000);
        Assert.That(Echo(dl, $"TCP:{dl.HostAddress}:7102", blob), Is.EqualTo(blob));
        var msg = "exclusive\n"u8.ToArray();
        Assert.That(Echo(dl, $"UDP:{dl.HostAddress}:7101", msg), Is.EqualTo(msg));
        // 8000 bytes arrive in fragments, which port filters cannot steer: the kernel reassembles them for the port's
        // backing socket, and the client hands the datagram to its stack, which answers in fragments of its own.
        var big = RandomNumberGenerator.GetBytes(8000);
        Assert.That(Echo(dl, $"UDP:{dl.HostAddress}:7101", big), Is.EqualTo(big), "a fragmented datagram echoed whole");
        // A kernel program on the same host, sending to the host's own address: only the kernel can carry that,
        // both ways, through the port's kernel socket.
        var local = "from this host\n"u8.ToArray();
        Assert.That(dl.Host.Pipe($"socat -t 1 -T 3 - UDP:{dl.HostAddress}:7101", local, Deadline), Is.EqualTo(local),
            "a local program's datagram answered through the kernel");
        Assert.That(System.Text.Encoding.ASCII.GetString(Echo(dl, $"TCP:{dl.HostAddress}:7106", [])).Trim(), Is.EqualTo("kernel-tcp"));
        var second = dl.StartClient("onload-echo", "--interface", dl.Interface, "--mode", "shared", "--udp", "7107");
        Assert.That(second.WaitForExit(Deadline), Is.True);
        Assert.That(second.Stderr, Does.Contain("Busy"), "a shared client is refused while one holds the queue");
    }

    [Test]
    [Category("hostile")]
    public void Kill_minus_9_frees_the_clients_ports_its_peer_sees_the_end_another_client_streams_on_intact_and_a_new_client_attaches()
    {
        using var dl = new DriverlinkPair();
        var a = StartEcho(dl, "shared", "--tcp", "7202");
        var other = StartEcho(dl, "shared", "--tcp", "7203");
        Assert.That(dl.KernelPortHeld("tcp", 7202), Is.True, "the backing socket holds the port in the kernel");
        // The peer's sends through a 40 Mbit/s tbf: the other client's checked 8 MB stream lasts ~1.6 s and a dies in it.
        dl.Peer.Exec($"tc qdisc add dev {dl.Pair.KernelIf} root tbf rate 40mbit burst 64kb latency 400ms");
        string input = Path.Combine(TestContext.CurrentContext.WorkDirectory, $"kill9-in-{Environment.ProcessId}-{dl.Pair.Instance}");
        string output = input.Replace("-in-", "-out-", StringComparison.Ordinal);
        try
        {
            var blob = RandomNumberGenerator.GetBytes(8_000_000);
            File.WriteAllBytes(input, blob);
            var checkedStream = dl.Peer.Start("sh", "-c", $"socat -b 65536 -t 30 - TCP:{dl.HostAddress}:7203 < {input} > {output}");
            // A kernel client streaming into a when it dies.
            var stream = dl.Peer.Start("sh", "-c", $"head -c 100000000 /dev/zero | socat -b 65536 - TCP:{dl.HostAddress}:7202 > /dev/null");
            Poll.Until(() => dl.Peer.Exec("ss -tn").Contains($"{dl.HostAddress}:7202", StringComparison.Ordinal), Deadline, "the stream connected");
            Poll.Until(() => File.Exists(output) && new FileInfo(output).Length > 1_000_000, Deadline, "the other client's stream under way");
            Netns.Netns.Run($"kill -9 {a.Pid}");
            long atKill = new FileInfo(output).Length;
            Poll.Until(() => dl.Daemon.Stderr.Contains("released", StringComparison.Ordinal), Deadline, "the daemon noticing the death");
            Assert.That(stream.WaitForExit(Deadline), Is.True, "the peer's connection ended (reset by the kernel once the port is no longer steered)");
            Assert.That(stream.ExitCode, Is.Not.EqualTo(0), stream.Stderr);
            Poll.Until(() => !dl.KernelPortHeld("tcp", 7202), Deadline, "the port free in the kernel");
            Assert.That(checkedStream.WaitForExit(Deadline), Is.True, "the other client's stream finished");
            byte[] back = File.ReadAllBytes(output);
            TestContext.Out.WriteLine($"kill -9 of one client: the other's stream {atKill:N0} B in at the kill, {back.Length:N0} of {blob.Length:N0} B back");
            Assert.That(back.AsSpan().SequenceEqual(blob), Is.True, $"the other client's stream intact ({back.Length} of {blob.Length} B)");
            Assert.That(other.HasExited, Is.False);
        }
        finally
        {
            File.Delete(input);
            File.Delete(output);
        }

        var b = StartEcho(dl, "shared", "--tcp", "7202");
        var small = RandomNumberGenerator.GetBytes(100_000);
        Assert.That(Echo(dl, $"TCP:{dl.HostAddress}:7202", small), Is.EqualTo(small), "a new client serves the same port");
        Assert.That(dl.Daemon.HasExited, Is.False);
    }

    [Test]
    public void A_peer_waiting_to_read_sees_the_end_when_the_client_is_killed([Values("shared", "exclusive")] string mode)
    {
        using var dl = new DriverlinkPair();
        var a = StartEcho(dl, mode, "--tcp", "7302");
        // The kernel's client sends nothing and only reads: nothing it does would ever reach the kernel's RST.
        var reader = dl.Peer.Start("socat", "-u", $"TCP:{dl.HostAddress}:7302", "STDOUT");
        Poll.Until(() => dl.Peer.Exec("ss -tn state established").Contains($"{dl.HostAddress}:7302", StringComparison.Ordinal),
            Deadline, "the reader connected");
        Netns.Netns.Run($"kill -9 {a.Pid}");
        Assert.That(reader.WaitForExit(Deadline), Is.True, "the reader saw its connection end");
        Assert.That(reader.ExitCode, Is.EqualTo(0), "with an orderly end of stream (FIN): nothing was left unread " + reader.Stderr);
        Poll.Until(() => dl.Daemon.Stderr.Contains("closed 1 TCP connections toward their peers (1 FIN, 0 RST)", StringComparison.Ordinal),
            Deadline, "the daemon closing the dead client's connection: " + dl.Daemon.Stderr);
    }

    [Test]
    public void An_unprivileged_user_attaches_only_where_granted_and_then_runs_accelerated_in_shared_mode()
    {
        // nobody (65534): no capabilities, so no AF_XDP socket or BPF of its own; shared mode needs neither.
        string[] asNobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"];
        using (var refused = new DriverlinkPair())
        {
            var p = refused.Host.Start("env", [$"ONLOAD_DRIVERD_SOCKET={refused.SocketName}", "ONLOAD_DRIVERD_AUTOSTART=0",
                .. asNobody, Dist.Bin("onload-echo"), "--interface", refused.Interface, "--tcp", "7602"]);
            Assert.That(p.WaitForExit(Deadline), Is.True);
            Assert.That(p.ExitCode, Is.Not.EqualTo(0));
            Assert.That(p.Stderr, Does.Contain("NotPermitted").And.Contain("uid 65534 is not granted"), p.Stderr);
        }
        using var dl = new DriverlinkPair("--allow", "65534");
        var echo = dl.Host.Start("env", [$"ONLOAD_DRIVERD_SOCKET={dl.SocketName}", "ONLOAD_DRIVERD_AUTOSTART=0",
            .. asNobody, Dist.Bin("onload-echo"), "--interface", dl.Interface, "--mode", "shared", "--tcp", "7602"]);
        echo.WaitForOutput("onload-echo: ready", Deadline);
        Assert.That(Netns.Netns.Run($"ps -o uid= -p {echo.Pid}").Trim(), Is.EqualTo("65534"), "the echo runs as nobody");
        var blob = RandomNumberGenerator.GetBytes(200_000);
        Assert.That(Echo(dl, $"TCP:{dl.HostAddress}:7602", blob), Is.EqualTo(blob), "accelerated for a granted user");
    }
}
