using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text;
using NUnit.Framework;
using Onload.Sockets;
using Onload.Tests.Netns;

namespace Onload.Tests.Managed;

/// <summary>
/// One set of conversations with kernel peers in a namespace, run over each transport: the Onload stack and the
/// kernel's sockets through Pipelines.Sockets.Unofficial. What a program sees must be the same.
/// </summary>
[TestFixtureSource(typeof(TransportPair), nameof(TransportPair.Kinds))]
[NonParallelizable]
public sealed class ConversationTests(string kind)
{
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(30);

    private static CancellationToken Timeout() => new CancellationTokenSource(Deadline).Token;

    [Test]
    public async Task A_client_gets_a_megabyte_echoed_byte_for_byte_by_a_kernel_server()
    {
        await using var t = TransportPair.Create(kind);
        // 4 KiB blocks: with 64 KiB ones socat can fill its own pipe and block writing into it.
        t.StartPeerServer("tcp", 9400, "socat", "-b", "4096", "TCP-LISTEN:9400,reuseaddr", "PIPE");
        var data = RandomNumberGenerator.GetBytes(3 << 19);

        await using var connection = await t.Transport.ConnectAsync(t.PeerEndPoint(9400), Timeout());
        Assert.That(connection.RemoteEndPoint, Is.EqualTo(t.PeerEndPoint(9400)));
        Assert.That(connection.LocalEndPoint.Address, Is.EqualTo(t.LocalAddress));
        var reading = Conversation.ReadToEndAsync(connection.Input);
        await Conversation.WriteAllAsync(connection.Output, data);
        var echoed = await Diagnose(t, reading.WaitAsync(Deadline));

        Assert.That(echoed.Length, Is.EqualTo(data.Length));
        Assert.That(echoed, Is.EqualTo(data), "the echo differs");
        await connection.DisposeAsync();
        await AssertNothingLeaksAsync(t);
    }

    [Test]
    public async Task Kernel_clients_are_echoed_by_the_transports_listener()
    {
        await using var t = TransportPair.Create(kind);
        await using var listener = await t.Transport.ListenAsync(new IPEndPoint(IPAddress.Any, 9401), cancellationToken: Timeout());
        Assert.That(listener.LocalEndPoint.Port, Is.EqualTo(9401));
        var serving = Task.Run(async () =>
        {
            for (int i = 0; i < 2; i++)
                await Conversation.EchoAsync(await listener.AcceptAsync(Timeout()));
        });

        var data = RandomNumberGenerator.GetBytes(1 << 20);
        byte[] echoed = t.Peer.Pipe($"socat -t 30 -b 65536 - TCP:{t.LocalAddress}:9401", data, Deadline);
        Assert.That(echoed, Is.EqualTo(data), "socat's megabyte came back different");

        string reply = Encoding.ASCII.GetString(t.Peer.Pipe(
            $"python3 -c \"import socket; s = socket.create_connection(('{t.LocalAddress}', 9401)); s.sendall(b'hello python'); " +
            "s.shutdown(socket.SHUT_WR); print(s.recv(100).decode())\"", [], Deadline));
        Assert.That(reply.Trim(), Is.EqualTo("hello python"));
        await serving.WaitAsync(Deadline);
        await listener.DisposeAsync();
        await AssertNothingLeaksAsync(t);
    }

    [Test]
    public async Task Curl_gets_a_100_kb_body_from_a_minimal_http_responder_on_the_listener()
    {
        await using var t = TransportPair.Create(kind);
        await using var listener = await t.Transport.ListenAsync(new IPEndPoint(IPAddress.Any, 9419), cancellationToken: Timeout());
        var body = new byte[100_000];
        for (int i = 0; i < body.Length; i++)
            body[i] = (byte)('a' + i % 26);
        var serving = Task.Run(async () =>
        {
            await using var c = await listener.AcceptAsync(Timeout());
            string request = await Conversation.ReadLineAsync(c.Input) ?? "";
            while ((await Conversation.ReadLineAsync(c.Input))?.TrimEnd('\r') is { Length: > 0 })
            {
                // the headers, up to the empty line
            }
            await c.Output.WriteAsync(Encoding.ASCII.GetBytes(
                $"HTTP/1.1 200 OK\r\nContent-Length: {body.Length}\r\nConnection: close\r\n\r\n"));
            await Conversation.WriteAllAsync(c.Output, body);
            return request.TrimEnd('\r');
        });

        byte[] fetched = t.Peer.Pipe($"curl -sS --max-time 20 http://{t.LocalAddress}:9419/hello", [], Deadline);
        Assert.That(await serving.WaitAsync(Deadline), Is.EqualTo("GET /hello HTTP/1.1"));
        Assert.That(fetched, Is.EqualTo(body), "curl's body");
    }

