using System.CommandLine;
using System.Runtime.InteropServices;
using Onload.Apps.Driverd;
using Onload.Driverlink;

var interfaceOption = new Option<string[]>("--interface") { Description = "an interface clients may accelerate (repeatable; also ONLOAD_INTERFACES, comma-separated; none: any but lo)", AllowMultipleArgumentsPerToken = false };
var socketOption = new Option<string>("--socket-name") { Description = "abstract socket name (per network namespace)", DefaultValueFactory = _ => DriverlinkSocket.DefaultName };
var foregroundOption = new Option<bool>("--foreground") { Description = "stay in the foreground (for a service manager); never exits for lack of clients unless --grace is given" };
var graceOption = new Option<double?>("--grace") { Description = "exit this many seconds after the last client left (default 10 when started on demand)" };
var maxVnicsOption = new Option<int?>("--max-vnics") { Description = "VNICs in all (default 64)" };
var maxFiltersOption = new Option<int?>("--max-filters") { Description = "filters (ports) per VNIC (default 16384)" };
var maxFiltersTotalOption = new Option<int?>("--max-filters-total") { Description = "filters per interface over all VNICs: the XDP filter map's size (default 65536)" };
var maxRingOption = new Option<int?>("--max-ring-size") { Description = "largest RX/TX ring a client may ask for (default 4096)" };
var maxBuffersOption = new Option<int?>("--max-buffers") { Description = "most packet buffers per VNIC (default 65536)" };
var pinOption = new Option<string?>("--pin-root") { Description = "bpffs directory for the XDP program's pins ('none': do not pin; default /sys/fs/bpf/onload)" };
var allowOption = new Option<string[]>("--allow") { Description = "let user UID attach (to interface IF only with UID@IF); root and the daemon's own user always may (repeatable)", AllowMultipleArgumentsPerToken = false };
var reattachOption = new Option<double?>("--reattach-window") { Description = "seconds an adopted program's filters stay for the clients of the daemon that died to reattach and claim them (default 10)" };
var configOption = new Option<string?>("--config") { Description = "a file of 'key = value' settings (the flags' names without '--'; 'interfaces' comma-separated); flags override it" };

var root = new RootCommand("onload-driverd: the primary driver of a network namespace: owns the accelerated interfaces and gives each process its own VNIC")
{
    interfaceOption, socketOption, foregroundOption, graceOption, maxVnicsOption, maxFiltersOption, maxRingOption, maxBuffersOption, pinOption,
    configOption, allowOption, maxFiltersTotalOption, reattachOption,
};

