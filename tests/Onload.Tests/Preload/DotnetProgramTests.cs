using System.Security.Cryptography;
using Onload.Tests.Driverlink;
using Onload.Tests.Interop;
using Onload.Tests.Netns;

namespace Onload.Tests.Preload;

/// <summary>
/// A .NET program using System.Net.Sockets (tests/Onload.DotnetSockets), run with the JIT (<c>dotnet app.dll</c>) under
/// <c>onload-run</c>: CoreCLR's socket engine (non-blocking sockets in epoll on its own threads), its signal handlers
/// and its dual-stack AF_INET6 sockets meet the shim. The kernel's TCP and UDP are on the other side, and onload-stackdump shows
/// the program's sockets on the stack while it runs.
/// </summary>
[Category("netns")]
[NonParallelizable]
public class DotnetProgramTests
{
    private static readonly TimeSpan Deadline = DriverlinkPair.Deadline;

    private string _dir = "";

    [SetUp]
    public void MakeDirectory() => _dir = Directory.CreateTempSubdirectory("onload-dotnet-").FullName;

    [TearDown]
    public void RemoveDirectory() => Directory.Delete(_dir, recursive: true);

    private static string Program => Dist.TestProgram("dotnet-sockets", "onload-dotnet-sockets.dll");

    private static NsProcess StartUnderOnloadRun(DriverlinkPair dl, params string[] args) =>
        dl.Host.Start("env", [.. PreloadTcpTests.Settings(dl), Dist.Bin("onload-run"), "dotnet", Program, .. args]);

    [Test]
    public void A_dotnet_tcp_listener_under_onload_run_echoes_a_megabyte_from_a_kernel_client()
    {
        const int port = 7460;
        using var dl = new DriverlinkPair();
        var before = PreloadTcpTests.KernelOpens(dl.Host);
        var server = StartUnderOnloadRun(dl, "echo", $"{port}");
        server.WaitForOutput("listening on", Deadline);
        OnloadStackdump.WaitUntil(dl.Host, server.Pid, s => s.Listening(port) is not null, Deadline, "the TcpListener on the stack");

        var blob = RandomNumberGenerator.GetBytes(1_000_000);
        string sent = Path.Combine(_dir, "sent"), echoed = Path.Combine(_dir, "echoed");
        File.WriteAllBytes(sent, blob);
        PreloadTcpTests.LimitPeerSendRate(dl, "4mbit"); // the megabyte takes 2 s to reach the stack
        var client = dl.Peer.Start("sh", "-c", $"socat -b 65536 -t 30 - TCP:{dl.HostAddress}:{port} < {sent} > {echoed}");

        var stack = OnloadStackdump.WaitUntil(dl.Host, server.Pid, s => s.Established(port, dl.PeerAddress).Count == 1, Deadline,
            "the kernel client's connection");
        Assert.That(stack.Established(port, dl.PeerAddress)[0].LocalAddress, Is.EqualTo(dl.HostAddress));
        Assert.That(stack.Command, Does.StartWith("dotnet"));

        Assert.That(client.WaitForExit(Deadline), Is.True, "the kernel client finished");
        Assert.That(client.ExitCode, Is.Zero, client.Stderr + server.Stdout + server.Stderr);
        Assert.That(File.ReadAllBytes(echoed), Is.EqualTo(blob), "the TcpListener's connection echoed every byte");
        server.WaitForOutput($"echoed {blob.Length} bytes", Deadline);
        Assert.That(server.Stdout, Does.Contain("(InterNetworkV6, dual mode True)"), "TcpListener.Create made a dual-stack socket");
        Assert.That(server.Stderr, Does.Contain("accepted on fd").And.Not.Contain("handed to the kernel"));
        Assert.That(PreloadTcpTests.KernelOpens(dl.Host).Passive, Is.EqualTo(before.Passive), "the stack side's kernel accepted no connection");
        Assert.That(server.HasExited, Is.False, "the server is still serving");
    }

