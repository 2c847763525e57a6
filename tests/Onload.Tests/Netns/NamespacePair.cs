using System.Globalization;

namespace Onload.Tests.Netns;

/// <summary>
/// Two network namespaces joined by a veth pair: the kernel side, whose Linux stack is the peer under test, with
/// <see cref="KernelAddress"/>; and the stack side, whose veth end is up with no IPv4 address and IPv6 off, for
/// the user-level stack to own <see cref="StackAddress"/> on (its namespace's kernel stays quiet). Dispose (also
/// on a failed test, through <c>using</c>) kills the processes started through it and deletes both namespaces,
/// which removes the veths.
/// </summary>
/// <remarks>
/// The kernel side's offloads are off (tx checksum, TSO, GSO, GRO): with them on, the kernel hands the veth
/// 64 KiB TCP frames and UDP frames with unfinished checksums, which no real wire carries (MACHINE-NOTES.md).
/// Each pair has its own subnet 10.77.N.0/24 (N from pid and instance); the namespaces isolate pairs anyway.
/// </remarks>
public sealed class NamespacePair : IDisposable
{
    private readonly TestNamespace? _kernel;
    private readonly TestNamespace? _stack;
    private bool _disposed;

    public NamespacePair()
    {
        Instance = TestNames.NextInstance();
        KernelNs = TestNames.Make(Instance, 'k');
        StackNs = TestNames.Make(Instance, 's');
        KernelIf = KernelNs;
        StackIf = StackNs;
        int n = (Environment.ProcessId * 31 + Instance) % 250 + 1;
        Subnet = string.Create(CultureInfo.InvariantCulture, $"10.77.{n}.0");
        KernelAddress = string.Create(CultureInfo.InvariantCulture, $"10.77.{n}.1");
        StackAddress = string.Create(CultureInfo.InvariantCulture, $"10.77.{n}.2");

        try
        {
            _kernel = new TestNamespace(KernelNs);
            _stack = new TestNamespace(StackNs);
            // Created straight in the two namespaces: nothing appears in the root namespace, even briefly.
            _kernel.Ip($"link add {KernelIf} type veth peer name {StackIf} netns {StackNs}");
            _kernel.DisableIpv6(KernelIf);
            _stack.DisableIpv6(StackIf);
            _kernel.Exec($"ethtool -K {KernelIf} tx off tso off gso off gro off");
            _kernel.Ip($"addr add {KernelAddress}/{PrefixLength} dev {KernelIf}");
            _kernel.Ip($"link set {KernelIf} up");
            _stack.Ip($"link set {StackIf} up");
            KernelMac = ReadMac(_kernel, KernelIf);
            StackIfMac = ReadMac(_stack, StackIf);
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    public int Instance { get; }
    public string KernelNs { get; }
    public string StackNs { get; }
    public string KernelIf { get; }
    public string StackIf { get; }
    public string KernelAddress { get; }
    /// <summary>The address the user-level stack owns; no kernel holds it.</summary>
    public string StackAddress { get; }
    public int PrefixLength => 24;
    /// <summary>The network address, e.g. 10.77.5.0.</summary>
    public string Subnet { get; }
    /// <summary>"aa:bb:cc:dd:ee:ff" of the kernel side's veth.</summary>
    public string KernelMac { get; } = "";
    /// <summary>"aa:bb:cc:dd:ee:ff" of the stack side's veth (what an af_packet VNIC on it uses).</summary>
    public string StackIfMac { get; } = "";

    public TestNamespace Kernel => _kernel ?? throw new ObjectDisposedException(nameof(NamespacePair));
    public TestNamespace Stack => _stack ?? throw new ObjectDisposedException(nameof(NamespacePair));

    /// <summary>Starts a program in namespace <paramref name="ns"/> (<see cref="KernelNs"/> or <see cref="StackNs"/>);
    /// it is killed on Dispose.</summary>
    public NsProcess Start(string ns, string program, params string[] args)
    {
        if (ns == KernelNs)
            return Kernel.Start(program, args);
        if (ns == StackNs)
            return Stack.Start(program, args);
        throw new ArgumentException($"'{ns}' is not a namespace of this pair ({KernelNs}, {StackNs})", nameof(ns));
    }

    public void Dispose()
    {
        if (_disposed)
            return;
        _disposed = true;
        _kernel?.Dispose();
        _stack?.Dispose();
    }

    /// <summary>Reads an interface's MAC from <c>ip -o link show</c> ("link/ether aa:bb:... brd ...").</summary>
    public static string ReadMac(TestNamespace ns, string ifname)
    {
        ArgumentNullException.ThrowIfNull(ns);
        string line = ns.Ip($"-o link show dev {ifname}");
        int at = line.IndexOf("link/ether ", StringComparison.Ordinal);
        if (at < 0)
            throw new InvalidOperationException($"no link/ether in '{line.Trim()}'");
        return line.Substring(at + "link/ether ".Length, 17);
    }
}