root.SetAction(parse =>
{
    bool foreground = parse.GetValue(foregroundOption);
    var options = new DaemonOptions { Foreground = foreground, Grace = foreground ? null : TimeSpan.FromSeconds(10) };
    if (parse.GetValue(configOption) is { } config)
    {
        try
        {
            options = DaemonConfig.Apply(config, options);
        }
        catch (Exception e) when (e is FormatException or IOException or UnauthorizedAccessException)
        {
            Console.Error.WriteLine($"onload-driverd: {e.Message}");
            return 2;
        }
    }
    var interfaces = options.Interfaces.Concat(parse.GetValue(interfaceOption) ?? []).ToList();
    if (Environment.GetEnvironmentVariable("ONLOAD_INTERFACES") is { Length: > 0 } fromEnv)
        interfaces.AddRange(fromEnv.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));
    string? pin = parse.GetValue(pinOption);
    options = options with
    {
        Interfaces = interfaces.Distinct().ToList(),
        SocketName = parse.GetValue(socketOption)!,
        Grace = (parse.GetValue(graceOption) ?? GraceFromEnvironment()) is { } g ? TimeSpan.FromSeconds(g) : options.Grace,
        MaxVnics = parse.GetValue(maxVnicsOption) ?? options.MaxVnics,
        MaxFiltersPerVnic = parse.GetValue(maxFiltersOption) ?? options.MaxFiltersPerVnic,
        MaxFiltersTotal = parse.GetValue(maxFiltersTotalOption) ?? options.MaxFiltersTotal,
        MaxRingSize = parse.GetValue(maxRingOption) ?? options.MaxRingSize,
        MaxBuffers = parse.GetValue(maxBuffersOption) ?? options.MaxBuffers,
        PinRoot = pin is null ? options.PinRoot : pin == "none" ? null : pin,
        ReattachWindow = parse.GetValue(reattachOption) is { } w && w >= 0 ? TimeSpan.FromSeconds(w) : options.ReattachWindow,
    };
    try
    {
        var grants = (parse.GetValue(allowOption) ?? []).SelectMany(g => DaemonConfig.ParseGrants(g, "--allow")).ToList();
        options = options with { Grants = [.. options.Grants, .. grants] };
    }
    catch (FormatException e)
    {
        Console.Error.WriteLine($"onload-driverd: {e.Message}");
        return 2;
    }
    options = options with
    {
        DefaultRingSize = Math.Min(options.DefaultRingSize, options.MaxRingSize),
        DefaultBuffers = Math.Min(options.DefaultBuffers, options.MaxBuffers),
    };
    if (options.MaxVnics < 1 || options.MaxFiltersPerVnic < 1 || options.MaxFiltersTotal < 1 || options.MaxRingSize < 64 || options.MaxBuffers < 128)
    {
        Console.Error.WriteLine("onload-driverd: --max-vnics, --max-filters and --max-filters-total are at least 1, --max-ring-size 64, --max-buffers 128");
        return 2;
    }
    if (!foreground)
        _ = NativeSession.Start();

    Daemon daemon;
    try
    {
        daemon = new Daemon(options);
    }
    catch (DriverlinkSocketException e) when (e.Errno == 98) // EADDRINUSE: another daemon listens here already
    {
        Console.Error.WriteLine($"onload-driverd: a daemon already listens on @{options.SocketName} in this namespace");
        return 0;
    }
    catch (IOException e)
    {
        Console.Error.WriteLine($"onload-driverd: {e.Message}");
        return 1;
    }
    NativeSession.UnblockSignals();
    NativeSession.HearReloads();
    using var stopInt = PosixSignalRegistration.Create(PosixSignal.SIGINT, c => { c.Cancel = true; daemon.Stop(); });
    using var stopTerm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, c => { c.Cancel = true; daemon.Stop(); });
    using var reload = PosixSignalRegistration.Create(PosixSignal.SIGHUP, c => { c.Cancel = true; daemon.RequestReload(); });
    using (daemon)
        daemon.Run();
    Daemon.Log("stopped");
    return 0;
});

return root.Parse(args).Invoke();

// ONLOAD_DRIVERD_GRACE: the grace period of a daemon a client started (it passes no flags but the socket name).
static double? GraceFromEnvironment() =>
    double.TryParse(Environment.GetEnvironmentVariable("ONLOAD_DRIVERD_GRACE"), System.Globalization.NumberStyles.Float,
        System.Globalization.CultureInfo.InvariantCulture, out double g) && g >= 0 ? g : null;

internal static partial class NativeSession
{
    /// <summary>setsid(2): a session of its own, so the terminal's signals and its starter's exit leave it be.</summary>
    [LibraryImport("libc", EntryPoint = "setsid")]
    public static partial int Start();

    /// <summary>
    /// Unblocks every signal on this thread. A daemon started on demand by a program under onload-run inherits the
    /// mask the stack loaded under (libonload.so blocks the program's signals while the runtime starts its threads),
    /// and would otherwise never see SIGTERM or SIGHUP.
    /// </summary>
    public static unsafe void UnblockSignals()
    {
        const int SIG_SETMASK = 2;
        ulong* none = stackalloc ulong[16]; // sigset_t: 1024 bits
        new Span<ulong>(none, 16).Clear();
        _ = SigprocMask(SIG_SETMASK, none, null);
    }

    [LibraryImport("libc", EntryPoint = "pthread_sigmask")]
    private static unsafe partial int SigprocMask(int how, ulong* set, ulong* old);

    /// <summary>
    /// Gives SIGHUP its default disposition back before the daemon registers for it. Started from a shell under
    /// nohup (or by a program so started), the daemon inherits SIGHUP ignored, and the runtime leaves a signal that
    /// was ignored when it registers alone: every reload request would then be lost (seen: the reconfiguration test
    /// run under nohup never saw a suspension).
    /// </summary>
    public static void HearReloads()
    {
        const int SIGHUP = 1;
        _ = Signal(SIGHUP, 0); // SIG_DFL
    }

    [LibraryImport("libc", EntryPoint = "signal")]
    private static partial nint Signal(int signal, nint handler);
}
