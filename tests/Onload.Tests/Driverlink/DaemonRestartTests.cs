using System.Diagnostics;
using System.Security.Cryptography;
using System.Text.RegularExpressions;
using Onload.Tests.Interop;
using Onload.Tests.Netns;

namespace Onload.Tests.Driverlink;

/// <summary>
/// onload-driverd killed (SIGKILL) under running clients and started again: the clients reattach to the new daemon
/// with the rings or socket they kept and every port they hold, so their TCP connections go on with every byte; and
/// when everything has exited nothing is left on the interface.
/// </summary>
[Category("netns")]
[Category("hostile")]
[NonParallelizable]
public class DaemonRestartTests
{
    private static readonly TimeSpan Deadline = DriverlinkPair.Deadline;

    /// <summary>A bpffs for the daemons' pins, mounted in the host's mount namespace: `ip netns exec` gives each
    /// daemon a mount namespace whose own /sys/fs/bpf dies with it (see DaemonLifecycleTests).</summary>
    private sealed class PinRoot : IDisposable
    {
        public string Path { get; } = $"/run/onload-test-bpf-restart-{Environment.ProcessId}";

        public PinRoot()
        {
            Directory.CreateDirectory(Path);
            Netns.Netns.Run($"mount -t bpf bpf {Path}");
        }

        /// <summary>What is pinned under the root (in any namespace's and interface's directory), as relative paths;
        /// not the files every bpffs has at its root (maps.debug, progs.debug).</summary>
        public string[] Pinned() =>
            Directory.GetFiles(Path, "*", SearchOption.AllDirectories).Select(p => p[(Path.Length + 1)..])
                .Where(p => p.Contains('/', StringComparison.Ordinal)).ToArray();

        public void Dispose()
        {
            Netns.Netns.TryRun($"umount -l {Path}");
            Netns.Netns.TryRun($"rmdir {Path}");
        }
    }