    [Test]
    public async Task Completing_output_sends_a_fin_and_the_peers_fin_completes_input()
    {
        await using var t = TransportPair.Create(kind);
        t.StartPeerServer("tcp", 9402, "python3", "-c", PeerScripts.CountThenAnswer, "9402");

        await using var connection = await t.Transport.ConnectAsync(t.PeerEndPoint(9402), Timeout());
        await connection.Output.WriteAsync(Encoding.ASCII.GetBytes("twelve bytes"));
        await connection.Output.CompleteAsync(); // the peer counts until our FIN, then answers and closes
        var answer = await Conversation.ReadToEndAsync(connection.Input).WaitAsync(Deadline);

        Assert.That(Encoding.ASCII.GetString(answer), Is.EqualTo("got 12\n"), "the peer saw our FIN after the 12 bytes");
    }

    [Test]
    public async Task A_reset_from_the_peer_fails_input_with_connection_reset()
    {
        await using var t = TransportPair.Create(kind);
        t.StartPeerServer("tcp", 9409, "python3", "-c", PeerScripts.ResetServer, "9409");
        await using var connection = await t.Transport.ConnectAsync(t.PeerEndPoint(9409), Timeout());
        await Conversation.WriteLineAsync(connection.Output, "RST");

        var e = Assert.ThrowsAsync<SocketException>(async () => await Conversation.ReadToEndAsync(connection.Input).WaitAsync(Deadline));
        Assert.That(e!.SocketErrorCode, Is.EqualTo(SocketError.ConnectionReset));
    }

    [Test]
    public async Task Abort_resets_the_connection_and_the_peer_sees_the_reset()
    {
        await using var t = TransportPair.Create(kind);
        var peer = t.StartPeerServer("tcp", 9415, "python3", "-c", PeerScripts.ResetServer, "9415");
        await using (var connection = await t.Transport.ConnectAsync(t.PeerEndPoint(9415), Timeout()))
        {
            await Conversation.WriteLineAsync(connection.Output, "WAIT");
            await connection.Output.WriteAsync(new byte[1000]);
            connection.Abort();
        }
        peer.WaitForOutput("peer ", Deadline);
        Assert.That(peer.Stdout.Trim(), Is.EqualTo("peer reset"));

        // A close, by contrast, is a FIN.
        await using (var connection = await t.Transport.ConnectAsync(t.PeerEndPoint(9415), Timeout()))
            await Conversation.WriteLineAsync(connection.Output, "WAIT");
        Poll.Until(() => peer.Stdout.Contains("peer fin", StringComparison.Ordinal), Deadline, "the peer to see our FIN");
        await AssertNothingLeaksAsync(t);
    }

    [Test]
    public async Task Disposing_the_transport_ends_what_is_open()
    {
        await using var t = TransportPair.Create(kind);
        var peer = t.StartPeerServer("tcp", 9416, "python3", "-c", PeerScripts.ResetServer, "9416");
        var listener = await t.Transport.ListenAsync(new IPEndPoint(IPAddress.Any, 9417), cancellationToken: Timeout());
        var connection = await t.Transport.ConnectAsync(t.PeerEndPoint(9416), Timeout());
        await Conversation.WriteLineAsync(connection.Output, "WAIT");
        var accepting = listener.AcceptAsync().AsTask();

        if (t.Stack is null)
        {
            // Kernel sockets belong to no transport object: the program closes each (as a process exit would).
            await listener.DisposeAsync();
            await connection.DisposeAsync();
        }
        else
        {
            await t.Stack.DisposeAsync();
        }
        Assert.ThrowsAsync<ObjectDisposedException>(async () => await accepting.WaitAsync(Deadline), "the pending accept");
        peer.WaitForOutput("peer ", Deadline);
        Assert.That(peer.Stdout.Trim(), Is.AnyOf("peer fin", "peer reset"));
    }

