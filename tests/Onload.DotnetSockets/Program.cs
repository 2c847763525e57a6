using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;

// Two things ordinary .NET programs do with sockets, for the preload tests to run under onload-run:
//   echo PORT   a TcpListener (dual-stack, as TcpListener.Create makes it) echoing every connection, async throughout
//   get URL     an HttpClient GET; prints the body's length and SHA-256
//   udp PORT    a UDP socket as `new Socket(SocketType.Dgram, ProtocolType.Udp)` makes it (dual-stack), bound to
//               [::]:PORT, echoing every datagram to its sender, async throughout
// Lines on stdout say what happened; errors go to stderr with exit status 1.
return args switch
{
    ["echo", var port] when int.TryParse(port, CultureInfo.InvariantCulture, out int p) && p is > 0 and < 65536 => await Echo(p),
    ["get", var url] when Uri.TryCreate(url, UriKind.Absolute, out var uri) => await Get(uri),
    ["udp", var port] when int.TryParse(port, CultureInfo.InvariantCulture, out int p) && p is > 0 and < 65536 => await UdpEcho(p),
    _ => Usage(),
};

static int Usage()
{
    Console.Error.WriteLine("usage: onload-dotnet-sockets echo PORT | get URL | udp PORT");
    return 2;
}

static async Task<int> Echo(int port)
{
    using var listener = TcpListener.Create(port);
    listener.Start();
    Console.WriteLine($"listening on {listener.LocalEndpoint} ({listener.Server.AddressFamily}, dual mode {listener.Server.DualMode})");
    while (true)
    {
        var client = await listener.AcceptTcpClientAsync();
        _ = EchoConnection(client);
    }
}

static async Task EchoConnection(TcpClient client)
{
    using (client)
    {
        var peer = client.Client.RemoteEndPoint;
        var stream = client.GetStream();
        var buffer = new byte[64 * 1024];
        long total = 0;
        try
        {
            int n;
            while ((n = await stream.ReadAsync(buffer)) > 0)
            {
                await stream.WriteAsync(buffer.AsMemory(0, n));
                total += n;
            }
            Console.WriteLine($"echoed {total} bytes to {peer}");
        }
        catch (IOException e)
        {
            Console.Error.WriteLine($"connection from {peer} after {total} bytes: {e.Message}");
        }
    }
}

static async Task<int> UdpEcho(int port)
{
    using var socket = new Socket(SocketType.Dgram, ProtocolType.Udp);
    socket.Bind(new IPEndPoint(IPAddress.IPv6Any, port));
    Console.WriteLine($"udp on {socket.LocalEndPoint} ({socket.AddressFamily}, dual mode {socket.DualMode})");
    var buffer = new byte[64 * 1024];
    var anyone = new IPEndPoint(IPAddress.IPv6Any, 0);
    for (long n = 0; ; n++)
    {
        var received = await socket.ReceiveFromAsync(buffer, anyone);
        if (n == 0)
            Console.WriteLine($"first datagram from {received.RemoteEndPoint}");
        await socket.SendToAsync(buffer.AsMemory(0, received.ReceivedBytes), received.RemoteEndPoint);
    }
}

static async Task<int> Get(Uri url)
{
    try
    {
        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(30) };
        using var response = await http.GetAsync(url, HttpCompletionOption.ResponseHeadersRead);
        response.EnsureSuccessStatusCode();
        await using var body = await response.Content.ReadAsStreamAsync();
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        var buffer = new byte[64 * 1024];
        long length = 0;
        int n;
        while ((n = await body.ReadAsync(buffer)) > 0)
        {
            sha.AppendData(buffer, 0, n);
            length += n;
        }
        Console.WriteLine($"length {length} sha256 {Convert.ToHexStringLower(sha.GetHashAndReset())}");
        return 0;
    }
    catch (Exception e) when (e is HttpRequestException or IOException or TaskCanceledException)
    {
        Console.Error.WriteLine($"GET {url}: {e.GetType().Name}: {e.Message}");
        return 1;
    }
}
