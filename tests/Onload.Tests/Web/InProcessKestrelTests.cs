using System.Net;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;
using Onload.Driverlink;
using Onload.Sockets;
using Onload.Tests.Driverlink;
using Onload.Tests.Netns;

namespace Onload.Tests.Web;

/// <summary>
/// Kestrel in the test process, under the JIT, serving through <c>UseTransport</c> from the stack in direct mode
/// (AF_XDP on the veth), in driverlink mode (exclusive, through this fixture's onload-driverd) and from
/// <see cref="KernelTransport"/>; kernel curl and wrk on the other side of the veth pair. (<c>UseOnload</c>'s options
/// are the published sample's way, tested there.)
/// </summary>
[TestFixture("direct")]
[TestFixture("driverlink")]
[TestFixture("kernel")]
[NonParallelizable]
public sealed class InProcessKestrelTests(string transportKind) : WebServerSpec
{
    private NamespacePair? _pair;
    private DriverlinkPair? _driverlink;
    private ITransport? _transport;
    private WebApplication? _app;
    private KernelHttpClient? _client;

    protected override KernelHttpClient Client => _client ?? throw new InvalidOperationException("not set up");

    protected override string Greeting => "Hello from Kestrel in the test process";

    [OneTimeSetUp]
    public void StartServer()
    {
        Netns.Netns.RequireRoot();
        if (transportKind == "driverlink")
            _driverlink = new DriverlinkPair();
        _pair = _driverlink?.Pair ?? new NamespacePair();
        var pair = _pair;
        string vnic = $"af_xdp:{pair.StackIf}";
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.SetMinimumLevel(LogLevel.Warning);
        switch (transportKind)
        {
            case "direct":
                _transport = pair.Stack.Run(() => OnloadStack.Open(new OnloadStackOptions
                {
                    Vnic = vnic, Address = IPAddress.Parse(pair.StackAddress), PrefixLength = pair.PrefixLength,
                }));
                builder.WebHost.UseTransport(_transport);
                builder.WebHost.UseUrls($"http://*:{Port}");
                break;
            case "driverlink":
                var driverlink = _driverlink!;
                _transport = driverlink.InHost(() => OnloadStack.Attach(driverlink.Interface, VnicMode.Exclusive,
                    new OnloadStackOptions { Driverlink = driverlink.ClientOptions }));
                builder.WebHost.UseTransport(_transport);
                builder.WebHost.UseUrls($"http://*:{Port}");
                break;
            case "kernel":
                pair.Stack.Ip($"addr add {pair.StackAddress}/{pair.PrefixLength} dev {pair.StackIf}");
                // Its sockets belong to the namespace of the thread that makes them: the server's namespace, not ours.
                _transport = new InNamespace(pair.Stack, new KernelTransport());
                builder.WebHost.UseTransport(_transport);
                // Not http://*: KernelTransport listens on [::] IPv6-only (no DualMode), so Kestrel keeps that and
                // IPv4 clients are refused.
                builder.WebHost.UseUrls($"http://0.0.0.0:{Port}");
                break;
            default:
                throw new ArgumentException(transportKind, nameof(transportKind));
        }
        _app = builder.Build();
        _app.MapGet("/", () => Greeting + "\n");
        _app.MapGet("/bytes/{n:long}", WriteBytesAsync);
        _app.MapPost("/echo", async (HttpContext context) =>
        {
            context.Response.ContentType = "application/octet-stream";
            await context.Request.Body.CopyToAsync(context.Response.Body, context.RequestAborted);
        });
        _app.StartAsync().GetAwaiter().GetResult();
        _client = new KernelHttpClient(pair.Kernel, $"http://{pair.StackAddress}:{Port}");
    }

    [Test]
    public void A_second_server_on_the_same_port_fails_to_start_saying_address_in_use()
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.UseTransport(_transport!);
        builder.WebHost.UseUrls($"http://{_pair!.StackAddress}:{Port}");
        using var second = builder.Build();

        var e = Assert.Throws<IOException>(() => second.StartAsync().GetAwaiter().GetResult());

        Assert.That(e!.Message, Does.Contain("address already in use"));
        Assert.That(e.InnerException, Is.InstanceOf<Microsoft.AspNetCore.Connections.AddressInUseException>());
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
        _driverlink?.Dispose();
        _pair?.Dispose();
    }

    /// <summary>n bytes of the pattern (byte i = i mod 251), streamed in blocks of a whole number of periods.</summary>
    private static async Task WriteBytesAsync(long n, HttpContext context)
    {
        var block = new byte[251 * 256];
        for (int i = 0; i < block.Length; i++)
            block[i] = (byte)(i % 251);
        context.Response.ContentLength = n;
        for (long at = 0; at < n; at += block.Length)
        {
            var flushed = await context.Response.BodyWriter.WriteAsync(block.AsMemory(0, (int)Math.Min(block.Length, n - at)),
                context.RequestAborted);
            if (flushed.IsCompleted || flushed.IsCanceled)
                return;
        }
    }

    /// <summary>A transport whose listeners are made by a thread inside <paramref name="ns"/>.</summary>
    private sealed class InNamespace(TestNamespace ns, ITransport inner) : ITransport
    {
        public ValueTask<IPipeListener> ListenAsync(IPEndPoint local, int backlog = 512, CancellationToken cancellationToken = default) =>
            ValueTask.FromResult(ns.Run(() => inner.ListenAsync(local, backlog, cancellationToken).AsTask().GetAwaiter().GetResult()));

        public ValueTask<IPipeConnection> ConnectAsync(IPEndPoint remote, CancellationToken cancellationToken = default) =>
            inner.ConnectAsync(remote, cancellationToken);

        public ValueTask<IDatagramSocket> BindUdpAsync(IPEndPoint local, CancellationToken cancellationToken = default) =>
            inner.BindUdpAsync(local, cancellationToken);

        public ValueTask DisposeAsync() => inner.DisposeAsync();
    }
}
