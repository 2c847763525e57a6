using Onload.Kestrel;

namespace Onload.Apps.WebSample;

/// <summary>Which transport the command line asks for: the stack (with its options) or Kestrel's kernel sockets.</summary>
internal sealed record SampleTransport(string Name, OnloadTransportOptions? Onload)
{
    public static SampleTransport? FromConfiguration(IConfiguration config, out string? error)
    {
        error = null;
        string name = config["transport"] ?? "onload";
        switch (name)
        {
            case "kernel":
                return new SampleTransport(name, null);
            case "onload":
                var options = new OnloadTransportOptions
                {
                    Interface = config["interface"],
                    Mode = config["mode"] ?? "shared",
                    Vnic = config["vnic"],
                    Address = config["addr"],
                    Gateway = config["gateway"],
                };
                if (options.Interface is null && options.Vnic is null)
                {
                    error = "--transport onload needs --interface IF (driverlink mode) or --vnic SPEC --addr IP/PREFIX (direct mode)";
                    return null;
                }
                try
                {
                    options.Validate();
                }
                catch (ArgumentException e)
                {
                    error = e.Message;
                    return null;
                }
                return new SampleTransport(name, options);
            default:
                error = $"--transport {name}: expected onload or kernel";
                return null;
        }
    }
}
