using System.CommandLine;
using System.Globalization;
using System.Runtime.InteropServices;
using Onload.Apps.PingPong;
using Onload.Stack;
using Onload.Stack.Wire;
using Onload.Driverlink;
using Onload.Vnic;
using Onload.Vnic.Inspect;

const int TcpMaxMessage = 65536; // TcpPingPongServer's framing buffer

var interfaceOption = new Option<string?>("--interface") { Description = "driverlink mode: IF, whose address the kernel holds, through onload-driverd (instead of --vnic/--addr)" };
var modeOption = new Option<string>("--mode") { Description = "driverlink mode: shared or exclusive", DefaultValueFactory = _ => "exclusive" };
var vnicOption = new Option<string?>("--vnic") { Description = "VNIC spec KIND:NAME (af_packet:IF, af_xdp:IF, shm:NAME, tap:NAME)" };
var addrOption = new Option<string?>("--addr") { Description = "the stack's own address, IP/PREFIX (direct mode)" };
var gatewayOption = new Option<string?>("--gateway") { Description = "default gateway for destinations off the subnet" };
var serverOption = new Option<string?>("--server") { Description = "client: the server to ping, IP:PORT" };
var sizeOption = new Option<int>("--size") { Description = "UDP payload bytes per message (sockperf's -m)", DefaultValueFactory = _ => 64 };
var warmupOption = new Option<int>("--warmup") { Description = "client: messages sent before measuring, not recorded", DefaultValueFactory = _ => 1000 };
var countOption = new Option<long>("--count") { Description = "client: measured messages (default 100000 unless --seconds)" };
var secondsOption = new Option<double>("--seconds") { Description = "client: measure for this long instead of --count" };
var timeoutOption = new Option<int>("--timeout-ms") { Description = "client: a message without a reply after this long is lost (its reply, if it comes later, is stale)", DefaultValueFactory = _ => 1000 };
var sockperfOption = new Option<bool>("--sockperf") { Description = "speak sockperf's UDP message format (an unmodified 'sockperf server' answers)" };
var jsonOption = new Option<string?>("--json") { Description = "client: also write the results to this file as JSON" };
var labelOption = new Option<string?>("--label") { Description = "client: a name for this run in the JSON" };
var localPortOption = new Option<int>("--local-port") { Description = "client: local UDP port (0 = ephemeral)" };
var serverModeOption = new Option<bool>("--server-mode") { Description = "answer instead of asking: a busy-polling UDP server (sockperf-style with --sockperf, else plain echo)" };
var portOption = new Option<int>("--port") { Description = "server mode: UDP port to answer on", DefaultValueFactory = _ => 11111 };
var tcpOption = new Option<bool>("--tcp") { Description = "TCP instead of UDP: one connection with TCP_NODELAY, messages framed by their size (sockperf's --tcp)" };
var streamOption = new Option<bool>("--stream") { Description = "client, TCP: bulk throughput instead of ping-pong: write for --seconds into one connection to a sink that reads and closes" };
var connectRateOption = new Option<bool>("--connect-rate") { Description = "client, TCP: connection set-up rate: connect, --size bytes each way, the server closes, close; again (TCP_CRR)" };
var sinkOption = new Option<bool>("--sink") { Description = "server mode, TCP: read and discard, closing at the client's end of stream (the sink of --stream)" };
var kindsOption = new Option<bool>("--list-kinds") { Description = "print the VNIC kinds this build can open, one a line, and exit" };

var root = new RootCommand(
    "onload-pingpong: UDP or TCP ping-pong latency on the user-level stack, busy-polling (one message in flight; " +
    "reports half round trips). --server-mode answers instead; with --tcp, --stream measures bulk throughput and " +
    "--connect-rate connections per second.")
{
    interfaceOption, modeOption, vnicOption, addrOption, gatewayOption, serverOption, sizeOption, warmupOption, countOption, secondsOption,
    timeoutOption, sockperfOption, jsonOption, labelOption, localPortOption, serverModeOption, portOption, tcpOption,
    streamOption, connectRateOption, sinkOption, kindsOption,
};