    [Test]
    public void A_dotnet_http_client_under_onload_run_fetches_a_file_from_a_kernel_http_server()
    {
        const int port = 7461;
        var blob = RandomNumberGenerator.GetBytes(25_000_000);
        File.WriteAllBytes(Path.Combine(_dir, "blob"), blob);
        using var dl = new DriverlinkPair();
        dl.Peer.Start("/usr/bin/python3", "-m", "http.server", $"{port}", "--bind", dl.PeerAddress, "--directory", _dir);
        Poll.Until(() => dl.Peer.Exec("ss -lnt").Contains($":{port} ", StringComparison.Ordinal), Deadline, "the kernel's http.server");
        PreloadTcpTests.LimitPeerSendRate(dl, "100mbit"); // 2 s for the 25 MB
        var before = PreloadTcpTests.KernelOpens(dl.Host);

        var client = StartUnderOnloadRun(dl, "get", $"http://{dl.PeerAddress}:{port}/blob");

        var stack = OnloadStackdump.WaitUntil(dl.Host, client.Pid, s => s.ConnectedTo(dl.PeerAddress, port).Count == 1, Deadline,
            "HttpClient's connection to the kernel server");
        Assert.That(stack.ConnectedTo(dl.PeerAddress, port)[0].LocalAddress, Is.EqualTo(dl.HostAddress));
        if (!client.WaitForExit(Deadline))
        {
            string diag = dl.Host.Exec($"{Dist.Bin("onload-stackdump")} --pid {client.Pid}");
            diag += Onload.Tests.Netns.Netns.Sh($"for t in /proc/{client.Pid}/task/*; do echo $t $(cat $t/comm) $(cat $t/wchan) $(awk '{{print $3, $14, $15}}' $t/stat); done");
            Assert.Fail("the program did not finish; its stack and threads:\n" + diag + "\nits stderr (end):\n" + client.Stderr[^Math.Min(3000, client.Stderr.Length)..]);
        }
        Assert.That(client.ExitCode, Is.Zero, client.Stdout + client.Stderr);
        Assert.That(client.Stdout, Does.Contain($"length {blob.Length} sha256 {Convert.ToHexStringLower(SHA256.HashData(blob))}"),
            "the body arrived whole");
        Assert.That(client.Stderr, Does.Contain("connecting (connection").And.Not.Contain("handed to the kernel"));
        Assert.That(PreloadTcpTests.KernelOpens(dl.Host).Active, Is.EqualTo(before.Active), "the stack side's kernel opened no connection");
    }

    [Test]
    public void A_dotnet_dual_mode_udp_socket_under_onload_run_echoes_datagrams_from_a_kernel_client()
    {
        const int port = 7462;
        using var dl = new DriverlinkPair();
        var server = StartUnderOnloadRun(dl, "udp", $"{port}");
        server.WaitForOutput("udp on", Deadline);
        OnloadStackdump.WaitUntil(dl.Host, server.Pid, s => s.Udp.Any(u => u.LocalPort == port && u.LocalAddress == "0.0.0.0"), Deadline,
            "the UDP socket on the stack");
        var before = PreloadUdpTests.KernelUdp(dl.Host);

        const int Rounds = 50;
        var client = dl.Peer.Start("/usr/bin/python3", "-c", PreloadUdpTests.EchoClient, dl.HostAddress, $"{port}", $"{Rounds}");

        Assert.That(client.WaitForExit(Deadline), Is.True, "the client finished");
        Assert.That(client.ExitCode, Is.Zero, client.Stderr + server.Stdout + server.Stderr);
        Assert.That(client.Stdout, Does.Contain($"echoed {4 * Rounds}"));
        Assert.That(server.Stdout, Does.Contain("(InterNetworkV6, dual mode True)"), "the default Socket constructor made a dual-stack socket");
        // .NET reads the sender from the sockaddr_in6 the shim wrote, and prints a v4-mapped one so.
        Assert.That(server.Stdout, Does.Contain($"first datagram from [::ffff:{dl.PeerAddress}]:"));
        var stack = OnloadStackdump.Query(dl.Host, server.Pid);
        Assert.That(stack?.Udp.Single(u => u.LocalPort == port).InDatagrams, Is.EqualTo(4 * Rounds), "every datagram reached it on the stack");
        Assert.That(server.Stderr, Does.Contain("accelerated (UDP socket").And.Not.Contain("handed to the kernel"));
        var after = PreloadUdpTests.KernelUdp(dl.Host);
        Assert.That(after.Out, Is.EqualTo(before.Out), "the stack side's kernel sent none of the echoes");
        // The 8000-byte datagrams arrive as IPv4 fragments, which the kernel reassembles for the port's backing socket.
        Assert.That(after.In - before.In, Is.LessThanOrEqualTo(Rounds), "the kernel received only the fragmented datagrams");
        Assert.That(server.HasExited, Is.False, "the server is still serving");
    }
}
