using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;
using Onload.Tests.Driverlink;
using Onload.Tests.Interop;
using Onload.Tests.Netns;

namespace Onload.Tests.Preload;

/// <summary>
/// How an accelerated program waits: a thread asleep in a socket call is woken by the stack exactly when its socket
/// becomes ready (so an idle program uses no CPU), and the stack's background thread goes on ACKing and receiving
/// while the program computes without making socket calls.
/// </summary>
[Category("netns")]
[NonParallelizable]
public class PreloadWaitTests
{
    private static readonly TimeSpan Deadline = DriverlinkPair.Deadline;

    /// <summary>CPU time (user + system) the process has used, and the context switches of all its threads: each
    /// wake-up of a sleeping thread is one.</summary>
    private static (TimeSpan Cpu, long Switches) Usage(int pid)
    {
        var stat = File.ReadAllText($"/proc/{pid}/stat");
        // Fields after the command (which may hold spaces) start at ')': utime and stime are the 12th and 13th.
        var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
        long ticks = long.Parse(fields[11], CultureInfo.InvariantCulture) + long.Parse(fields[12], CultureInfo.InvariantCulture);
        long switches = 0;
        foreach (var task in Directory.GetDirectories($"/proc/{pid}/task"))
            try
            {
                foreach (var line in File.ReadLines(task + "/status"))
                    if (line.Contains("ctxt_switches:", StringComparison.Ordinal))
                        switches += long.Parse(line[(line.IndexOf(':') + 1)..].Trim(), CultureInfo.InvariantCulture);
            }
            catch (IOException)
            {
                // the thread ended while being read
            }
        return (TimeSpan.FromSeconds(ticks / 100.0), switches); // USER_HZ is 100 on Linux
    }

    [Test]
    public void An_idle_threaded_http_server_with_an_idle_connection_open_uses_no_cpu()
    {
        // ThreadingHTTPServer: the acceptor sleeps in poll on the listener, and with a kernel client connected that
        // sends nothing, a handler thread sleeps in recv on an idle accelerated connection. Two threads asleep on the
        // one stack was what made the shim cap every sleep at 1 ms (about 1000 wake-ups a second per thread).
        string www = Directory.CreateTempSubdirectory("onload-www-").FullName;
        try
        {
            File.WriteAllText(Path.Combine(www, "index.html"), "hello\n");
            using var dl = new DriverlinkPair();
            using var server = dl.Host.Start("env", [.. PreloadTcpTests.Settings(dl), Dist.Bin("onload-run"),
                "/usr/bin/python3", "-m", "http.server", "7436", "--bind", dl.HostAddress, "--directory", www]);
            server.WaitForOutput("listening", Deadline);
            var page = dl.Peer.Pipe($"curl -sS --max-time 15 http://{dl.HostAddress}:7436/index.html", [], Deadline);
            Assert.That(System.Text.Encoding.ASCII.GetString(page), Is.EqualTo("hello\n"), "the server served a request first");

            using var idle = dl.Peer.Start("/usr/bin/python3", "-c",
                $"import socket, time; s = socket.create_connection(('{dl.HostAddress}', 7436)); print('connected', flush=True); time.sleep(60)");
            idle.WaitForOutput("connected", Deadline);
            Poll.Until(() => server.Stderr.Split("accepted on fd").Length - 1 == 2, Deadline, "the idle connection accepted on the stack");
            Poll.Until(() => Directory.GetDirectories($"/proc/{server.Pid}/task").Length >= 2 &&
                    Directory.GetDirectories($"/proc/{server.Pid}/task").All(t => File.ReadAllText(t + "/stat").Contains(") S ", StringComparison.Ordinal)),
                Deadline, "every thread of the server asleep");

            var before = Usage(server.Pid);
            var window = Stopwatch.StartNew();
            Thread.Sleep(TimeSpan.FromSeconds(2)); // the measurement window, not a wait for a condition
            var after = Usage(server.Pid);
            window.Stop();
            TestContext.Out.WriteLine($"idle {window.Elapsed.TotalSeconds:F1} s: {(after.Cpu - before.Cpu).TotalMilliseconds} ms CPU, " +
                $"{after.Switches - before.Switches} context switches");

            // http.server's acceptor wakes by itself every 0.5 s (serve_forever's poll interval), and each time the
            // stack's background thread wakes about twice (it keeps away while a program thread runs the stack, then
            // watches the VNIC again): some 20 switches in 2 s. With the 1 ms cap it was some 4000. 20 ms of CPU is
            // two ticks of the kernel's accounting, the finest it measures, and far below the 1 ms cap's cost.
            Assert.That(after.Switches - before.Switches, Is.LessThan(100),
                $"context switches of the server's threads in {window.Elapsed.TotalSeconds:F1} s");
            Assert.That(after.Cpu - before.Cpu, Is.LessThanOrEqualTo(TimeSpan.FromMilliseconds(20)),
                $"CPU used by the idle server in {window.Elapsed.TotalSeconds:F1} s");

            var again = dl.Peer.Pipe($"curl -sS --max-time 15 http://{dl.HostAddress}:7436/index.html", [], Deadline);
            Assert.That(System.Text.Encoding.ASCII.GetString(again), Is.EqualTo("hello\n"), "and it still serves");
        }
        finally
        {
            Directory.Delete(www, recursive: true);
        }
    }

