using System.CommandLine;
using System.Net;
using System.Runtime.InteropServices;
using Onload.Apps.PipeEcho;
using Onload.Driverlink;
using Onload.Sockets;

var transportOption = new Option<string>("--transport") { Description = "onload (the user-level stack) or kernel (kernel sockets through Pipelines.Sockets.Unofficial)", DefaultValueFactory = _ => "onload" };
var interfaceOption = new Option<string?>("--interface") { Description = "onload, driverlink mode: accelerate IF, whose address the kernel holds, through onload-driverd" };
var modeOption = new Option<string>("--mode") { Description = "onload, driverlink mode: shared or exclusive", DefaultValueFactory = _ => "shared" };
var vnicOption = new Option<string?>("--vnic") { Description = "onload, direct mode: VNIC spec KIND:NAME (af_xdp:IF, af_packet:IF, tap:NAME, shm:NAME)" };
var addrOption = new Option<string?>("--addr") { Description = "onload, direct mode: the stack's own address, IP/PREFIX, which the kernel does not hold" };
var gatewayOption = new Option<string?>("--gateway") { Description = "onload, direct mode: the default gateway" };
var tcpOption = new Option<int[]>("--tcp") { Description = "TCP port to echo (repeatable)", AllowMultipleArgumentsPerToken = false };
var udpOption = new Option<int[]>("--udp") { Description = "UDP port to echo (repeatable)", AllowMultipleArgumentsPerToken = false };

var root = new RootCommand("onload-pipe-echo: echoes TCP (as System.IO.Pipelines) and UDP through the managed API, on the Onload stack or on kernel sockets")
{
    transportOption, interfaceOption, modeOption, vnicOption, addrOption, gatewayOption, tcpOption, udpOption,
};

root.SetAction(async (parse, cancellationToken) =>
{
    int[] tcpPorts = parse.GetValue(tcpOption) ?? [];
    int[] udpPorts = parse.GetValue(udpOption) ?? [];
    if (tcpPorts.Length + udpPorts.Length == 0)
        return Usage("give at least one --tcp or --udp port");
    if (tcpPorts.Concat(udpPorts).FirstOrDefault(p => p is < 1 or > 65535) is var bad and not 0)
        return Usage($"port {bad}: must be 1..65535");

    ITransport transport;
    string where;
    try
    {
        switch (parse.GetValue(transportOption))
        {
            case "kernel":
                if (parse.GetValue(interfaceOption) is not null || parse.GetValue(vnicOption) is not null)
                    return Usage("--interface and --vnic are for --transport onload");
                transport = new KernelTransport();
                where = "kernel sockets";
                break;
            case "onload":
                var stack = OpenStack(parse.GetValue(interfaceOption), parse.GetValue(modeOption)!, parse.GetValue(vnicOption),
                    parse.GetValue(addrOption), parse.GetValue(gatewayOption));
                if (stack is null)
                    return 2;
                transport = stack;
                where = $"onload {stack.VnicSpec} addr {stack.Address}";
                break;
            default:
                return Usage($"--transport {parse.GetValue(transportOption)}: onload or kernel");
        }
    }
    catch (Exception e) when (e is ArgumentException or FormatException)
    {
        return Usage(e.Message);
    }
    catch (Exception e) when (e is IOException or UnauthorizedAccessException or InvalidOperationException)
    {
        Console.Error.WriteLine($"onload-pipe-echo: {e.Message}");
        return 1;
    }

    using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
    using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, c => { c.Cancel = true; stop.Cancel(); });
    await using (transport)
    {
        var server = new EchoServer(transport);
        try
        {
            foreach (int port in tcpPorts)
                await server.ListenAsync(port, stop.Token);
            foreach (int port in udpPorts)
                await server.BindUdpAsync(port, stop.Token);
        }
        catch (System.Net.Sockets.SocketException e)
        {
            Console.Error.WriteLine($"onload-pipe-echo: {e.Message} ({e.SocketErrorCode})");
            return 1;
        }
        Console.Out.WriteLine($"onload-pipe-echo: ready on {where}" +
            (tcpPorts.Length > 0 ? $" tcp {string.Join(',', tcpPorts)}" : "") +
            (udpPorts.Length > 0 ? $" udp {string.Join(',', udpPorts)}" : ""));
        Console.Out.Flush();
        await server.RunAsync(stop.Token);
        Console.Out.WriteLine($"onload-pipe-echo: stopped after {server.Connections} connections, {server.TcpBytes} TCP bytes and {server.Datagrams} datagrams echoed");
    }
    return 0;
});

return await root.Parse(args).InvokeAsync();

static int Usage(string message)
{
    Console.Error.WriteLine($"onload-pipe-echo: {message}");
    return 2;
}

static OnloadStack? OpenStack(string? interfaceName, string mode, string? vnic, string? addr, string? gateway)
{
    if ((interfaceName is null) == (vnic is null) || (vnic is null) != (addr is null))
    {
        Usage("--transport onload needs --interface IF (driverlink mode) or --vnic SPEC --addr IP/PREFIX (direct mode)");
        return null;
    }
    if (interfaceName is not null)
    {
        if (mode is not ("shared" or "exclusive"))
        {
            Usage($"--mode {mode}: shared or exclusive");
            return null;
        }
        return OnloadStack.Attach(interfaceName, mode == "shared" ? VnicMode.Shared : VnicMode.Exclusive);
    }
    int slash = addr!.IndexOf('/', StringComparison.Ordinal);
    if (slash < 0 || !IPAddress.TryParse(addr.AsSpan(0, slash), out var address) ||
        !int.TryParse(addr.AsSpan(slash + 1), System.Globalization.CultureInfo.InvariantCulture, out int prefix) || prefix is < 1 or > 32)
        throw new FormatException($"--addr {addr}: expected IP/PREFIX");
    return OnloadStack.Open(new OnloadStackOptions
    {
        Vnic = vnic,
        Address = address,
        PrefixLength = prefix,
        Gateway = gateway is null ? null : IPAddress.Parse(gateway),
    });
}