    [Test]
    public void A_client_streaming_while_the_daemon_is_killed_and_restarted_twice_reattaches_each_time_and_loses_no_byte(
        [Values("shared", "exclusive")] string mode)
    {
        using var pins = new PinRoot();
        using var dl = new DriverlinkPair("--pin-root", pins.Path);
        string dir = TestContext.CurrentContext.WorkDirectory;
        string input = Path.Combine(dir, $"restart-in-{Environment.ProcessId}-{dl.Pair.Instance}");
        string output = input.Replace("-in-", "-out-", StringComparison.Ordinal);
        try
        {
            var echo = dl.Host.Start("env", [$"ONLOAD_DRIVERD_SOCKET={dl.SocketName}", "ONLOAD_DRIVERD_AUTOSTART=0",
                "ONLOAD_DRIVERD_REATTACH=15", Dist.Bin("onload-echo"), "--interface", dl.Interface, "--mode", mode, "--tcp", "7702"]);
            echo.WaitForOutput("onload-echo: ready", Deadline);
            var program = dl.XdpProgramIds();

            // The peer's sends go through a 40 Mbit/s tbf, so the 12 MB stream lasts ~2.5 s each way and the daemon
            // dies in the middle of it; the echo comes back unshaped.
            dl.Peer.Exec($"tc qdisc add dev {dl.Pair.KernelIf} root tbf rate 40mbit burst 64kb latency 400ms");
            var blob = RandomNumberGenerator.GetBytes(12_000_000);
            File.WriteAllBytes(input, blob);
            var stream = dl.Peer.Start("sh", "-c", $"socat -b 65536 -t 30 - TCP:{dl.HostAddress}:7702 < {input} > {output}");
            Poll.Until(() => File.Exists(output) && new FileInfo(output).Length > 2_000_000, Deadline, "a quarter of the stream echoed");
            long before = new FileInfo(output).Length;

            var killed = Stopwatch.StartNew();
            Netns.Netns.Run($"kill -9 {dl.Daemon.Pid}");
            Assert.That(dl.Daemon.WaitForExit(Deadline), Is.True);
            Poll.Until(() => echo.Stderr.Contains("reattaching", StringComparison.Ordinal), Deadline, "the client noticing its daemon gone: " + echo.Stderr);
            Assert.That(dl.XdpProgramIds(), Is.EqualTo(program), "the pinned program stays with no daemon");

            var again = dl.StartDaemon("--pin-root", pins.Path, "--grace", "1");
            Poll.Until(() => echo.Stderr.Contains("reattached to onload-driverd", StringComparison.Ordinal), Deadline,
                "the client reattaching: " + echo.Stderr + again.Stderr);
            var restart = killed.Elapsed;

            // And again, later in the stream: the new daemon's death is no different.
            Poll.Until(() => new FileInfo(output).Length > 6_000_000, Deadline, "half the stream echoed");
            Netns.Netns.Run($"kill -9 {again.Pid}");
            Assert.That(again.WaitForExit(Deadline), Is.True);
            again = dl.StartDaemon("--pin-root", pins.Path, "--grace", "1");
            Poll.Until(() => Regex.Matches(echo.Stderr, "reattached to onload-driverd").Count == 2, Deadline,
                "the client reattaching a second time: " + echo.Stderr + again.Stderr);
            Assert.That(stream.WaitForExit(Deadline), Is.True, "the stream finished");
            byte[] back = File.ReadAllBytes(output);
            string took = string.Join(" and ", Regex.Matches(echo.Stderr, @"after (\d+) ms").Select(m => m.Groups[1].Value));
            TestContext.Out.WriteLine($"{mode}: {before:N0} B echoed before the kill; daemon killed to client reattached {restart.TotalMilliseconds:0} ms " +
                $"(client's own count from noticing, both restarts: {took} ms); {back.Length:N0} of {blob.Length:N0} B back; pins: {string.Join(", ", pins.Pinned())}");
            Assert.That(back.Length, Is.EqualTo(blob.Length), stream.Stderr + echo.Stderr);
            Assert.That(back.AsSpan().SequenceEqual(blob), Is.True, "every byte back, in order");
            // The log comes through a pipe the test reads asynchronously: wait for it rather than race it.
            Poll.Until(() => again.Stderr.Contains("adopted the pinned XDP program", StringComparison.Ordinal) &&
                again.Stderr.Contains("reattached)", StringComparison.Ordinal), Deadline, "the new daemon's log of the reattachment: " + again.Stderr);
            Assert.That(dl.XdpProgramIds(), Is.EqualTo(program), "the same program all along");

            // Everything exits: the client, then the daemon after its grace period, which takes the program and pins.
            Netns.Netns.Run($"kill -9 {echo.Pid}");
            Assert.That(echo.WaitForExit(Deadline), Is.True);
            Assert.That(again.WaitForExit(Deadline), Is.True, "the new daemon leaving after its grace period");
            Assert.That(dl.XdpProgramIds(), Is.Empty, "nothing attached to the interface");
            Assert.That(pins.Pinned(), Is.Empty, "no pins left");
        }
        finally
        {
            File.Delete(input);
            File.Delete(output);
        }
    }

