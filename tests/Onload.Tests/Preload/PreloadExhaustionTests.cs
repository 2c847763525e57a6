using System.Globalization;
using Onload.Tests.Driverlink;
using Onload.Tests.Interop;
using Onload.Tests.Netns;

namespace Onload.Tests.Preload;

/// <summary>
/// An unmodified program (Python) under <c>onload-run</c> running its stack out of sockets (issue 10): with
/// <c>ONLOAD_TCP_SOCKETS=8</c>, the ninth <c>socket()</c> gives EMFILE, or, by default (<c>ONLOAD_NO_FAIL=1</c>), a
/// kernel socket that works as well; closing two makes room for two more on the stack; every socket the program
/// holds then carries its own bytes to a kernel echo server and back. A setting that does not parse is named.
/// </summary>
[Category("netns")]
[Category("hostile")]
[NonParallelizable]
public class PreloadExhaustionTests
{
    private static readonly TimeSpan Deadline = DriverlinkPair.Deadline;

    /// <summary>argv: host port sockets. Prints one line per socket() ("ok" or the errno's name), per socket()
    /// after two were closed ("again ..."), and per echo ("echo ok" or what differed).</summary>
    private const string Program = """
        import errno, socket, sys
        host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
        held = []
        def open_one(prefix):
            try:
                held.append(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
                print(prefix + "ok", flush=True)
            except OSError as e:
                print(prefix + errno.errorcode[e.errno], flush=True)
        for i in range(n):
            open_one("")
        for s in held[:2]:
            s.close()
        del held[:2]
        for i in range(2):
            open_one("again ")
        for i, s in enumerate(held):
            data = bytes((i * 7 + k) % 251 for k in range(20000 + i))
            s.connect((host, port))
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            got = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                got += chunk
            print("echo ok" if got == data else "echo differs: %d of %d bytes" % (len(got), len(data)), flush=True)
            s.close()
        """;

    private static (string Stdout, string Stderr) Run(DriverlinkPair dl, int sockets, params string[] settings)
    {
        var server = dl.Peer.Start("socat", "TCP-LISTEN:7490,reuseaddr,fork", "EXEC:cat");
        Poll.Until(() => dl.Peer.Exec("ss -Htln sport = :7490").Contains(":7490", StringComparison.Ordinal), Deadline, "the echo server listening");
        var program = dl.Host.Start("env", [.. PreloadTcpTests.Settings(dl), .. settings, Dist.Bin("onload-run"),
            "/usr/bin/python3", "-c", Program, dl.PeerAddress, "7490", sockets.ToString(CultureInfo.InvariantCulture)]);
        Assert.That(program.WaitForExit(Deadline), Is.True, $"the program finished; stdout: {program.Stdout}\nstderr: {program.Stderr}");
        server.Kill();
        return (program.Stdout, program.Stderr);
    }

    private static List<string> Lines(string text) => text.Split('\n', StringSplitOptions.RemoveEmptyEntries).ToList();

    private static int Count(string text, string what) =>
        Lines(text).Count(l => l.Contains(what, StringComparison.Ordinal));

    [Test]
    public void A_full_socket_table_gives_EMFILE_and_room_returns_when_sockets_close()
    {
        using var dl = new DriverlinkPair();
        var (stdout, stderr) = Run(dl, 12, "ONLOAD_TCP_SOCKETS=8", "ONLOAD_NO_FAIL=0");
        Assert.That(Lines(stdout), Is.EqualTo((string[])[
            .. Enumerable.Repeat("ok", 8), .. Enumerable.Repeat("EMFILE", 4),
            "again ok", "again ok", .. Enumerable.Repeat("echo ok", 8)]), stderr);
        Assert.That(Count(stderr, "accelerated (connection"), Is.EqualTo(10), "eight sockets, then two more after two closed\n" + stderr);
        TestContext.Out.WriteLine("ONLOAD_TCP_SOCKETS=8, ONLOAD_NO_FAIL=0: sockets 9-12 EMFILE; after two closed two more on the stack; 8 echoes of 20 KB intact");
    }

    [Test]
    public void By_default_sockets_past_the_table_are_the_kernels_and_work_as_well()
    {
        using var dl = new DriverlinkPair();
        var (stdout, stderr) = Run(dl, 12, "ONLOAD_TCP_SOCKETS=8");
        Assert.That(Lines(stdout), Is.EqualTo((string[])[
            .. Enumerable.Repeat("ok", 12), "again ok", "again ok", .. Enumerable.Repeat("echo ok", 12)]), stderr);
        Assert.That(Count(stderr, "accelerated (connection"), Is.EqualTo(10), stderr);
        Assert.That(Count(stderr, "the stack has no room"), Is.EqualTo(4), "the four past the table went to the kernel\n" + stderr);
        TestContext.Out.WriteLine("ONLOAD_TCP_SOCKETS=8: sockets 9-12 on the kernel (ONLOAD_NO_FAIL=1); 12 echoes of 20 KB intact");
    }

    [Test]
    public void A_setting_that_does_not_parse_is_named_and_the_program_runs_on_the_kernel()
    {
        using var dl = new DriverlinkPair();
        var (stdout, stderr) = Run(dl, 2, "ONLOAD_TCP_SOCKETS=lots");
        Assert.That(Lines(stdout), Is.EqualTo((string[])["ok", "ok", "again ok", "again ok", "echo ok", "echo ok"]), stderr);
        Assert.That(stderr, Does.Contain("ONLOAD_TCP_SOCKETS=lots"), "the warning names the setting");
        Assert.That(Count(stderr, "accelerated (connection"), Is.Zero, stderr);
    }
}
