using System.Net;
using System.Security.Cryptography;
using System.Text;
using NUnit.Framework;
using Onload.Driverlink;
using Onload.Sockets;
using Onload.Tests.Driverlink;
using Onload.Tests.Netns;

namespace Onload.Tests.Managed;

/// <summary>
/// <see cref="OnloadStack.Attach"/>: the managed API in driverlink mode, on the address the kernel holds, through a
/// test's own onload-driverd, in shared and exclusive mode, against kernel peers.
/// </summary>
[TestFixture(VnicMode.Shared)]
[TestFixture(VnicMode.Exclusive)]
[NonParallelizable]
public sealed class DriverlinkTransportTests(VnicMode mode)
{
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(30);

    [Test]
    public async Task An_attached_stack_echoes_through_a_kernel_server_and_serves_kernel_clients()
    {
        Netns.Netns.RequireRoot();
        using var dl = new DriverlinkPair();
        dl.Peer.Start("socat", "-b", "4096", "TCP-LISTEN:9440,reuseaddr", "PIPE");
        Poll.Until(() => dl.Peer.Exec("ss -tln").Contains(":9440", StringComparison.Ordinal), Deadline, "socat listening");
        using var timeout = new CancellationTokenSource(Deadline);

        // Made on a thread in the host's namespace: the kernel sockets behind each port are made there.
        var stack = dl.InHost(() => OnloadStack.Attach(dl.Interface, mode, new OnloadStackOptions { Driverlink = dl.ClientOptions }));
        await using (stack)
        {
            Assert.That(stack.Address, Is.EqualTo(IPAddress.Parse(dl.HostAddress)), "the kernel's address");

            var data = RandomNumberGenerator.GetBytes(1 << 20);
            await using (var c = await stack.ConnectAsync(new IPEndPoint(IPAddress.Parse(dl.PeerAddress), 9440), timeout.Token))
            {
                var reading = Conversation.ReadToEndAsync(c.Input);
                await Conversation.WriteAllAsync(c.Output, data);
                Assert.That(await reading.WaitAsync(Deadline), Is.EqualTo(data), "the megabyte echoed by the kernel");
            }

            await using var listener = await stack.ListenAsync(new IPEndPoint(IPAddress.Any, 9441), cancellationToken: timeout.Token);
            var serving = Task.Run(async () => await Conversation.EchoAsync(await listener.AcceptAsync(timeout.Token)));
            var sent = RandomNumberGenerator.GetBytes(200_000);
            byte[] echoed = dl.Peer.Pipe($"socat -t 30 -b 65536 - TCP:{dl.HostAddress}:9441", sent, Deadline);
            Assert.That(echoed, Is.EqualTo(sent), "a kernel client echoed by the listener");
            await serving.WaitAsync(Deadline);

            await using var udp = await stack.BindUdpAsync(new IPEndPoint(IPAddress.Any, 9442), timeout.Token);
            using var stop = new CancellationTokenSource();
            var echoing = Conversation.UdpEchoAsync(udp, stop.Token);
            string output = Encoding.ASCII.GetString(dl.Peer.Pipe(
                $"python3 -c \"{PeerScripts.UdpClient.Replace("\"", "\\\"", StringComparison.Ordinal)}\" {dl.HostAddress} 9442 1 1000 1472", [], Deadline));
            Assert.That(output.Split('\n', StringSplitOptions.RemoveEmptyEntries), Is.EqualTo(new[] { "ok 1", "ok 1000", "ok 1472" }));
            await stop.CancelAsync();
            await echoing.WaitAsync(Deadline);
        }
    }
}
