using System.Net;
using System.Net.Sockets;
using System.Text;
using NUnit.Framework;
using Onload.Sockets;

namespace Onload.Tests.Managed;

/// <summary>
/// The same program over both transports, against the same kernel peers at the same addresses, writes down what
/// it saw; the two transcripts must be identical (a program switching transport sees no difference).
/// </summary>
[NonParallelizable]
public sealed class TranscriptTests
{
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(30);

    [Test]
    public async Task Both_transports_produce_the_same_transcript()
    {
        string kernel = await TranscriptOf(TransportPair.Kernel);
        string onload = await TranscriptOf(TransportPair.Onload);
        TestContext.Out.WriteLine(kernel);
        Assert.That(kernel, Does.Contain("bye").And.Contain("refused: ConnectionRefused").And.Contain("reset: SocketException ConnectionReset"), "the kernel's transcript is whole");
        Assert.That(onload, Is.EqualTo(kernel));
    }

    /// <summary>A line conversation, a half-close, a refused connect, UDP both ways and a listener's view of a
    /// kernel client, written down without ephemeral ports.</summary>
    private static async Task<string> TranscriptOf(string kind)
    {
        var log = new StringBuilder();
        await using var t = TransportPair.Create(kind);
        t.StartPeerServer("tcp", 9410, "python3", "-c", PeerScripts.LineServer, "9410");
        t.StartPeerServer("udp", 9411, "python3", "-c", PeerScripts.UdpEcho, "9411");
        t.StartPeerServer("tcp", 9415, "python3", "-c", PeerScripts.ResetServer, "9415");
        using var timeout = new CancellationTokenSource(Deadline);

        await using (var c = await t.Transport.ConnectAsync(t.PeerEndPoint(9410), timeout.Token))
        {
            log.AppendLine($"connected {c.LocalEndPoint.Address} -> {c.RemoteEndPoint}");
            foreach (string line in new[] { "ECHO hello", "REV onload", "LEN " + new string('x', 3000), "WHAT", "BYE" })
            {
                await Conversation.WriteLineAsync(c.Output, line);
                log.AppendLine($"> {(line.Length > 20 ? line[..20] + "..." : line)}");
                log.AppendLine($"< {await Conversation.ReadLineAsync(c.Input)}");
            }
            log.AppendLine($"after bye: {(await Conversation.ReadLineAsync(c.Input)) ?? "end of stream"}");
            await c.Output.CompleteAsync();
        }

        try
        {
            await t.Transport.ConnectAsync(t.PeerEndPoint(9412), timeout.Token);
            log.AppendLine("connected to a closed port");
        }
        catch (SocketException e)
        {
            log.AppendLine($"refused: {e.SocketErrorCode}");
        }

        await using (var r = await t.Transport.ConnectAsync(t.PeerEndPoint(9415), timeout.Token))
        {
            await Conversation.WriteLineAsync(r.Output, "RST");
            try
            {
                log.AppendLine($"read {(await Conversation.ReadToEndAsync(r.Input)).Length} bytes before the end");
            }
            catch (Exception e)
            {
                log.AppendLine($"reset: {e.GetType().Name} {(e as SocketException)?.SocketErrorCode}");
            }
        }

        await using (var u = await t.Transport.BindUdpAsync(new IPEndPoint(IPAddress.Any, 9413), timeout.Token))
        {
            var buffer = new byte[2000];
            foreach (int size in new[] { 0, 5, 1472 })
            {
                var sent = Enumerable.Range(0, size).Select(i => (byte)i).ToArray();
                await u.SendToAsync(sent, t.PeerEndPoint(9411), timeout.Token);
                var got = await u.ReceiveFromAsync(buffer, timeout.Token);
                log.AppendLine($"udp {size} -> {got.Length} from {got.RemoteEndPoint} same {buffer.AsSpan(0, got.Length).SequenceEqual(sent)}");
            }
        }

        await using (var listener = await t.Transport.ListenAsync(new IPEndPoint(IPAddress.Any, 9414), cancellationToken: timeout.Token))
        {
            var accepting = listener.AcceptAsync(timeout.Token).AsTask();
            var client = Task.Run(() => t.Peer.Pipe($"socat -t 10 - TCP:{t.LocalAddress}:9414", "from kernel\n"u8, Deadline));
            await using var a = await accepting.WaitAsync(Deadline);
            log.AppendLine($"accepted from {a.RemoteEndPoint.Address} on {a.LocalEndPoint}");
            log.AppendLine($"read {await Conversation.ReadLineAsync(a.Input)}");
            log.AppendLine($"then {(await Conversation.ReadLineAsync(a.Input)) ?? "end of stream"}");
            await Conversation.WriteLineAsync(a.Output, "from " + "transport");
            await a.Output.CompleteAsync();
            log.AppendLine($"client got {Encoding.ASCII.GetString(await client.WaitAsync(Deadline)).Trim()}");
        }
        // Each namespace pair has its own subnet: the addresses are named by role.
        return log.ToString().Replace(t.PeerAddress.ToString(), "PEER", StringComparison.Ordinal)
            .Replace(t.LocalAddress.ToString(), "LOCAL", StringComparison.Ordinal);
    }
}