    [Test]
    public void A_program_computing_without_socket_calls_still_acknowledges_what_a_kernel_peer_sends()
    {
        // 100 KB fits the stack's initial receive window (128 KiB): the sender needs ACKs, not reads, to finish.
        var blob = RandomNumberGenerator.GetBytes(100_000);
        string stop = Path.Combine(Path.GetTempPath(), $"onload-stop-computing-{Guid.NewGuid():N}");
        const string Program = """
            import hashlib, os, socket, sys, time
            l = socket.socket(); l.bind((sys.argv[1], 7437)); l.listen(1)
            print('listening', flush=True)
            c, _ = l.accept()
            print('computing', flush=True)
            deadline = time.monotonic() + 30
            n = 0
            while not os.path.exists(sys.argv[2]) and time.monotonic() < deadline:
                n = (n * 31 + 7) % 1000003  # no socket call in here
            print('done computing', flush=True)
            data = b''
            while True:
                chunk = c.recv(65536)
                if not chunk:
                    break
                data += chunk
            print('received', len(data), hashlib.sha256(data).hexdigest(), flush=True)
            """;
        using var dl = new DriverlinkPair();
        try
        {
            using var server = dl.Host.Start("env", [.. PreloadTcpTests.Settings(dl), Dist.Bin("onload-run"),
                "/usr/bin/python3", "-c", Program, dl.HostAddress, stop]);
            server.WaitForOutput("listening", Deadline);

            // socat sends, closes, and exits; the kernel goes on sending the orphaned connection's data and FIN.
            _ = dl.Peer.Pipe($"socat -u - TCP:{dl.HostAddress}:7437", blob, Deadline);
            server.WaitForOutput("computing", Deadline);

            // FIN-WAIT-2: the peer's kernel has had every byte and its FIN acknowledged.
            Poll.Until(() => dl.Peer.Exec($"ss -tn state fin-wait-2 dst {dl.HostAddress}").Contains(":7437", StringComparison.Ordinal),
                Deadline, "the kernel sender's data and FIN acknowledged");
            Assert.That(server.Stdout, Does.Not.Contain("done computing"), "acknowledged while the program was computing");
            var stack = OnloadStackdump.Query(dl.Host, server.Pid);
            Assert.That(stack, Is.Not.Null, "onload-stackdump reached the program");
            Assert.That(stack!.Counters["Layer.BackgroundFrames"], Is.Positive, "the stack's background thread took the frames");

            File.WriteAllText(stop, "");
            server.WaitForOutput("received", Deadline);
            Assert.That(server.Stdout, Does.Contain($"received {blob.Length} {Convert.ToHexStringLower(SHA256.HashData(blob))}"),
                "the program then read every byte, in order");
        }
        finally
        {
            File.Delete(stop);
        }
    }
}
