using System.Security.Cryptography;
using Onload.Tests.Driverlink;
using Onload.Tests.Interop;
using Onload.Tests.Netns;

namespace Onload.Tests.Preload;

/// <summary>
/// Programs that link the stack's C API (onload.h, libonload_ext.so) without onload-run: the sample
/// <c>onload-ext-echo</c> serving kernel clients on the stack beside a kernel listener, and <c>zc_probe</c>
/// (preload/tests/zc_probe.c) driving zero-copy receive and send against a kernel server that checks the bytes.
/// </summary>
[Category("netns")]
[NonParallelizable]
public class ExtApiTests
{
    private static readonly TimeSpan Deadline = DriverlinkPair.Deadline;

    /// <summary>A kernel TCP server: sends argv[2] bytes of the helpers' pattern (seed 1), then reads to the end,
    /// checks argv[3] bytes of seed 2 and answers "ok N".</summary>
    private const string PatternServer = """
        import socket, sys
        def pattern(n, seed):
            return bytes((((i + seed) % 251) ^ (i >> 11)) & 0xff for i in range(n))
        port, send_n, recv_n = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
        expect, data = pattern(recv_n, 2), pattern(send_n, 1)
        s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", port)); s.listen(1)
        print("listening", flush=True)
        c, _ = s.accept()
        c.sendall(data)
        print("sent", send_n, flush=True)
        got = bytearray()
        while True:
            b = c.recv(1 << 20)
            if not b: break
            got += b
        ok = bytes(got) == expect
        print("received", len(got), "intact" if ok else "DAMAGED", flush=True)
        c.sendall(("ok %d\n" % len(got) if ok else "bad %d\n" % len(got)).encode())
        c.close()
        """;

    private static string[] ExtEnv(DriverlinkPair dl) =>
        [$"ONLOAD_INTERFACE={dl.Interface}", $"ONLOAD_DRIVERD_SOCKET={dl.SocketName}", "ONLOAD_DRIVERD_AUTOSTART=0"];

    [Test]
    public void Zero_copy_pieces_are_released_once_holding_them_closes_the_window_and_every_byte_arrives_intact()
    {
        const int ToReceive = 12 << 20, ToSend = 3 << 20;
        using var dl = new DriverlinkPair();
        var server = dl.Peer.Start("/usr/bin/python3", "-c", PatternServer, "7490", $"{ToReceive}", $"{ToSend}");
        Poll.Until(() => server.Stdout.Contains("listening", StringComparison.Ordinal), Deadline, "the kernel server listening");

        var probe = dl.Host.Start("env", [.. ExtEnv(dl), Dist.TestProgram("zc_probe"), dl.PeerAddress, "7490",
            $"{ToReceive}", $"{ToSend}"]);
        Assert.That(probe.WaitForExit(TimeSpan.FromSeconds(60)), Is.True, $"zc_probe finished; stdout: {probe.Stdout}");
        Assert.That(probe.ExitCode, Is.Zero, probe.Stdout + probe.Stderr);
        TestContext.Out.WriteLine(probe.Stdout);
        foreach (string step in new[] { "ok on the stack", "ok held", "ok each piece is released once",
                     "ok recv copies past the lent pieces", "ok released out of order", $"ok received {ToReceive} bytes intact",
                     $"ok zero-copy sends of {ToSend} bytes complete", $"peer: ok {ToSend}", "ok done" })
            Assert.That(probe.Stdout, Does.Contain(step));

        // What the kernel server saw: all it sent taken, and the bytes sent by zero-copy intact.
        Assert.That(server.WaitForExit(Deadline), Is.True, server.Stdout);
        Assert.That(server.Stdout, Does.Contain($"sent {ToReceive}").And.Contain($"received {ToSend} intact"));

        // Back-pressure, not loss: what the probe held stayed below what the server had to send, so the server's
        // sendall blocked until the pieces came back (its "sent" line came after them).
        var held = System.Text.RegularExpressions.Regex.Match(probe.Stdout, @"ok held (\d+) bytes");
        Assert.That(long.Parse(held.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture),
            Is.GreaterThan(0).And.LessThan(ToReceive));
    }

    [Test]
    public void The_c_sample_echoes_kernel_clients_on_the_stack_by_zero_copy_beside_its_kernel_listener()
    {
        using var dl = new DriverlinkPair();
        var echo = dl.Host.Start("env", [.. ExtEnv(dl), Dist.Bin("onload-ext-echo"), "--kernel-port", "7492",
            "--stack-name", "sample", "7491"]);
        try
        {
            Poll.Until(() => echo.Stdout.Contains("listening on 7491 (stack) and 7492 (kernel)", StringComparison.Ordinal),
                Deadline, $"the sample listening; stderr: {echo.Stderr}");
            var payload = RandomNumberGenerator.GetBytes(2 << 20);
            string input = Path.Combine(Path.GetTempPath(), $"ext-echo-{Environment.ProcessId}.in");
            string output = Path.Combine(Path.GetTempPath(), $"ext-echo-{Environment.ProcessId}.out");
            File.WriteAllBytes(input, payload);
            try
            {
                foreach (int port in new[] { 7491, 7492 })
                {
                    // socat sends the file, half-closes, and writes what comes back until the sample's FIN.
                    File.Delete(output);
                    dl.Peer.Exec($"socat -b 65536 -t 20 OPEN:{input}!!CREATE:{output} TCP:{dl.HostAddress}:{port}");
                    Assert.That(SHA256.HashData(File.ReadAllBytes(output)), Is.EqualTo(SHA256.HashData(payload)),
                        $"port {port} echoed 2 MB intact");
                }
            }
            finally
            {
                File.Delete(input);
                File.Delete(output);
            }
            Poll.Until(() => echo.Stdout.Contains("accepted fd", StringComparison.Ordinal) &&
                             echo.Stdout.Contains(": kernel", StringComparison.Ordinal), Deadline, echo.Stdout);
            Assert.That(echo.Stdout, Does.Match(@"accepted fd \d+: stack \d+ 'sample' endpoint \d+ state 1"),
                "the accelerated connection was the stack's, in the named stack, ESTABLISHED");
            Assert.That(echo.Stdout, Does.Contain(": kernel"), "the kernel listener's connection was the kernel's");
            Assert.That(dl.Host.Exec("ss -lnt"), Does.Contain(":7492"), "the kernel holds the kernel listener");
        }
        finally
        {
            echo.Kill();
        }
    }

    [TestCase(false, TestName = "The_extensions_answer_in_a_program_linking_libonload_ext")]
    [TestCase(true, TestName = "The_extensions_answer_the_same_under_onload_run")]
    public void Stack_naming_spin_and_fd_stat(bool underOnloadRun)
    {
        using var dl = new DriverlinkPair();
        string[] run = underOnloadRun ? [Dist.Bin("onload-run")] : [];
        var p = dl.Host.Start("env", [.. ExtEnv(dl), .. run, Dist.TestProgram("ext_calls")]);
        Assert.That(p.WaitForExit(Deadline), Is.True, $"ext_calls finished; stdout: {p.Stdout}");
        Assert.That(p.ExitCode, Is.Zero, p.Stdout + p.Stderr);
        foreach (string step in new[] { "ok present", "ok named stack", "ok dont accelerate", "ok spin", "ok fd_stat", "ok done" })
            Assert.That(p.Stdout, Does.Contain(step));
    }
}
