using System.Security.Cryptography;
using Onload.Tests.Interop;
using Onload.Tests.Netns;

namespace Onload.Tests.Driverlink;

/// <summary>The daemon's life: started on demand by the first client, gone a grace period after the last, and a
/// restarted daemon taking over the program it left pinned.</summary>
[Category("netns")]
[NonParallelizable]
public class DaemonLifecycleTests
{
    private static readonly TimeSpan Deadline = DriverlinkPair.Deadline;

    /// <summary>The daemons in the fixture's stack-side namespace. Other tests' daemons (other namespaces) come and go
    /// meanwhile: the namespace's own pid list is read, and a process gone before its command line is read is none.</summary>
    private static int[] DaemonPids(DriverlinkPair dl) =>
        Netns.Netns.Run($"ip netns pids {dl.Host.Name}").Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(int.Parse)
            .Where(IsDaemon).ToArray();

    private static bool IsDaemon(int pid)
    {
        try
        {
            return File.ReadAllText($"/proc/{pid}/cmdline").Split('\0')[0].EndsWith("onload-driverd", StringComparison.Ordinal);
        }
        catch (IOException)
        {
            return false;
        }
    }

    [Test]
    public void A_client_starts_the_daemon_which_leaves_a_grace_period_after_the_last_client_and_detaches()
    {
        using var dl = DriverlinkPair.WithoutDaemon();
        string log = Path.Combine(TestContext.CurrentContext.WorkDirectory, $"driverd-{Environment.ProcessId}-{dl.Pair.Instance}.log");
        try
        {
            var echo = dl.Host.Start("env", [$"ONLOAD_DRIVERD_SOCKET={dl.SocketName}", $"ONLOAD_DRIVERD={Dist.Bin("onload-driverd")}",
                "ONLOAD_DRIVERD_GRACE=1", $"ONLOAD_DRIVERD_LOG={log}", Dist.Bin("onload-echo"), "--interface", dl.Interface, "--tcp", "7402"]);
            echo.WaitForOutput("onload-echo: ready", Deadline);
            var pids = DaemonPids(dl);
            Assert.That(pids, Has.Length.EqualTo(1), "one daemon started on demand");
            int daemon = pids[0];
            Assert.That(Netns.Netns.Run($"ps -o sid= -p {daemon}").Trim(), Is.EqualTo(daemon.ToString(System.Globalization.CultureInfo.InvariantCulture)),
                "in a session of its own (setsid), so the client's terminal and exit leave it be");
            Assert.That(dl.XdpProgramIds(), Has.Length.EqualTo(1), "the daemon attached its program");

            var blob = RandomNumberGenerator.GetBytes(100_000);
            Assert.That(dl.Peer.Pipe($"socat -b 65536 -t 30 - TCP:{dl.HostAddress}:7402", blob, Deadline), Is.EqualTo(blob));

            echo.Kill();
            Poll.Until(() => !Directory.Exists($"/proc/{daemon}"), Deadline, "the daemon exiting after its grace period");
            Assert.That(File.ReadAllText(log), Does.Contain("no client for 1 s: exiting"));
            Assert.That(dl.XdpProgramIds(), Is.Empty, "nothing is left attached to the interface");
        }
        finally
        {
            File.Delete(log);
        }
    }

    [Test]
    public void A_restarted_daemon_adopts_the_pinned_program_and_serves_new_clients()
    {
        // `ip netns exec` gives the daemon a mount namespace of its own with /sys mounted afresh, so a bpffs it finds
        // (or mounts) at /sys/fs/bpf there dies with it, pins and all. Pins outlive the daemon on a bpffs mounted in
        // the host's mount namespace, which its own inherits: as a deployment would mount one for --pin-root.
        string pins = $"/run/onload-test-bpf-{Environment.ProcessId}";
        Directory.CreateDirectory(pins);
        Netns.Netns.Run($"mount -t bpf bpf {pins}");
        try
        {
            using var dl = new DriverlinkPair("--pin-root", pins);
            var first = dl.StartClient("onload-echo", "--interface", dl.Interface, "--mode", "exclusive", "--udp", "7501");
            first.WaitForOutput("onload-echo: ready", Deadline);
            var ids = dl.XdpProgramIds();
            Assert.That(ids, Has.Length.EqualTo(1));

            Netns.Netns.Run($"kill -9 {dl.Daemon.Pid}");
            Assert.That(dl.Daemon.WaitForExit(Deadline), Is.True);
            Assert.That(dl.XdpProgramIds(), Is.EqualTo(ids), "the pinned link keeps the program attached with no daemon");
            first.Kill();

            var again = dl.StartDaemon("--pin-root", pins);
            Poll.Until(() => again.Stderr.Contains("listening", StringComparison.Ordinal), Deadline, "the new daemon");
            var second = dl.StartClient("onload-echo", "--interface", dl.Interface, "--mode", "exclusive", "--udp", "7502");
            second.WaitForOutput("onload-echo: ready", Deadline);
            Poll.Until(() => again.Stderr.Contains("adopted the pinned XDP program", StringComparison.Ordinal), Deadline, "the adoption");
            Assert.That(dl.XdpProgramIds(), Is.EqualTo(ids), "the same program, never detached");
            var msg = "after the restart\n"u8.ToArray();
            Assert.That(dl.Peer.Pipe($"socat -t 1 -T 3 - UDP:{dl.HostAddress}:7502", msg, Deadline), Is.EqualTo(msg));
        }
        finally
        {
            Netns.Netns.TryRun($"umount -l {pins}");
            Netns.Netns.TryRun($"rmdir {pins}");
        }
    }
}