    [Test]
    public void Connecting_to_a_port_nobody_listens_on_throws_connection_refused()
    {
        var e = Assert.ThrowsAsync<SocketException>(async () =>
        {
            await using var t = TransportPair.Create(kind);
            await t.Transport.ConnectAsync(t.PeerEndPoint(9403), Timeout());
        });
        Assert.That(e!.SocketErrorCode, Is.EqualTo(SocketError.ConnectionRefused));
    }

    [Test]
    public void Connecting_to_an_address_nobody_answers_arp_for_throws_host_unreachable()
    {
        var e = Assert.ThrowsAsync<SocketException>(async () =>
        {
            await using var t = TransportPair.Create(kind);
            var silent = new IPEndPoint(IPAddress.Parse(t.Namespaces.Subnet[..^1] + "99"), 9418);
            await t.Transport.ConnectAsync(silent, Timeout());
        });
        Assert.That(e!.SocketErrorCode, Is.EqualTo(SocketError.HostUnreachable));
    }

    [Test]
    public async Task Udp_datagrams_of_several_sizes_are_echoed_by_a_kernel_server_from_its_address()
    {
        await using var t = TransportPair.Create(kind);
        t.StartPeerServer("udp", 9404, "python3", "-c", PeerScripts.UdpEcho, "9404");
        await using var socket = await t.Transport.BindUdpAsync(new IPEndPoint(IPAddress.Any, 0), Timeout());
        Assert.That(socket.LocalEndPoint.Port, Is.Not.Zero, "an ephemeral port");

        var buffer = new byte[65536];
        foreach (int size in new[] { 1, 100, 1472, 8000 })
        {
            var data = RandomNumberGenerator.GetBytes(size);
            Assert.That(await socket.SendToAsync(data, t.PeerEndPoint(9404), Timeout()), Is.EqualTo(size));
            var received = await socket.ReceiveFromAsync(buffer, Timeout());
            Assert.That(received.RemoteEndPoint, Is.EqualTo(t.PeerEndPoint(9404)));
            Assert.That(buffer.AsSpan(0, received.Length).ToArray(), Is.EqualTo(data), $"the echo of {size} bytes");
        }
        await socket.DisposeAsync();
        await AssertNothingLeaksAsync(t);
    }

