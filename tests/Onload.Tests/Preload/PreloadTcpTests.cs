using System.Diagnostics;
using System.Security.Cryptography;
using Onload.Tests.Driverlink;
using Onload.Tests.Interop;
using Onload.Tests.Netns;

namespace Onload.Tests.Preload;

/// <summary>
/// Unmodified programs under <c>onload-run</c> (LD_PRELOAD of libonload.so) in driverlink mode: their TCP runs on the
/// user-level stack, against the kernel's TCP on the peer, and the stack side's kernel opens no connection of its own.
/// </summary>
[Category("netns")]
[NonParallelizable]
public class PreloadTcpTests
{
    private static readonly TimeSpan Deadline = DriverlinkPair.Deadline;

    internal static string[] Settings(DriverlinkPair dl) =>
        [$"ONLOAD_INTERFACE={dl.Interface}", $"ONLOAD_DRIVERD_SOCKET={dl.SocketName}", "ONLOAD_DRIVERD_AUTOSTART=0", "ONLOAD_DEBUG=1"];

    /// <summary>The kernel's TCP open counters in a namespace (/proc/net/snmp, as <c>nstat</c> reads them).</summary>
    internal static (long Active, long Passive) KernelOpens(TestNamespace ns)
    {
        var lines = ns.Exec("cat /proc/net/snmp").Split('\n').Where(l => l.StartsWith("Tcp:", StringComparison.Ordinal)).ToArray();
        var names = lines[0].Split(' ', StringSplitOptions.RemoveEmptyEntries);
        var values = lines[1].Split(' ', StringSplitOptions.RemoveEmptyEntries);
        long Get(string name) => long.Parse(values[Array.IndexOf(names, name)], System.Globalization.CultureInfo.InvariantCulture);
        return (Get("ActiveOpens"), Get("PassiveOpens"));
    }

    /// <summary>
    /// Limits what the peer's kernel sends towards the stack to <paramref name="rate"/> (a token bucket on its veth
    /// end, <c>tc</c> syntax: "4mbit"), so that a transfer lasts long enough for onload-stackdump to see the
    /// program's connection while it runs. Goes with the namespace.
    /// </summary>
    internal static void LimitPeerSendRate(DriverlinkPair dl, string rate) =>
        dl.Peer.Exec($"tc qdisc add dev {dl.Pair.KernelIf} root tbf rate {rate} burst 32kb latency 200ms");

    private string _dir = "";

    [SetUp]
    public void MakeDirectory() => _dir = Directory.CreateTempSubdirectory("onload-socat-").FullName;

    [TearDown]
    public void RemoveDirectory() => Directory.Delete(_dir, recursive: true);

    [Test]
    public void Socat_listening_under_onload_run_echoes_a_megabyte_from_a_kernel_client_through_the_stack()
    {
        using var dl = new DriverlinkPair();
        var before = KernelOpens(dl.Host);
        var server = dl.Host.Start("env", [.. Settings(dl), Dist.Bin("onload-run"), "socat", "-b", "4096", "TCP-LISTEN:7402,reuseaddr", "PIPE"]);
        server.WaitForOutput("listening", Deadline);
        // socat binds any address: the listener shows 0.0.0.0, as ss shows a kernel listener bound so.
        OnloadStackdump.WaitUntil(dl.Host, server.Pid, s => s.Listening(7402) is { } l && l.LocalAddress == "0.0.0.0",
            Deadline, "socat's listener");

        var blob = RandomNumberGenerator.GetBytes(1_000_000);
        string sent = Path.Combine(_dir, "sent"), echoed = Path.Combine(_dir, "echoed");
        File.WriteAllBytes(sent, blob);
        LimitPeerSendRate(dl, "4mbit"); // the megabyte takes 2 s to reach the stack
        var client = dl.Peer.Start("sh", "-c", $"socat -b 65536 -t 30 - TCP:{dl.HostAddress}:7402 < {sent} > {echoed}");

        var stack = OnloadStackdump.WaitUntil(dl.Host, server.Pid, s => s.Established(7402, dl.PeerAddress).Count == 1,
            Deadline, "socat's connection from the kernel client");
        Assert.That(stack.Established(7402, dl.PeerAddress)[0].LocalAddress, Is.EqualTo(dl.HostAddress));

        Assert.That(client.WaitForExit(Deadline), Is.True, "the kernel client finished");
        Assert.That(client.ExitCode, Is.Zero, client.Stderr);
        Assert.That(File.ReadAllBytes(echoed), Is.EqualTo(blob), "the accelerated socat echoed every byte");
        Assert.That(server.Stderr, Does.Contain("accepted on fd"), "the connection was accepted on the stack");
        Assert.That(KernelOpens(dl.Host).Passive, Is.EqualTo(before.Passive), "the stack side's kernel accepted no connection");
        Assert.That(server.WaitForExit(Deadline), Is.True, "socat ends after its one connection");
        Assert.That(server.ExitCode, Is.Zero, server.Stderr);
    }

