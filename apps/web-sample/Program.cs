using Microsoft.AspNetCore.Hosting;
using Onload.Apps.WebSample;

// onload-web-sample --urls http://*:8080 [--transport onload|kernel]
//     [--interface IF [--mode shared|exclusive] | --vnic SPEC --addr IP/PREFIX [--gateway IP]]
// The options are configuration keys, as --urls is, so ASPNETCORE_-style environment variables set them too.
var builder = WebApplication.CreateSlimBuilder(args);
// A line per request would cost more than the request under wrk; the lifetime lines ("Now listening on") stay.
builder.Logging.AddFilter("Microsoft.AspNetCore", LogLevel.Warning);
var transport = SampleTransport.FromConfiguration(builder.Configuration, out string? error);
if (transport is null)
{
    Console.Error.WriteLine($"onload-web-sample: {error}");
    Console.Error.WriteLine("usage: onload-web-sample --urls http://*:PORT [--transport onload|kernel] " +
        "[--interface IF [--mode shared|exclusive] | --vnic SPEC --addr IP/PREFIX [--gateway IP]]");
    return 2;
}
if (transport.Onload is { } onload)
    builder.WebHost.UseOnload(o =>
    {
        o.Interface = onload.Interface;
        o.Mode = onload.Mode;
        o.Vnic = onload.Vnic;
        o.Address = onload.Address;
        o.Gateway = onload.Gateway;
    });
builder.Services.ConfigureHttpJsonOptions(o => o.SerializerOptions.TypeInfoResolverChain.Insert(0, SampleJson.Default));

var app = builder.Build();
Endpoints.Map(app, transport.Name);
app.Lifetime.ApplicationStarted.Register(() => Console.Out.WriteLine($"onload-web-sample: ready, transport {transport.Name}"));
await app.RunAsync();
return 0;
