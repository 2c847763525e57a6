using System.Globalization;
using Onload.Stack;
using Onload.Stack.Wire;
using Onload.Tests.Netns;
using Onload.Vnic;

namespace Onload.Tests.Interop;

/// <summary>
/// Where the stack meets the Linux kernel for one backend. For <c>af_packet</c> and <c>af_xdp</c>, two namespaces
/// joined by a veth (the stack on one end, the kernel on the other); for <c>tap</c>, one namespace whose kernel owns a
/// TAP device that the stack opens from the wire side; and, through <see cref="ThroughLossyPath"/>, three namespaces
/// with a router that drops packets between the stack and the kernel (<see cref="Onload.Tests.Interop.LossyPath"/>).
/// </summary>
public sealed class KernelPeer : IDisposable
{
    private readonly NamespacePair? _pair;
    private readonly TestNamespace? _single;
    private readonly string? _tap;
    private readonly LossyPath? _path;
    private readonly List<NetStack> _stacks = [];
    private bool _tapUp;

    public KernelPeer(string kind)
    {
        Netns.Netns.RequireRoot();
        Kind = kind;
        if (kind is "af_packet" or "af_xdp")
        {
            _pair = new NamespacePair();
            VnicSpec = kind + ":" + _pair.StackIf;
            KernelAddress = _pair.KernelAddress;
            StackAddress = _pair.StackAddress;
            return;
        }
        if (kind != "tap")
            throw new ArgumentException($"no kernel peer for '{kind}'");
        int instance = TestNames.NextInstance();
        _single = new TestNamespace(instance, 'k');
        _tap = TestNames.Make(instance, 't');
        int n = (Environment.ProcessId * 31 + instance) % 250 + 1;
        KernelAddress = string.Create(CultureInfo.InvariantCulture, $"10.78.{n}.1");
        StackAddress = string.Create(CultureInfo.InvariantCulture, $"10.78.{n}.2");
        VnicSpec = "tap:" + _tap;
    }

    /// <summary>The stack and the kernel on subnets of their own, joined by a router that drops
    /// <paramref name="lossPercent"/>% of the packets at random each way; the stack routes through
    /// <see cref="Gateway"/>.</summary>
    public static KernelPeer ThroughLossyPath(string kind, int lossPercent) => new(kind, lossPercent);

    private KernelPeer(string kind, int lossPercent)
    {
        Netns.Netns.RequireRoot();
        if (kind is not ("af_packet" or "af_xdp"))
            throw new ArgumentException($"no lossy path for '{kind}': the stack needs a veth end");
        Kind = kind;
        _path = new LossyPath(lossPercent);
        VnicSpec = kind + ":" + _path.StackIf;
        KernelAddress = _path.KernelAddress;
        StackAddress = _path.StackAddress;
        Gateway = _path.StackGateway;
    }

    public string Kind { get; }
    public string VnicSpec { get; }
    public string KernelAddress { get; }
    public string StackAddress { get; }
    public string StackCidr => StackAddress + "/24";

    /// <summary>The stack's gateway to the kernel's subnet when a router stands between them, else null.</summary>
    public string? Gateway { get; }

    /// <summary>The router between the stack and the kernel (<see cref="ThroughLossyPath"/> only).</summary>
    public LossyPath LossyPath => _path ?? throw new InvalidOperationException("no router on a direct path");

    /// <summary>Whether the stack's interface also belongs to a kernel that can serve on it (a veth end: yes;
    /// a TAP, whose kernel side is the peer itself: no).</summary>
    public bool StackInterfaceHasItsOwnKernel => _pair is not null;

    /// <summary>Gives the stack namespace's kernel an address of its own on the stack's interface (.3).</summary>
    public string AddKernelAddressBesideTheStack()
    {
        if (_pair is null)
            throw new InvalidOperationException("only a veth pair has a kernel on the stack's side");
        string address = StackAddress[..StackAddress.LastIndexOf('.')] + ".3";
        _pair.Stack.Ip($"addr add {address}/24 dev {_pair.StackIf}");
        return address;
    }

    /// <summary>The kernel's interface facing the stack: the veth end, or the TAP.</summary>
    public string KernelInterface => _pair?.KernelIf ?? _path?.KernelIf ?? _tap!;

