using Onload.Tests.Driverlink;
using Onload.Tests.Interop;
using Onload.Tests.Netns;

namespace Onload.Tests.Preload;

/// <summary>
/// fork() under <c>onload-run</c>, as far as it goes today: a forked child leaves its parent's stack alone (the
/// sockets it inherited fail with a warning instead of taking the parent's traffic, its own sockets are the kernel's,
/// and its exit() does not close the parent's connections), and the parent's connection goes on intact.
/// <c>dist/tests/fork_probe</c> is preload/tests/fork_probe.c.
/// </summary>
[Category("netns")]
[NonParallelizable]
public class PreloadForkTests
{
    private static readonly TimeSpan Deadline = DriverlinkPair.Deadline;

    [Test]
    public void A_forked_child_that_exits_leaves_the_parents_accelerated_connection_working()
    {
        string helper = Dist.TestProgram("fork_probe");

        using var dl = new DriverlinkPair();
        dl.Peer.Start("socat", "-b", "4096", "TCP-LISTEN:7460,reuseaddr,fork", "PIPE");
        Poll.Until(() => dl.Peer.Exec("ss -lnt").Contains(":7460", StringComparison.Ordinal), Deadline, "the kernel's echo server listening");
        var hostBefore = PreloadTcpTests.KernelOpens(dl.Host);

        var p = dl.Host.Start("env", [.. PreloadTcpTests.Settings(dl), Dist.Bin("onload-run"), helper, dl.PeerAddress, "7460"]);
        Assert.That(p.WaitForExit(Deadline), Is.True, $"fork_probe finished; stdout: {p.Stdout}");
        Assert.That(p.ExitCode, Is.Zero, p.Stdout + p.Stderr);
        Assert.That(p.Stdout, Does.Contain("parent before fork: ok").And.Contain("child on a socket of its own: ok")
            .And.Contain("child exited 0").And.Contain("parent after fork: ok"));
        Assert.That(p.Stdout, Does.Contain("child on the inherited socket: -1"), "the child could not use its parent's connection");
        Assert.That(p.Stderr, Does.Contain("was accelerated in the parent").And.Contain("opens its sockets on the kernel"));
        Assert.That(PreloadTcpTests.KernelOpens(dl.Host).Active, Is.EqualTo(hostBefore.Active + 1),
            "the child's own connection was the kernel's; the parent's was the stack's");
    }

    [Test]
    public void A_vforked_child_closing_its_copy_before_exec_leaves_the_parents_connection_working()
    {
        // vfork's child runs in the parent's memory: through the shim its close() would close the parent's stack
        // socket. The shim makes vfork a fork whose parent waits for the exec, as vfork's does.
        string helper = Dist.TestProgram("vfork_probe");
        using var dl = new DriverlinkPair();
        dl.Peer.Start("socat", "-b", "4096", "TCP-LISTEN:7462,reuseaddr", "PIPE");
        Poll.Until(() => dl.Peer.Exec("ss -lnt").Contains(":7462", StringComparison.Ordinal), Deadline, "the kernel's echo server listening");

        var p = dl.Host.Start("env", [.. PreloadTcpTests.Settings(dl), Dist.Bin("onload-run"), helper, dl.PeerAddress, "7462"]);
        Assert.That(p.WaitForExit(Deadline), Is.True, $"vfork_probe finished; stdout: {p.Stdout}");
        Assert.That(p.ExitCode, Is.Zero, p.Stdout + p.Stderr);
        Assert.That(p.Stdout, Does.Contain("ok before vfork").And.Contain("ok after the child closed its copy and exec'd").And.Contain("ok done"));
        Assert.That(p.Stderr, Does.Contain("connecting (connection").And.Not.Contain("handed to the kernel"), "the connection was the stack's");
    }
}