    [Test]
    public void A_client_no_daemon_takes_back_in_time_fails_cleanly_and_its_peer_sees_the_end_once_a_daemon_runs()
    {
        using var pins = new PinRoot();
        using var dl = new DriverlinkPair("--pin-root", pins.Path);
        var echo = dl.Host.Start("env", [$"ONLOAD_DRIVERD_SOCKET={dl.SocketName}", "ONLOAD_DRIVERD_AUTOSTART=0",
            "ONLOAD_DRIVERD_REATTACH=1", Dist.Bin("onload-echo"), "--interface", dl.Interface, "--mode", "shared", "--tcp", "7703"]);
        echo.WaitForOutput("onload-echo: ready", Deadline);
        var stream = dl.Peer.Start("sh", "-c", $"head -c 1000000000 /dev/zero | socat -b 65536 - TCP:{dl.HostAddress}:7703 > /dev/null");
        Poll.Until(() => dl.Peer.Exec("ss -tn state established").Contains($"{dl.HostAddress}:7703", StringComparison.Ordinal),
            Deadline, "the stream connected");

        Netns.Netns.Run($"kill -9 {dl.Daemon.Pid}");
        Assert.That(dl.Daemon.WaitForExit(Deadline), Is.True);
        Poll.Until(() => echo.Stderr.Contains("could not reattach", StringComparison.Ordinal), Deadline, "the client giving up: " + echo.Stderr);
        TestContext.Out.WriteLine(echo.Stderr.Trim());
        Assert.That(echo.Stderr, Does.Contain("no daemon took it back within 1 s").And.Contain("failed (ENETDOWN)")
            .And.Contain("restart the program once onload-driverd runs"));

        // The next daemon (a service manager's, or the one the next client starts) adopts the pins at once, removes
        // the filters nobody claimed when its window ends, and leaves after its grace period with the program: the
        // peer's segments then reach the kernel, which has no connection for them and resets it.
        var again = dl.StartDaemon("--pin-root", pins.Path, "--grace", "1", "--reattach-window", "1");
        Assert.That(stream.WaitForExit(Deadline), Is.True, "the peer saw its connection end");
        Assert.That(stream.ExitCode, Is.Not.EqualTo(0), "reset: " + stream.Stderr);
        Assert.That(again.WaitForExit(Deadline), Is.True, "the new daemon leaving after its grace period: " + again.Stderr);
        Assert.That(again.Stderr, Does.Contain("adopted the pinned XDP program"));
        Netns.Netns.Run($"kill -9 {echo.Pid}");
        Assert.That(echo.WaitForExit(Deadline), Is.True);
        Assert.That(dl.XdpProgramIds(), Is.Empty, "nothing attached to the interface");
        Assert.That(pins.Pinned(), Is.Empty, "no pins left");
    }

    [Test]
    public void A_client_whose_on_demand_daemon_is_killed_starts_the_next_one_itself_and_loses_no_byte()
    {
        using var dl = DriverlinkPair.WithoutDaemon();
        string dir = TestContext.CurrentContext.WorkDirectory;
        string log = Path.Combine(dir, $"restart-driverd-{Environment.ProcessId}-{dl.Pair.Instance}.log");
        string input = Path.Combine(dir, $"restart-in-{Environment.ProcessId}-{dl.Pair.Instance}");
        string output = input.Replace("-in-", "-out-", StringComparison.Ordinal);
        try
        {
            // As a program is run: the daemon started on demand (into the client's mount namespace, where the bpffs
            // it mounts for its pins lives as long as the client), and started again by the client when it dies.
            var echo = dl.Host.Start("env", [$"ONLOAD_DRIVERD_SOCKET={dl.SocketName}", $"ONLOAD_DRIVERD={Dist.Bin("onload-driverd")}",
                "ONLOAD_DRIVERD_GRACE=1", $"ONLOAD_DRIVERD_LOG={log}", Dist.Bin("onload-echo"), "--interface", dl.Interface, "--tcp", "7704"]);
            echo.WaitForOutput("onload-echo: ready", Deadline);
            int first = DaemonPid(dl);
            dl.Peer.Exec($"tc qdisc add dev {dl.Pair.KernelIf} root tbf rate 40mbit burst 64kb latency 400ms");
            var blob = RandomNumberGenerator.GetBytes(12_000_000);
            File.WriteAllBytes(input, blob);
            var stream = dl.Peer.Start("sh", "-c", $"socat -b 65536 -t 30 - TCP:{dl.HostAddress}:7704 < {input} > {output}");
            Poll.Until(() => File.Exists(output) && new FileInfo(output).Length > 2_000_000, Deadline, "a quarter of the stream echoed");

            Netns.Netns.Run($"kill -9 {first}");
            Poll.Until(() => echo.Stderr.Contains("reattached to onload-driverd", StringComparison.Ordinal), Deadline,
                "the client starting a daemon and reattaching: " + echo.Stderr);
            int second = DaemonPid(dl);
            Assert.That(second, Is.Not.EqualTo(first));
            Assert.That(stream.WaitForExit(Deadline), Is.True, "the stream finished");
            byte[] back = File.ReadAllBytes(output);
            TestContext.Out.WriteLine($"on demand: {back.Length:N0} of {blob.Length:N0} B back; " + Regex.Match(echo.Stderr, @"reattached[^\n]*").Value);
            Assert.That(back.AsSpan().SequenceEqual(blob), Is.True, $"every byte back, in order ({back.Length} of {blob.Length} B) " + stream.Stderr);

            Netns.Netns.Run($"kill -9 {echo.Pid}");
            Assert.That(echo.WaitForExit(Deadline), Is.True);
            Poll.Until(() => !Directory.Exists($"/proc/{second}"), Deadline, "the second daemon leaving after its grace period");
            Assert.That(dl.XdpProgramIds(), Is.Empty, "nothing attached to the interface");
            Assert.That(File.ReadAllText(log), Does.Contain("adopted the pinned XDP program"));
        }
        finally
        {
            File.Delete(input);
            File.Delete(output);
            File.Delete(log);
        }
    }

