using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using NUnit.Framework;
using Onload.Tests.Interop;
using Onload.Tests.Netns;

namespace Onload.Tests.Managed;

/// <summary>
/// dist/bin/onload-pipe-echo, the managed API's sample compiled with NativeAOT, serving in a namespace on each
/// transport, against kernel clients in the peer namespace: content checked end to end, then a clean stop.
/// </summary>
[TestFixtureSource(typeof(TransportPair), nameof(TransportPair.Kinds))]
[NonParallelizable]
public sealed class PipeEchoProgramTests(string kind)
{
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(30);

    [Test]
    public void The_published_sample_echoes_kernel_tcp_and_udp_clients_and_stops_on_sigterm()
    {
        using var pair = new NamespacePair();
        string[] transport = kind == TransportPair.Onload
            ? ["--transport", "onload", "--vnic", "af_xdp:" + pair.StackIf, "--addr", $"{pair.StackAddress}/{pair.PrefixLength}"]
            : ["--transport", "kernel"];
        if (kind == TransportPair.Kernel)
            pair.Stack.Ip($"addr add {pair.StackAddress}/{pair.PrefixLength} dev {pair.StackIf}");
        var echo = pair.Stack.Start(Dist.Bin("onload-pipe-echo"), [.. transport, "--tcp", "9430", "--udp", "9431"]);
        try
        {
            echo.WaitForOutput("onload-pipe-echo: ready", Deadline);

            var data = RandomNumberGenerator.GetBytes(1 << 20);
            byte[] echoed = pair.Kernel.Pipe($"socat -t 30 -b 65536 - TCP:{pair.StackAddress}:9430", data, Deadline);
            Assert.That(echoed.Length, Is.EqualTo(data.Length));
            Assert.That(echoed, Is.EqualTo(data), "a megabyte through socat");

            string udp = Encoding.ASCII.GetString(pair.Kernel.Pipe(
                $"python3 -c \"{PeerScripts.UdpClient.Replace("\"", "\\\"", StringComparison.Ordinal)}\" {pair.StackAddress} 9431 1 100 1472 8000",
                [], Deadline));
            Assert.That(udp.Split('\n', StringSplitOptions.RemoveEmptyEntries), Is.EqualTo(new[] { "ok 1", "ok 100", "ok 1472", "ok 8000" }));

            Netns.Netns.Run(string.Create(CultureInfo.InvariantCulture, $"kill -TERM {echo.Pid}"));
            Assert.That(echo.WaitForExit(Deadline), Is.True, "onload-pipe-echo exits on SIGTERM");
            Assert.That(echo.ExitCode, Is.Zero, echo.Stderr);
            Assert.That(echo.Stdout, Does.Contain($"1 connections, {data.Length} TCP bytes and 4 datagrams echoed"));
        }
        finally
        {
            TestContext.Out.WriteLine($"onload-pipe-echo stdout:\n{echo.Stdout}\nstderr:\n{echo.Stderr}");
        }
    }
}