root.SetAction(parse =>
{
    if (parse.GetValue(kindsOption))
    {
        foreach (string kind in VnicFactory.Kinds)
            Console.Out.WriteLine(kind);
        return 0;
    }
    bool serverMode = parse.GetValue(serverModeOption);
    bool sockperf = parse.GetValue(sockperfOption);
    string? spec = parse.GetValue(vnicOption);
    string? addr = parse.GetValue(addrOption);
    int size = parse.GetValue(sizeOption);
    bool tcp = parse.GetValue(tcpOption);
    bool stream = parse.GetValue(streamOption);
    bool connectRate = parse.GetValue(connectRateOption);
    if ((stream || connectRate) && (!tcp || serverMode))
        return Usage("--stream and --connect-rate are TCP client modes: they need --tcp and no --server-mode");
    if (stream && connectRate)
        return Usage("--stream or --connect-rate, not both");
    bool sink = parse.GetValue(sinkOption);
    if (sink && (!tcp || !serverMode || sockperf))
        return Usage("--sink is a TCP server mode: it needs --tcp and --server-mode, and not --sockperf");
    if (tcp && size > TcpMaxMessage)
        return Usage($"--size {size}: at most {TcpMaxMessage} bytes per TCP message");
    string? interfaceName = parse.GetValue(interfaceOption);
    if (interfaceName is null && (spec == null || addr == null))
        return Usage("--interface IF (driverlink mode), or --vnic and --addr (direct mode), is required");
    if (interfaceName is not null && (spec != null || addr != null))
        return Usage("--interface or --vnic/--addr, not both");
    if (parse.GetValue(modeOption) is not ("shared" or "exclusive"))
        return Usage($"--mode {parse.GetValue(modeOption)}: shared or exclusive");
    StackOptions options;
    Ipv4Endpoint server = default;
    try
    {
        // In driverlink mode the address is the kernel's: the session replaces this placeholder.
        options = new StackOptions
        {
            Address = addr is null ? default : Ipv4Cidr.Parse(addr),
            Gateway = parse.GetValue(gatewayOption) is { } g ? Ipv4Address.Parse(g) : null,
        };
        if (addr is not null)
            options.Validate();
        if (!serverMode)
        {
            string? s = parse.GetValue(serverOption);
            if (s == null)
                return Usage("--server IP:PORT is required (or --server-mode)");
            server = ParseEndpoint(s);
        }
    }
    catch (Exception e) when (e is FormatException or ArgumentException)
    {
        return Usage(e.Message);
    }
    int port = parse.GetValue(portOption);
    if (serverMode && port is < 1 or > 65535)
        return Usage($"--port {port}: must be 1..65535");
    int localPort = parse.GetValue(localPortOption);
    if (localPort is < 0 or > 65535)
        return Usage($"--local-port {localPort}: must be 0..65535");
    if (!stream && size < (sockperf ? SockperfHeader.Length : 8))
        return Usage($"--size {size}: at least {(sockperf ? SockperfHeader.Length : 8)} bytes (the {(sockperf ? "sockperf header" : "sequence number")})");
    if (parse.GetValue(timeoutOption) < 1)
        return Usage("--timeout-ms must be at least 1");

    OpenedStack opened;
    try
    {
        opened = interfaceName is not null
            ? OpenedStack.Driverlink(interfaceName, parse.GetValue(modeOption) == "shared" ? VnicMode.Shared : VnicMode.Exclusive, options)
            : OpenedStack.Direct(spec!, options);
    }
    catch (FormatException e)
    {
        return Usage(e.Message);
    }
    catch (Exception e) when (e is ArgumentException or IOException or UnauthorizedAccessException or InvalidOperationException)
    {
        Console.Error.WriteLine($"onload-pingpong: {e.Message}");
        return 1;
    }

    using (opened)
    {
        var stack = opened.Stack;
        if (!tcp && size > stack.UdpMaxPayload)
            return Usage($"--size {size}: more than one frame carries ({stack.UdpMaxPayload}); fragmentation is not supported");
        if (serverMode)
            return tcp
                ? RunServer(stack, new TcpPingPongServer(stack, (ushort)port, sockperf, sink), "tcp", (ushort)port,
                    sockperf ? "sockperf" : sink ? "sink" : "plain echo")
                : RunServer(stack, new PingPongServer(stack, (ushort)port, sockperf), "udp", (ushort)port,
                    sockperf ? "sockperf" : "plain echo");
        var settings = new ClientSettings
        {
            Server = server,
            Size = size,
            Warmup = Math.Max(0, parse.GetValue(warmupOption)),
            Count = parse.GetValue(countOption) is > 0 and var n ? n : parse.GetValue(secondsOption) > 0 ? 0 : 100_000,
            Seconds = Math.Max(0, parse.GetValue(secondsOption)),
            TimeoutNs = parse.GetValue(timeoutOption) * 1_000_000L,
            Sockperf = sockperf,
            LocalPort = (ushort)localPort,
            Tcp = tcp,
        };
        string? json = parse.GetValue(jsonOption);
        string? label = parse.GetValue(labelOption);
        if (stream)
            return RunStream(stack, settings, json, label);
        if (connectRate)
            return RunConnectRate(stack, settings, json, label);
        return tcp ? RunTcpClient(stack, settings, json, label) : RunClient(stack, settings, json, label);
    }
});