    [Test]
    public void Socat_connecting_under_onload_run_sends_a_megabyte_to_a_kernel_echo_server_and_reads_it_back()
    {
        using var dl = new DriverlinkPair();
        // socat's PIPE echoes through its own pipe: blocks of at most PIPE_BUF (4096) keep it from blocking on itself,
        // which under load it did with its default 8 KiB blocks (a test that timed out once). -t 30: the client's FIN
        // comes long before the rate-limited echo has left, and socat's default 0.5 s after an EOF cut the echo short
        // whenever its writes were still blocked then (994,616 of 1,000,000 bytes came back in one run).
        dl.Peer.Start("socat", "-b", "4096", "-t", "30", "TCP-LISTEN:7403,reuseaddr", "PIPE");
        Poll.Until(() => dl.Peer.Exec("ss -lnt").Contains(":7403", StringComparison.Ordinal), Deadline, "the kernel's echo server listening");
        var before = KernelOpens(dl.Host);
        var peerBefore = KernelOpens(dl.Peer);

        var blob = RandomNumberGenerator.GetBytes(1_000_000);
        string sent = Path.Combine(_dir, "sent"), echoed = Path.Combine(_dir, "echoed");
        File.WriteAllBytes(sent, blob);
        LimitPeerSendRate(dl, "4mbit"); // the echo takes 2 s to come back
        // exec all the way down (sh, env, onload-run), so the pid is socat's.
        var client = dl.Host.Start("sh", "-c",
            $"exec env {string.Join(' ', Settings(dl))} {Dist.Bin("onload-run")} socat -b 65536 -t 30 - TCP:{dl.PeerAddress}:7403 < {sent} > {echoed}");

        var stack = OnloadStackdump.WaitUntil(dl.Host, client.Pid, s => s.ConnectedTo(dl.PeerAddress, 7403).Count == 1,
            Deadline, "socat's connection to the kernel echo server");
        Assert.That(stack.Command, Does.StartWith("socat"));
        Assert.That(stack.ConnectedTo(dl.PeerAddress, 7403)[0].LocalAddress, Is.EqualTo(dl.HostAddress));

        if (!client.WaitForExit(Deadline))
            Assert.Fail($"socat did not finish; received {new FileInfo(echoed).Length} B; its stack:\n" +
                dl.Host.Exec($"{Dist.Bin("onload-stackdump")} --pid {client.Pid}") + "\nthe peer:\n" + dl.Peer.Exec("ss -tnoie"));
        Assert.That(client.ExitCode, Is.Zero, client.Stderr);
        Assert.That(File.ReadAllBytes(echoed), Is.EqualTo(blob), "the echo came back byte for byte");
        Assert.That(KernelOpens(dl.Host).Active, Is.EqualTo(before.Active), "the stack side's kernel opened no connection");
        Assert.That(KernelOpens(dl.Peer).Passive, Is.EqualTo(peerBefore.Passive + 1), "the peer's kernel accepted the stack's one");
    }

    [Test]
    public void Thousands_of_connections_one_after_another_under_onload_run_are_all_served_and_leave_no_port_reserved()
    {
        using var dl = new DriverlinkPair();
        string crr = Dist.TestProgram("tcp_crr");
        var server = dl.Peer.Start(crr, "server", dl.PeerAddress, "7404", "64");
        server.WaitForOutput("server ready", Deadline);
        NsProcess Client(int seconds) => dl.Host.Start("sh", "-c",
            $"exec env {string.Join(' ', Settings(dl))} {Dist.Bin("onload-run")} {crr} client {dl.PeerAddress} 7404 64 {seconds} 200");
        // A first client sets up what the daemon keeps for the interface (its queue's socket, shared rings' doorbells).
        var first = Client(1);
        Assert.That(first.WaitForExit(Deadline), Is.True, "the first client finished");
        Poll.Until(() => dl.Daemon.Stderr.Contains("VNIC 1 on", StringComparison.Ordinal) &&
            dl.Daemon.Stderr.Contains("released", StringComparison.Ordinal), Deadline, "the first client's VNIC released");
        int daemonFds = dl.DaemonFootprint().Fds;
        var before = KernelOpens(dl.Host);

        // Connect, 64 B each way, the kernel server closes first, close: for 2 s after 200 warm-up connections.
        var client = Client(2);
        Assert.That(client.WaitForExit(Deadline), Is.True, "the client finished");
        Assert.That(client.ExitCode, Is.Zero, client.Stderr);
        var result = System.Text.RegularExpressions.Regex.Match(client.Stdout, @"tcp_crr: (\d+) connections .* errors (\d+)");
        Assert.That(result.Success, Is.True, client.Stdout);
        long made = long.Parse(result.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture);
        Assert.That(made, Is.GreaterThanOrEqualTo(1000), "thousands of connections, one after another");
        Assert.That(result.Groups[2].Value, Is.EqualTo("0"), "every connection was served");
        Assert.That(KernelOpens(dl.Host).Active, Is.EqualTo(before.Active), "all of them on the stack, none by the kernel");

        // The daemon held a kernel socket per port steered to the client: with the client gone, none is left.
        Poll.Until(() => dl.Daemon.Stderr.Split('\n').Count(l => l.Contains("released", StringComparison.Ordinal)) == 2,
            Deadline, "the second client's VNIC released");
        Assert.That(dl.DaemonFootprint().Fds, Is.EqualTo(daemonFds),
            $"the daemon's descriptors back to where they started: {string.Join(", ", dl.DaemonDescriptors())}");
    }

    [Test]
    public void A_program_that_opens_no_inet_stream_socket_never_loads_the_stack()
    {
        // No namespace needed: nothing here reaches the network.
        var psi = new ProcessStartInfo(Dist.Bin("onload-run")) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (string a in new[] { "sh", "-c", "cat /proc/$$/maps" })
            psi.ArgumentList.Add(a);
        psi.Environment["ONLOAD_DEBUG"] = "1";
        using var p = Process.Start(psi)!;
        string maps = p.StandardOutput.ReadToEnd();
        string stderr = p.StandardError.ReadToEnd();
        Assert.That(p.WaitForExit(Deadline), Is.True);
        Assert.That(p.ExitCode, Is.Zero, stderr);
        Assert.That(maps, Does.Contain("libonload.so"), "the interposer is preloaded");
        Assert.That(maps, Does.Not.Contain("libonload_stack.so"), "the stack library is not");
        Assert.That(stderr, Does.Contain("preloaded").And.Not.Contain("loaded /"), "nor was it loaded and unloaded");
    }
}
