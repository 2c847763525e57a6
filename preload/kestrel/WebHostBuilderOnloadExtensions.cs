using Microsoft.AspNetCore.Connections;
using Microsoft.Extensions.DependencyInjection;
using Onload.Kestrel;
using Onload.Sockets;

namespace Microsoft.AspNetCore.Hosting;

/// <summary>
/// <c>builder.WebHost.UseOnload(o => o.Interface = "eth0")</c>: Kestrel serves its IP end points (<c>--urls</c>,
/// <c>http://*:PORT</c> included) from the user-level stack; <c>UseTransport(transport)</c> from any
/// <see cref="ITransport"/>. Kestrel's other transports stay registered for what this one does not bind (Unix
/// sockets, named pipes); Kestrel asks the last registered transport first.
/// </summary>
public static class WebHostBuilderOnloadExtensions
{
    public static IWebHostBuilder UseOnload(this IWebHostBuilder builder, Action<OnloadTransportOptions> configure)
    {
        ArgumentNullException.ThrowIfNull(builder);
        ArgumentNullException.ThrowIfNull(configure);
        return builder.ConfigureServices(services =>
        {
            services.Configure(configure);
            services.AddSingleton<IConnectionListenerFactory, OnloadTransportFactory>();
        });
    }

    /// <summary>Serves from <paramref name="transport"/>, which the caller keeps and disposes of after the host.</summary>
    public static IWebHostBuilder UseTransport(this IWebHostBuilder builder, ITransport transport)
    {
        ArgumentNullException.ThrowIfNull(transport);
        return builder.UseOnload(o => o.Transport = transport);
    }
}
