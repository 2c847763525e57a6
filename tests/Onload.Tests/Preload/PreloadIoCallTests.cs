using System.Text;
using Onload.Tests.Driverlink;
using Onload.Tests.Interop;
using Onload.Tests.Netns;

namespace Onload.Tests.Preload;

/// <summary>
/// The socket calls beyond read and write, made by a C program under <c>onload-run</c> on one accelerated connection to
/// a kernel socat echo server: <c>dist/tests/io_calls</c> (preload/tests/io_calls.c) checks each call's result as Linux
/// gives it; here the test checks that every step passed and that the connection was the stack's.
/// </summary>
[Category("netns")]
[NonParallelizable]
public class PreloadIoCallTests
{
    private static readonly TimeSpan Deadline = DriverlinkPair.Deadline;

    [Test]
    public void Vectored_and_message_io_peek_ioctl_dup_ppoll_pselect_and_the_fortified_calls_work_on_an_accelerated_connection()
    {
        string helper = Dist.TestProgram("io_calls");
        string symbols = Encoding.ASCII.GetString(File.ReadAllBytes(helper));
        foreach (string chk in new[] { "__read_chk", "__recv_chk", "__recvfrom_chk", "__poll_chk", "__ppoll_chk" })
            Assert.That(symbols, Does.Contain(chk), $"the helper is built to call {chk}");

        using var dl = new DriverlinkPair();
        dl.Peer.Start("socat", "-b", "4096", "TCP-LISTEN:7420,reuseaddr", "PIPE");
        Poll.Until(() => dl.Peer.Exec("ss -lnt").Contains(":7420", StringComparison.Ordinal), Deadline, "the kernel's echo server listening");

        var p = dl.Host.Start("env", [$"ONLOAD_INTERFACE={dl.Interface}", $"ONLOAD_DRIVERD_SOCKET={dl.SocketName}",
            "ONLOAD_DRIVERD_AUTOSTART=0", "ONLOAD_DEBUG=1", Dist.Bin("onload-run"), helper, dl.PeerAddress, "7420"]);
        Assert.That(p.WaitForExit(Deadline), Is.True, $"io_calls finished; stdout: {p.Stdout}");
        Assert.That(p.ExitCode, Is.Zero, p.Stdout + p.Stderr);
        foreach (string step in new[] { "ok writev readv", "ok sendmsg FIONREAD=100", "ok MSG_PEEK recvmsg", "ok SIOCOUTQ=",
                     "ok FIONBIO", "ok dup dup2 dup3 F_DUPFD", "ok ppoll pselect", "ok sendfile", "ok epoll_pwait2",
                     "ok close_range", "ok done" })
            Assert.That(p.Stdout, Does.Contain(step));
        Assert.That(p.Stderr, Does.Contain("connecting (connection").And.Not.Contain("handed to the kernel"), "the connection was the stack's");
        Assert.That(p.Stderr, Does.Contain("stays with its other fds"), "closing a dup kept the connection");
        var closeRange = System.Text.RegularExpressions.Regex.Match(p.Stdout, @"ok close_range (\d+) (\d+)");
        foreach (var fd in new[] { closeRange.Groups[1].Value, closeRange.Groups[2].Value })
            Assert.That(p.Stderr, Does.Contain($"fd {fd} closed (connection"), $"close_range let go of fd {fd}'s stack socket");
    }
}
