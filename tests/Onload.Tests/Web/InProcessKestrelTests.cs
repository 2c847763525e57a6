using System.Net;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;
using Onload.Sockets;
using Onload.Tests.Driverlink;
using Onload.Tests.Netns;

namespace Onload.Tests.Web;

/// <summary>
/// Kestrel in the test process, under the JIT, serving through <c>UseTransport</c> from a transport opened in the
/// server's namespace; kernel curl and wrk on the other side of the veth pair.
/// </summary>
[TestFixture("kernel")]
[NonParallelizable]
public sealed class InProcessKestrelTests(string transportKind) : WebServerSpec
{
    private DriverlinkPair? _pair;
    private ITransport? _transport;
    private WebApplication? _app;
    private KernelHttpClient? _client;

    protected override KernelHttpClient Client => _client ?? throw new InvalidOperationException("not set up");

    protected override string Greeting => "Hello from Kestrel in the test process";

    [OneTimeSetUp]
    public void StartServer()
    {
        Netns.Netns.RequireRoot();
        _pair = DriverlinkPair.WithoutDaemon();
        _transport = transportKind switch
        {
            "kernel" => new TestKernelTransport(),
            _ => throw new ArgumentException(transportKind, nameof(transportKind)),
        };
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.UseTransport(_transport);
        builder.WebHost.UseUrls($"http://*:{Port}");
        _app = builder.Build();
        _app.MapGet("/", () => Greeting + "\n");
        _app.MapGet("/bytes/{n:int}", (int n) => Results.Bytes(Pattern(n)));
        _app.MapPost("/echo", async (HttpContext context) =>
        {
            context.Response.ContentType = "application/octet-stream";
            await context.Request.Body.CopyToAsync(context.Response.Body, context.RequestAborted);
        });
        // Kestrel binds before its first real wait: the listening socket is made on the namespace's thread.
        var app = _app;
        _pair.InHost(() =>
        {
            app.StartAsync().GetAwaiter().GetResult();
            return 0;
        });
        _client = new KernelHttpClient(_pair.Peer, $"http://{_pair.HostAddress}:{Port}");
    }

    [OneTimeTearDown]
    public async Task StopServer()
    {
        if (_app is not null)
        {
            await _app.StopAsync();
            await _app.DisposeAsync();
        }
        if (_transport is not null)
            await _transport.DisposeAsync();
        _pair?.Dispose();
    }

    private static byte[] Pattern(int n)
    {
        var bytes = new byte[n];
        for (int i = 0; i < n; i++)
            bytes[i] = (byte)(i % 251);
        return bytes;
    }
}