return root.Parse(args).Invoke();

static int Usage(string message)
{
    Console.Error.WriteLine($"onload-pingpong: {message}");
    return 2;
}

static Ipv4Endpoint ParseEndpoint(string text)
{
    int colon = text.LastIndexOf(':');
    if (colon <= 0 || !ushort.TryParse(text.AsSpan(colon + 1), NumberStyles.None, CultureInfo.InvariantCulture, out ushort port) || port == 0)
        throw new FormatException($"--server '{text}' is not IP:PORT");
    return new Ipv4Endpoint(Ipv4Address.Parse(text[..colon]), port);
}

static int RunClient(NetStack stack, ClientSettings settings, string? jsonPath, string? label)
{
    var client = new PingPongClient(stack, settings);
    int rc = client.Open();
    if (rc < 0)
    {
        Console.Error.WriteLine($"onload-pingpong: socket to {settings.Server}: {(Errno)(-rc)}");
        return 1;
    }
    using var signals = StopOnSignals(client.Stop);
    string limit = settings.Count > 0 ? $"{settings.Count} messages" : $"{settings.Seconds} s";
    Console.Out.WriteLine($"onload-pingpong: {stack.Vnic.Spec} {client.LocalEndpoint} -> {settings.Server}, {settings.Size} B UDP, " +
        $"{(settings.Sockperf ? "sockperf" : "plain")} format, busy-polling; warm-up {settings.Warmup}, then {limit}");
    Console.Out.Flush();

    if (settings.Warmup > 0 && client.RunWarmup() == 0)
    {
        WarmupFailed($"no reply to any of {settings.Warmup} warm-up messages from {settings.Server}", client);
        return 1;
    }
    client.RunMeasured();
    var summary = LatencySummary.From(client.Histogram);
    LatencyReport.Print(Console.Out, summary, client);
    if (jsonPath != null)
        LatencyReport.WriteJson(jsonPath, label, stack.Vnic.Spec, settings, summary, client);
    return summary.Samples > 0 ? 0 : 1;
}

// A busy-polling server until SIGINT or SIGTERM; "server ready" on stdout is what perf/latency.sh waits for.
static int RunServer(NetStack stack, BusyPollServer server, string protocol, ushort port, string answers)
{
    int rc = server.Open();
    if (rc < 0)
    {
        Console.Error.WriteLine($"onload-pingpong: {protocol} port {port}: {(Errno)(-rc)}");
        return 1;
    }
    using var signals = StopOnSignals(server.Stop);
    Console.Out.WriteLine($"onload-pingpong: server ready on {stack.Vnic.Spec} {stack.Address}:{port}, " +
        $"{(protocol == "tcp" ? "TCP, " : "")}{answers}, busy-polling");
    Console.Out.Flush();
    server.Run();
    Console.Out.WriteLine($"onload-pingpong: server {server.Tally}");
    return 0;
}

