using System.Security.Cryptography;
using System.Text;

namespace Onload.Tests.Web;

/// <summary>
/// What a web server must do for a kernel client, whatever serves it: each fixture deriving from this starts one
/// server (the published sample, or Kestrel in the test process) and these tests check it with curl and wrk.
/// </summary>
public abstract class WebServerSpec
{
    protected const int Port = 8080;

    /// <summary>The client side: curl and wrk in the kernel's namespace, pointed at the server.</summary>
    protected abstract KernelHttpClient Client { get; }

    /// <summary>The start of the body of GET /.</summary>
    protected abstract string Greeting { get; }

    [Test]
    public void Get_root_answers_the_greeting()
    {
        string body = Encoding.UTF8.GetString(Client.Get("/"));

        Assert.That(body, Does.StartWith(Greeting));
    }

    [Test]
    public void Get_of_a_megabyte_arrives_byte_for_byte()
    {
        const int length = 1 << 20;

        byte[] body = Client.Get($"/bytes/{length}");

        Assert.That(body, Has.Length.EqualTo(length));
        Assert.That(SHA256.HashData(body), Is.EqualTo(KernelHttpClient.PatternSha256(length)));
    }

    [Test]
    public void Post_of_a_megabyte_is_echoed_byte_for_byte()
    {
        byte[] sent = new byte[1 << 20];
        new Random(9).NextBytes(sent);

        byte[] echoed = Client.Post("/echo", sent);

        Assert.That(echoed, Has.Length.EqualTo(sent.Length));
        Assert.That(SHA256.HashData(echoed), Is.EqualTo(SHA256.HashData(sent)));
    }

    [Test]
    public void Keep_alive_serves_several_requests_on_one_connection()
    {
        var results = Client.GetKeepAlive("/bytes/10000", 8);

        Assert.That(results.Select(r => r.Status), Is.All.EqualTo(200));
        Assert.That(results.Sum(r => r.Connects), Is.EqualTo(1), "curl opened a connection for the first request only");
    }

    [Test]
    public void Many_connections_at_once_are_each_served()
    {
        var results = Client.GetInParallel("/bytes/1000", count: 300, parallel: 100);

        Assert.That(results, Has.Length.EqualTo(300));
        Assert.That(results.Select(r => r.Status), Is.All.EqualTo(200));
        Assert.That(results.Sum(r => r.Connects), Is.EqualTo(300), "one connection per request (Connection: close)");
    }

    [Test]
    public void A_client_leaving_mid_answer_leaves_the_server_serving()
    {
        // A gigabyte the client gives up on after half a second: the server's write fails (reset) and that
        // connection ends; the next request is answered as before.
        var (gaveUp, why) = Client.GivesUpOn("/bytes/1073741824", TimeSpan.FromMilliseconds(500));

        Assert.That(gaveUp, Is.True, $"curl gave up before the end (exit 28); {why}");
        Assert.That(Encoding.UTF8.GetString(Client.Get("/")), Does.StartWith(Greeting));
    }

    [Test]
    public void Wrk_sees_no_socket_error_and_no_failed_response()
    {
        var wrk = Client.Wrk("/", connections: 32, threads: 2, duration: TimeSpan.FromSeconds(3));

        Assert.That(wrk.Requests, Is.GreaterThan(0), wrk.Output);
        Assert.That(wrk.SocketErrors, Is.Zero, wrk.Output);
        Assert.That(wrk.Non2xx3xx, Is.Zero, wrk.Output);
    }
}