    public TestNamespace KernelNs => _pair?.Kernel ?? _path?.Kernel ?? _single!;
    public TestNamespace StackNs => _pair?.Stack ?? _path?.Stack ?? _single!;

    /// <summary>
    /// An in-process stack owning <see cref="StackAddress"/> on the stack's interface, its VNIC opened from inside
    /// the stack's namespace (once open, it works from any thread). <paramref name="configure"/> adjusts the
    /// options; <paramref name="ringSize"/> and <paramref name="bufferCount"/>, if set, the VNIC's rings and packet buffers. The stack and its VNIC are closed on Dispose, before the namespaces go, even when a test fails.
    /// </summary>
    public NetStack OpenStack(Func<StackOptions, StackOptions>? configure = null, int ringSize = 0, int bufferCount = 0)
    {
        var address = Ipv4Cidr.Parse(StackCidr);
        var vnicOptions = new VnicOptions { LocalIpv4 = address.Address.Value };
        if (ringSize > 0)
            vnicOptions = vnicOptions with { RingSize = ringSize };
        if (bufferCount > 0)
            vnicOptions = vnicOptions with { BufferCount = bufferCount };
        var vnic = StackNs.Run(() => VnicFactory.Open(VnicSpec, vnicOptions));
        NetStack stack;
        try
        {
            var options = new StackOptions { Address = address, Gateway = Gateway is null ? null : Ipv4Address.Parse(Gateway) };
            stack = new NetStack(vnic, configure is null ? options : configure(options));
        }
        catch
        {
            vnic.Dispose();
            throw;
        }
        _stacks.Add(stack);
        StackIsUp();
        return stack;
    }

    /// <summary>Polls <paramref name="stack"/> until <paramref name="condition"/> holds, sleeping on the VNIC only while
    /// no frame comes (a 1 ms bound keeps the stack's timers running); fails the test after <paramref name="deadline"/>.</summary>
    public static void Drive(NetStack stack, Func<bool> condition, TimeSpan deadline, Func<string> what)
    {
        ArgumentNullException.ThrowIfNull(stack);
        ArgumentNullException.ThrowIfNull(condition);
        ArgumentNullException.ThrowIfNull(what);
        var clock = System.Diagnostics.Stopwatch.StartNew();
        while (!condition())
        {
            if (clock.Elapsed > deadline)
                Assert.Fail($"timed out after {deadline.TotalSeconds:0.#} s waiting for {what()}");
            if (stack.Poll() == 0)
                VnicWait.Wait(stack.Vnic, 1);
        }
    }

    /// <summary>Called once the stack has opened its VNIC: a TAP exists only from then on, and gets the kernel's address.</summary>
    public void StackIsUp()
    {
        if (_tap is null || _tapUp)
            return;
        _tapUp = true;
        KernelNs.DisableIpv6(_tap);
        KernelNs.Ip($"addr add {KernelAddress}/24 dev {_tap}");
        KernelNs.Ip($"link set {_tap} up");
    }

    /// <summary>The MAC the kernel's neighbour table holds for the stack's address, or null.</summary>
    public string? KernelNeighbourMac()
    {
        string line = KernelNs.Ip($"neigh show {StackAddress}");
        int at = line.IndexOf("lladdr ", StringComparison.Ordinal);
        return at < 0 ? null : line.Substring(at + 7, 17);
    }

    /// <summary>One of the kernel's SNMP counters in its namespace (<c>nstat -az</c>: absolute, so no other user of
    /// nstat's history file shifts it). Counters are per namespace: only this peer's connections count.</summary>
    public long KernelCounter(string name)
    {
        string line = KernelNs.Exec($"nstat -az {name}");
        var m = System.Text.RegularExpressions.Regex.Match(line, name + @"\s+(\d+)");
        if (!m.Success)
            throw new InvalidOperationException($"no {name} in nstat's output: {line}");
        return long.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture);
    }

    public void Dispose()
    {
        // A stack's socket (and an AF_XDP program) must not stay on the interface for the next test.
        foreach (var stack in _stacks)
        {
            stack.Dispose();
            stack.Vnic.Dispose();
        }
        _stacks.Clear();
        _pair?.Dispose();
        _single?.Dispose();
        _path?.Dispose();
    }
}