static int RunTcpClient(NetStack stack, ClientSettings settings, string? jsonPath, string? label)
{
    var client = new TcpPingPongClient(stack, settings);
    using var signals = StopOnSignals(client.Stop);
    int rc = client.Open();
    if (rc < 0)
    {
        Console.Error.WriteLine($"onload-pingpong: tcp connect to {settings.Server}: {(Errno)(-rc)}");
        return 1;
    }
    string limit = settings.Count > 0 ? $"{settings.Count} messages" : $"{settings.Seconds} s";
    Console.Out.WriteLine($"onload-pingpong: {stack.Vnic.Spec} {client.LocalEndpoint} -> {settings.Server}, {settings.Size} B TCP " +
        $"messages (TCP_NODELAY), {(settings.Sockperf ? "sockperf" : "plain")} format, busy-polling; warm-up {settings.Warmup}, then {limit}");
    Console.Out.Flush();
    if (settings.Warmup > 0 && client.RunWarmup() == 0)
    {
        WarmupFailed($"no reply to any of {settings.Warmup} warm-up messages from {settings.Server}", client);
        client.Close();
        return 1;
    }
    client.RunMeasured();
    client.Close();
    var summary = LatencySummary.From(client.Histogram);
    LatencyReport.Print(Console.Out, summary, client);
    if (client.Broken)
        Console.Error.WriteLine($"onload-pingpong: the connection failed: {(Errno)(-client.LastError)}");
    if (jsonPath != null)
        LatencyReport.WriteJson(jsonPath, label, stack.Vnic.Spec, settings, summary, client);
    return summary.Samples > 0 && !client.Broken ? 0 : 1;
}

static int RunStream(NetStack stack, ClientSettings settings, string? jsonPath, string? label)
{
    double seconds = settings.Seconds > 0 ? settings.Seconds : 10;
    var client = new TcpStreamClient(stack, settings.Server, seconds, settings.LocalPort);
    using var signals = StopOnSignals(client.Stop);
    Console.Out.WriteLine($"onload-pingpong: {stack.Vnic.Spec} {stack.Address} -> {settings.Server}, TCP stream for {seconds} s, busy-polling");
    Console.Out.Flush();
    int rc = client.Run();
    if (rc < 0)
    {
        Console.Error.WriteLine($"onload-pingpong: tcp connect to {settings.Server}: {(Errno)(-rc)}");
        return 1;
    }
    client.Print(Console.Out, stack.Counters);
    if (jsonPath != null)
        client.WriteJson(jsonPath, label, stack.Vnic.Spec, stack.Counters);
    return client.Confirmed && client.Bytes > 0 ? 0 : 1;
}

static int RunConnectRate(NetStack stack, ClientSettings settings, string? jsonPath, string? label)
{
    var client = new TcpConnectRateClient(stack, settings);
    using var signals = StopOnSignals(client.Stop);
    string limit = settings.Count > 0 ? $"{settings.Count} connections" : $"{settings.Seconds} s";
    Console.Out.WriteLine($"onload-pingpong: {stack.Vnic.Spec} {stack.Address} -> {settings.Server}, TCP connect, {settings.Size} B " +
        $"each way, server closes, close; busy-polling; warm-up {settings.Warmup}, then {limit}");
    Console.Out.Flush();
    if (settings.Warmup > 0 && client.RunWarmup() == 0)
    {
        WarmupFailed($"none of {settings.Warmup} warm-up connections to {settings.Server} completed", client);
        return 1;
    }
    client.RunMeasured();
    client.Print(Console.Out);
    if (jsonPath != null)
        client.WriteJson(jsonPath, label, stack.Vnic.Spec);
    return client.Connections > 0 ? 0 : 1;
}

// Ctrl-C and SIGTERM end the run in order (the results are still printed) instead of killing the process.
static IDisposable StopOnSignals(Action stop)
{
    var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, c => { c.Cancel = true; stop(); });
    var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, c => { c.Cancel = true; stop(); });
    return new Registrations(sigint, sigterm);
}

static void WarmupFailed(string what, LatencyClient client) =>
    Console.Error.WriteLine($"onload-pingpong: {what}" +
        (client.LastError != 0 ? $" (last error {(Errno)(-client.LastError)})" : ""));

sealed class Registrations(params IDisposable[] registrations) : IDisposable
{
    public void Dispose()
    {
        foreach (var r in registrations)
            r.Dispose();
    }
}
