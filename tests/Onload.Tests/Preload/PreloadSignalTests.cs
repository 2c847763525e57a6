using Onload.Tests.Driverlink;
using Onload.Tests.Interop;
using Onload.Tests.Netns;

namespace Onload.Tests.Preload;

/// <summary>
/// Signal handlers that make socket calls: <c>dist/tests/signal_writer</c> (preload/tests/signal_writer.c) streams
/// through an accelerated connection while a 1 ms SIGALRM handler sends on the same socket. A handler that lands
/// while its thread is inside the stack must run after it leaves, not inside: every byte, the stream's and the
/// handler's, must come back from the kernel's echo server, and the program must not hang.
/// </summary>
[Category("netns")]
[NonParallelizable]
public class PreloadSignalTests
{
    private static readonly TimeSpan Deadline = DriverlinkPair.Deadline;

    [Test]
    public void A_signal_handler_writing_to_the_socket_the_program_streams_through_loses_nothing_and_never_deadlocks()
    {
        string helper = Dist.TestProgram("signal_writer");

        using var dl = new DriverlinkPair();
        dl.Peer.Start("socat", "-b", "4096", "TCP-LISTEN:7450,reuseaddr", "PIPE");
        Poll.Until(() => dl.Peer.Exec("ss -lnt").Contains(":7450", StringComparison.Ordinal), Deadline, "the kernel's echo server listening");

        var p = dl.Host.Start("env", [.. PreloadTcpTests.Settings(dl), Dist.Bin("onload-run"), helper, dl.PeerAddress, "7450"]);
        Assert.That(p.WaitForExit(Deadline), Is.True, $"signal_writer finished (no deadlock); stdout: {p.Stdout}");
        Assert.That(p.ExitCode, Is.Zero, p.Stdout + p.Stderr);
        var words = p.Stdout.Split(' ', StringSplitOptions.RemoveEmptyEntries);
        int ticks = int.Parse(words[1], System.Globalization.CultureInfo.InvariantCulture);
        Assert.That(ticks, Is.GreaterThanOrEqualTo(50), "the handler ran, and sent, many times during the stream");
        Assert.That(p.Stderr, Does.Contain("connecting (connection").And.Not.Contain("handed to the kernel"), "the connection was the stack's");
    }
}
