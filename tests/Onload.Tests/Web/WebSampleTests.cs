using Onload.Tests.Driverlink;
using Onload.Tests.Interop;
using Onload.Tests.Netns;

namespace Onload.Tests.Web;

/// <summary>
/// The published <c>onload-web-sample</c> (NativeAOT) in the stack side's namespace, served from the stack in direct
/// mode (AF_XDP on the veth, an address the kernel does not hold), in driverlink mode (the kernel's address, through
/// this fixture's onload-driverd) and, as the reference, from kernel sockets; kernel curl and wrk on the other side.
/// </summary>
[TestFixture("direct")]
[TestFixture("driverlink")]
[TestFixture("kernel")]
[NonParallelizable]
public sealed class WebSampleTests(string mode) : WebServerSpec
{
    private NamespacePair? _pair;
    private DriverlinkPair? _driverlink;
    private NsProcess? _sample;
    private KernelHttpClient? _client;

    protected override KernelHttpClient Client => _client ?? throw new InvalidOperationException("not set up");

    protected override string Greeting => $"Hello from onload-web-sample over {(mode == "kernel" ? "kernel" : "onload")}";

    [OneTimeSetUp]
    public void StartSample()
    {
        Netns.Netns.RequireRoot();
        string sample = Dist.Bin("onload-web-sample");
        string[] urls = ["--urls", $"http://*:{Port}"];
        string address;
        switch (mode)
        {
            case "direct":
                _pair = new NamespacePair();
                address = _pair.StackAddress;
                _sample = _pair.Stack.Start(sample, [.. urls, "--transport", "onload",
                    "--vnic", $"af_xdp:{_pair.StackIf}", "--addr", $"{address}/{_pair.PrefixLength}"]);
                break;
            case "driverlink":
                _driverlink = new DriverlinkPair();
                _pair = _driverlink.Pair;
                address = _driverlink.HostAddress;
                _sample = _driverlink.StartClient("onload-web-sample", [.. urls, "--transport", "onload", "--interface", _driverlink.Interface]);
                break;
            case "kernel":
                _driverlink = DriverlinkPair.WithoutDaemon();
                _pair = _driverlink.Pair;
                address = _driverlink.HostAddress;
                _sample = _pair.Stack.Start(sample, [.. urls, "--transport", "kernel"]);
                break;
            default:
                throw new ArgumentException(mode, nameof(mode));
        }
        _sample.WaitForOutput("onload-web-sample: ready", DriverlinkPair.Deadline);
        _client = new KernelHttpClient(_pair.Kernel, $"http://{address}:{Port}");
    }

    [TearDown]
    public void SampleStillRuns()
    {
        // A test that crashed the server shows here, with its output, rather than as the next test's refused connection.
        if (_sample is { HasExited: true } s)
            Assert.Fail($"onload-web-sample exited {s.ExitCode}; stdout: {s.Stdout.Trim()}; stderr: {s.Stderr.Trim()}");
    }

    [OneTimeTearDown]
    public void StopSample()
    {
        _sample?.Dispose();
        _driverlink?.Dispose();
        _pair?.Dispose();
    }
}
