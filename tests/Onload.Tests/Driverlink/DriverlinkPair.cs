using Onload.Driverlink;
using Onload.Tests.Interop;
using Onload.Tests.Netns;

namespace Onload.Tests.Driverlink;

/// <summary>
/// Driverlink mode between two namespaces: the stack side's kernel holds <see cref="HostAddress"/> on its veth end,
/// and a test's own <c>onload-driverd</c> runs there on an abstract name of its own (so parallel fixtures never
/// share a daemon). Dispose kills the clients and the daemon by pid, then deletes the namespaces.
/// </summary>
public sealed class DriverlinkPair : IDisposable
{
    public static readonly TimeSpan Deadline = TimeSpan.FromSeconds(20);

    private readonly NamespacePair _pair;

    /// <summary>The pair with no daemon: for tests of a client starting one on demand.</summary>
    public static DriverlinkPair WithoutDaemon() => new(startDaemon: false, []);

    public DriverlinkPair(params string[] daemonArgs)
        : this(startDaemon: true, daemonArgs)
    {
    }

    private DriverlinkPair(bool startDaemon, string[] daemonArgs)
    {
        Netns.Netns.RequireRoot();
        _pair = new NamespacePair();
        try
        {
            _pair.Stack.Ip($"addr add {HostAddress}/{_pair.PrefixLength} dev {Interface}");
            _pair.Stack.Exec($"ethtool -K {Interface} tx off tso off gso off gro off");
            SocketName = $"onload-test-{Environment.ProcessId}-{_pair.Instance}";
            if (startDaemon)
                Daemon = StartDaemon(daemonArgs);
        }
        catch
        {
            _pair.Dispose();
            throw;
        }
    }

    public NamespacePair Pair => _pair;

    /// <summary>The accelerated interface (the stack side's veth end).</summary>
    public string Interface => _pair.StackIf;

    /// <summary>The stack side's address, held by its kernel and used by every client's stack.</summary>
    public string HostAddress => _pair.StackAddress;

    public string PeerAddress => _pair.KernelAddress;

    public string SocketName { get; }

    public NsProcess Daemon { get; private set; } = null!;

    public TestNamespace Host => _pair.Stack;

    public TestNamespace Peer => _pair.Kernel;

    public NsProcess StartDaemon(params string[] extra)
    {
        string[] pins = extra.Contains("--pin-root") ? [] : ["--pin-root", "none"];
        var d = Host.Start(Dist.Bin("onload-driverd"), ["--foreground", "--interface", Interface, "--socket-name", SocketName,
            .. pins, .. extra]);
        d.WaitForOutput("listening on", Deadline);
        Daemon = d;
        return d;
    }

    /// <summary>The XDP programs attached to the accelerated interface, by id, as <c>ip -d link</c> shows them.</summary>
    public string[] XdpProgramIds()
    {
        string link = Host.Ip($"-d link show dev {Interface}");
        return System.Text.RegularExpressions.Regex.Matches(link, @"prog/xdp id (\d+)").Select(m => m.Groups[1].Value).ToArray();
    }

    /// <summary>Starts an accelerated program on the stack side, talking to this fixture's daemon only.</summary>
    public NsProcess StartClient(string program, params string[] args) =>
        Host.Start("env", [$"ONLOAD_DRIVERD_SOCKET={SocketName}", "ONLOAD_DRIVERD_AUTOSTART=0", Dist.Bin(program), .. args]);

    public DriverlinkClientOptions ClientOptions => new() { SocketName = SocketName, StartDaemon = false };

    /// <summary>Runs <paramref name="f"/> on a thread in the stack side's namespace (sockets made there stay there).</summary>
    public T InHost<T>(Func<T> f) => Host.Run(f);

    /// <summary>
    /// Whether a kernel program on the stack side would find <paramref name="port"/> taken: a bound kernel socket
    /// that is not listening shows in no <c>ss</c> table, so this tries to bind it (socat, half a second).
    /// </summary>
    public bool KernelPortHeld(string protocol, int port)
    {
        string address = protocol == "tcp" ? $"TCP-LISTEN:{port},bind={HostAddress}" : $"UDP-RECV:{port},bind={HostAddress}";
        var r = Netns.Netns.Exec("ip", ["netns", "exec", Host.Name, "timeout", "0.5", "socat", "-u", address, "/dev/null"], Deadline);
        return r.Stderr.Contains("Address already in use", StringComparison.Ordinal);
    }

    /// <summary>The daemon's resident memory and open descriptors.</summary>
    public (long RssKiB, int Fds) DaemonFootprint()
    {
        long rss = 0;
        foreach (string line in File.ReadLines($"/proc/{Daemon.Pid}/status"))
            if (line.StartsWith("VmRSS:", StringComparison.Ordinal))
                rss = long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], System.Globalization.CultureInfo.InvariantCulture);
        return (rss, Directory.GetFiles($"/proc/{Daemon.Pid}/fd").Length);
    }

    /// <summary>The daemon's open descriptors and what each refers to.</summary>
    public string[] DaemonDescriptors() =>
        Directory.GetFiles($"/proc/{Daemon.Pid}/fd")
            .Select(f => $"{Path.GetFileName(f)} -> {new FileInfo(f).LinkTarget}")
            .ToArray();

    public void Dispose() => _pair.Dispose();
}