    [Test]
    public async Task A_kernel_udp_client_is_echoed_by_the_transports_socket()
    {
        await using var t = TransportPair.Create(kind);
        await using var socket = await t.Transport.BindUdpAsync(new IPEndPoint(IPAddress.Any, 9405), Timeout());
        using var stop = new CancellationTokenSource();
        var echoing = Conversation.UdpEchoAsync(socket, stop.Token);

        string output = Encoding.ASCII.GetString(t.Peer.Pipe(
            $"python3 -c \"{PeerScripts.UdpClient.Replace("\"", "\\\"", StringComparison.Ordinal)}\" {t.LocalAddress} 9405 1 100 1472 8000", [], Deadline));
        Assert.That(output.Split('\n', StringSplitOptions.RemoveEmptyEntries), Is.EqualTo(new[] { "ok 1", "ok 100", "ok 1472", "ok 8000" }));
        await stop.CancelAsync();
        await echoing.WaitAsync(Deadline);
    }

    [Test]
    public async Task A_pending_accept_and_a_pending_receive_end_when_cancelled_and_the_next_ones_still_work()
    {
        await using var t = TransportPair.Create(kind);
        await using var listener = await t.Transport.ListenAsync(new IPEndPoint(IPAddress.Any, 9406), cancellationToken: Timeout());
        await using var socket = await t.Transport.BindUdpAsync(new IPEndPoint(IPAddress.Any, 9407), Timeout());

        using (var cancel = new CancellationTokenSource())
        {
            var accepting = listener.AcceptAsync(cancel.Token).AsTask();
            var receiving = socket.ReceiveFromAsync(new byte[100], cancel.Token).AsTask();
            Assert.That(accepting.IsCompleted || receiving.IsCompleted, Is.False, "nothing came yet");
            await cancel.CancelAsync();
            Assert.ThrowsAsync(Is.InstanceOf<OperationCanceledException>(), async () => await accepting.WaitAsync(Deadline));
            Assert.ThrowsAsync(Is.InstanceOf<OperationCanceledException>(), async () => await receiving.WaitAsync(Deadline));
        }

        var accepted = listener.AcceptAsync(Timeout()).AsTask();
        var buffer = new byte[100];
        var received = socket.ReceiveFromAsync(buffer, Timeout()).AsTask();
        t.Peer.Pipe($"python3 -c \"import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.sendto(b'after', ('{t.LocalAddress}', 9407)); " +
            $"c = socket.create_connection(('{t.LocalAddress}', 9406)); c.close()\"", [], Deadline);
        await using var connection = await accepted.WaitAsync(Deadline);
        Assert.That(connection.RemoteEndPoint.Address, Is.EqualTo(t.PeerAddress));
        var datagram = await received.WaitAsync(Deadline);
        Assert.That(Encoding.ASCII.GetString(buffer, 0, datagram.Length), Is.EqualTo("after"));
    }

    [Test]
    public async Task A_slow_reader_holds_the_sender_back_and_loses_nothing()
    {
        await using var t = TransportPair.Create(kind);
        await using var listener = await t.Transport.ListenAsync(new IPEndPoint(IPAddress.Any, 9408), cancellationToken: Timeout());
        var data = RandomNumberGenerator.GetBytes(8 << 20);
        var sending = Task.Run(() => t.Peer.Pipe($"socat -t 60 -b 65536 - TCP:{t.LocalAddress}:9408", data, TimeSpan.FromSeconds(120)));

        await using var connection = await listener.AcceptAsync(Timeout());
        // Read nothing until the sender is stuck: its bytes wait in its socket, ours and the windows between.
        var held = await connection.Input.ReadAsync();
        long firstLook = held.Buffer.Length;
        connection.Input.AdvanceTo(held.Buffer.Start, held.Buffer.End);
        Poll.Until(() => t.Peer.Exec($"ss -Htn state established dst {t.LocalAddress}").Split(' ', StringSplitOptions.RemoveEmptyEntries)
                .Skip(1).FirstOrDefault() is { } sendQ && long.Parse(sendQ, CultureInfo.InvariantCulture) > 0,
            Deadline, "the sender's Send-Q to fill while we do not read");
        Assert.That(sending.IsCompleted, Is.False, "8 MiB cannot all be in flight while nobody reads");

        var received = await Conversation.ReadToEndAsync(connection.Input, pacing: TimeSpan.FromMilliseconds(1)).WaitAsync(TimeSpan.FromSeconds(120));
        Assert.That(firstLook, Is.GreaterThan(0));
        Assert.That(received.Length, Is.EqualTo(data.Length));
        Assert.That(SHA256.HashData(received), Is.EqualTo(SHA256.HashData(data)), "bytes lost or reordered");
        await connection.DisposeAsync(); // socat ends at our FIN
        await sending.WaitAsync(Deadline);
    }

    /// <summary>Awaits <paramref name="task"/>; if it fails, says what the stack's connections looked like.</summary>
    private static async Task<T> Diagnose<T>(TransportPair t, Task<T> task)
    {
        try
        {
            return await task;
        }
        catch (TimeoutException) when (t.Stack is not null)
        {
            string state = await t.Stack.InspectAsync(s => StackDump.Connections(s) + "\n" + StackDump.TcpCounters(s));
            throw new TimeoutException("timed out; the stack: " + state);
        }
    }

    /// <summary>After everything is closed, the stack's tables hold nothing (Onload only: the kernel's are its own).</summary>
    private static async Task AssertNothingLeaksAsync(TransportPair t)
    {
        if (t.Stack is null)
            return;
        var clock = Stopwatch.StartNew();
        int tcp = -1, udp = -1;
        while (clock.Elapsed < Deadline)
        {
            (tcp, udp) = await t.Stack.InspectAsync(s => (s.TcpConnections.Open, s.UdpSockets.Open));
            if (tcp == 0 && udp == 0)
                return;
            await Task.Delay(10);
        }
        Assert.Fail($"after every close the stack still holds {tcp} TCP rows and {udp} UDP sockets");
    }
}
