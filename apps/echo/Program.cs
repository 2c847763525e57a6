using System.CommandLine;
using System.Runtime.InteropServices;
using Onload.Apps.Echo;
using Onload.Driverlink;
using Onload.Stack;
using Onload.Stack.Wire;
using Onload.Vnic;
using Onload.Vnic.Inspect;

var interfaceOption = new Option<string?>("--interface") { Description = "driverlink mode: accelerate IF, whose address the kernel holds, through onload-driverd (the default mode)" };
var modeOption = new Option<string>("--mode") { Description = "driverlink mode: shared (the daemon forwards into our own rings) or exclusive (our own AF_XDP socket)", DefaultValueFactory = _ => "shared" };
var vnicOption = new Option<string?>("--vnic") { Description = "direct mode: VNIC spec KIND:NAME (af_packet:IF, af_xdp:IF[:QUEUE], tap:NAME, shm:NAME)" };
var addrOption = new Option<string?>("--addr") { Description = "direct mode: the stack's own address, IP/PREFIX, which the kernel does not hold" };
var gatewayOption = new Option<string?>("--gateway") { Description = "default gateway for destinations off the subnet" };
var udpOption = new Option<int[]>("--udp") { Description = "UDP port to echo (repeatable)", AllowMultipleArgumentsPerToken = false };
var tcpOption = new Option<int[]>("--tcp") { Description = "TCP port to echo (repeatable)", AllowMultipleArgumentsPerToken = false };
var sinkOption = new Option<int[]>("--tcp-sink") { Description = "TCP port that reads and discards, printing each stream's length and SHA-256 at its end", AllowMultipleArgumentsPerToken = false };
var httpOption = new Option<int[]>("--http") { Description = "TCP port with a minimal HTTP/1.1 responder: GET /bytes/N answers N bytes", AllowMultipleArgumentsPerToken = false };
var statsOption = new Option<bool>("--stats-on-exit") { Description = "print the stack's counters on exit (always on for SIGINT/SIGTERM)" };

var root = new RootCommand("onload-echo: echoes UDP and TCP on the user-level stack (and answers ping in direct mode)")
{
    interfaceOption, modeOption, vnicOption, addrOption, gatewayOption, udpOption, tcpOption, sinkOption, httpOption, statsOption,
};

root.SetAction(parse =>
{
    var settings = Settings.FromEnvironment();
    string? interfaceName = parse.GetValue(interfaceOption);
    string? vnicSpec = parse.GetValue(vnicOption);
    string? addr = parse.GetValue(addrOption);
    if ((interfaceName is null) == (vnicSpec is null) || (vnicSpec is null) != (addr is null))
    {
        Console.Error.WriteLine("onload-echo: give either --interface IF (driverlink mode) or --vnic SPEC --addr IP/PREFIX (direct mode)");
        return 2;
    }
    VnicMode vnicMode;
    switch (parse.GetValue(modeOption))
    {
        case "shared": vnicMode = VnicMode.Shared; break;
        case "exclusive": vnicMode = VnicMode.Exclusive; break;
        default:
            Console.Error.WriteLine($"onload-echo: --mode {parse.GetValue(modeOption)}: expected shared or exclusive");
            return 2;
    }
    StackOptions options;
    try
    {
        // In driverlink mode the address is the kernel's: the session replaces this placeholder.
        options = StackSettings.FromEnvironment().ApplyTo(new StackOptions
        {
            Address = addr is null ? default : Ipv4Cidr.Parse(addr),
            Gateway = parse.GetValue(gatewayOption) is { } g ? Ipv4Address.Parse(g) : null,
        });
        if (addr is not null)
            options.Validate();
    }
    catch (Exception e) when (e is FormatException or ArgumentException)
    {
        Console.Error.WriteLine($"onload-echo: {e.Message}");
        return 2;
    }
    var ports = parse.GetValue(udpOption) ?? [];
    var tcpPorts = parse.GetValue(tcpOption) ?? [];
    var sinkPorts = parse.GetValue(sinkOption) ?? [];
    var httpPorts = parse.GetValue(httpOption) ?? [];
    foreach (int p in ports.Concat(tcpPorts).Concat(sinkPorts).Concat(httpPorts))
        if (p is < 1 or > 65535)
        {
            Console.Error.WriteLine($"onload-echo: --udp {p}: port must be 1..65535");
            return 2;
        }

    OpenedStack opened;
    try
    {
        opened = interfaceName is not null ? OpenedStack.Driverlink(interfaceName, vnicMode, options) : OpenedStack.Direct(vnicSpec!, options);
    }
    catch (Exception e) when (e is FormatException)
    {
        Console.Error.WriteLine($"onload-echo: {e.Message}");
        return 2;
    }
    catch (Exception e) when (e is ArgumentException or IOException or UnauthorizedAccessException or InvalidOperationException)
    {
        Console.Error.WriteLine($"onload-echo: {e.Message}");
        return 1;
    }

    using (opened)
    {
        var stack = opened.Stack;
        var vnic = opened.Vnic;
        options = stack.Options;
        if (settings.Trace)
            stack.Trace = (tx, frame) => Console.Out.WriteLine((tx ? "> " : "< ") + PacketPrinter.Format(frame));
        var server = new EchoServer(stack, settings);
        foreach (int p in ports)
        {
            int rc = server.AddUdpPort((ushort)p);
            if (rc < 0)
            {
                Console.Error.WriteLine($"onload-echo: udp port {p}: {(Errno)(-rc)}");
                return 1;
            }
        }
        foreach (var (p, mode) in tcpPorts.Select(p => (p, EchoServer.TcpMode.Echo))
                     .Concat(sinkPorts.Select(p => (p, EchoServer.TcpMode.Sink)))
                     .Concat(httpPorts.Select(p => (p, EchoServer.TcpMode.Http))))
        {
            int rc = server.AddTcpPort((ushort)p, mode);
            if (rc < 0)
            {
                Console.Error.WriteLine($"onload-echo: tcp port {p}: {(Errno)(-rc)}");
                return 1;
            }
        }
        using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, c => { c.Cancel = true; server.Stop(); });
        using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, c => { c.Cancel = true; server.Stop(); });
        Console.Out.WriteLine($"onload-echo: ready on {vnic.Spec} mac {vnic.MacAddress} addr {options.Address}" +
            (ports.Length > 0 ? $" udp {string.Join(',', ports)}" : "") +
            (tcpPorts.Length > 0 ? $" tcp {string.Join(',', tcpPorts)}" : "") +
            (sinkPorts.Length > 0 ? $" tcp-sink {string.Join(',', sinkPorts)}" : "") +
            (httpPorts.Length > 0 ? $" http {string.Join(',', httpPorts)}" : ""));
        Console.Out.Flush();
        server.Run();
        if (server.Stopped || parse.GetValue(statsOption))
            Stats.Print(stack, Console.Out);
    }
    return 0;
});

return root.Parse(args).Invoke();