    [Test]
    public void An_unmodified_program_under_onload_run_reattaches_and_its_stream_comes_back_whole()
    {
        using var pins = new PinRoot();
        using var dl = new DriverlinkPair("--pin-root", pins.Path);
        string dir = TestContext.CurrentContext.WorkDirectory;
        string input = Path.Combine(dir, $"restart-run-in-{Environment.ProcessId}-{dl.Pair.Instance}");
        string output = input.Replace("-in-", "-out-", StringComparison.Ordinal);
        try
        {
            var server = dl.Host.Start("env", [.. Onload.Tests.Preload.PreloadTcpTests.Settings(dl), Dist.Bin("onload-run"),
                "socat", "-b", "65536", "TCP-LISTEN:7705,reuseaddr", "PIPE"]);
            server.WaitForOutput("listening", Deadline);
            dl.Peer.Exec($"tc qdisc add dev {dl.Pair.KernelIf} root tbf rate 40mbit burst 64kb latency 400ms");
            var blob = RandomNumberGenerator.GetBytes(12_000_000);
            File.WriteAllBytes(input, blob);
            var stream = dl.Peer.Start("sh", "-c", $"socat -b 65536 -t 30 - TCP:{dl.HostAddress}:7705 < {input} > {output}");
            Poll.Until(() => File.Exists(output) && new FileInfo(output).Length > 2_000_000, Deadline, "a quarter of the stream echoed");

            Netns.Netns.Run($"kill -9 {dl.Daemon.Pid}");
            Assert.That(dl.Daemon.WaitForExit(Deadline), Is.True);
            var again = dl.StartDaemon("--pin-root", pins.Path, "--grace", "1");
            Poll.Until(() => server.Stderr.Contains("reattached to onload-driverd", StringComparison.Ordinal), Deadline,
                "socat's stack reattaching: " + server.Stderr);
            Assert.That(stream.WaitForExit(Deadline), Is.True, "the stream finished");
            byte[] back = File.ReadAllBytes(output);
            TestContext.Out.WriteLine($"onload-run socat: {back.Length:N0} of {blob.Length:N0} B back; " + Regex.Match(server.Stderr, @"reattached[^\n]*").Value);
            Assert.That(back.AsSpan().SequenceEqual(blob), Is.True, $"every byte back, in order ({back.Length} of {blob.Length} B) " + stream.Stderr);
            Assert.That(server.WaitForExit(Deadline), Is.True, "socat ends after its one connection");
            Assert.That(again.WaitForExit(Deadline), Is.True, "the daemon leaving after its grace period");
            Assert.That(dl.XdpProgramIds(), Is.Empty, "nothing attached to the interface");
            Assert.That(pins.Pinned(), Is.Empty, "no pins left");
        }
        finally
        {
            File.Delete(input);
            File.Delete(output);
        }
    }

    /// <summary>The one onload-driverd in the fixture's stack-side namespace (waits for it).</summary>
    private static int DaemonPid(DriverlinkPair dl)
    {
        int pid = 0;
        Poll.Until(() =>
        {
            var pids = Netns.Netns.Run($"ip netns pids {dl.Host.Name}").Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(int.Parse)
                .Where(p => ReadCommand(p).EndsWith("onload-driverd", StringComparison.Ordinal)).ToArray();
            pid = pids.Length == 1 ? pids[0] : 0;
            return pid != 0;
        }, Deadline, "one daemon in the namespace");
        return pid;
    }

    private static string ReadCommand(int pid)
    {
        try
        {
            return File.ReadAllText($"/proc/{pid}/cmdline").Split('\0')[0];
        }
        catch (IOException)
        {
            return "";
        }
    }
}
