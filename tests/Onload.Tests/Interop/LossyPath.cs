using System.Globalization;
using System.Text.RegularExpressions;
using Onload.Tests.Netns;

namespace Onload.Tests.Interop;

/// <summary>
/// Three namespaces in a line, stack — router — kernel, joined by two veth pairs; the router forwards and drops
/// <see cref="LossPercent"/>% of the packets at random in each direction (nftables, forward hook, one counted rule
/// per direction). Dispose kills the processes started in the namespaces and deletes them, which removes the veths.
/// </summary>
/// <remarks>
/// Loss belongs on a hop between the two ends: a drop on the kernel's own veth (a netdev egress hook) happens in
/// its transmit path, so its TCP sees a local drop and sends again as if nothing were lost, and XDP on the stack's
/// end runs before any ingress hook there. A router's drop is a drop on the wire to both.
/// <para>Offloads are off on the kernel's and the router's ends (tx checksum, TSO, GSO, GRO), so every frame the
/// stack sees is one a real wire could carry (MACHINE-NOTES.md). Subnets: the stack's 10.81.N.0/24 (router .1,
/// stack .2), the kernel's 10.82.N.0/24 (router .1, kernel .2).</para>
/// </remarks>
public sealed class LossyPath : IDisposable
{
    private const string Table = "inet loss";
    private readonly List<TestNamespace> _namespaces = [];

    public LossyPath(int lossPercent)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(lossPercent);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(lossPercent, 100);
        LossPercent = lossPercent;
        int instance = TestNames.NextInstance();
        // Roles: s stack, r router, k kernel; the router's ends facing the stack (a) and the kernel (b).
        StackIf = TestNames.Make(instance, 's');
        RouterStackIf = TestNames.Make(instance, 'a');
        RouterKernelIf = TestNames.Make(instance, 'b');
        KernelIf = TestNames.Make(instance, 'k');
        int n = (Environment.ProcessId * 31 + instance) % 250 + 1;
        StackGateway = Address(81, n, 1);
        StackAddress = Address(81, n, 2);
        KernelGateway = Address(82, n, 1);
        KernelAddress = Address(82, n, 2);
        try
        {
            Stack = Add(new TestNamespace(instance, 's'));
            Router = Add(new TestNamespace(instance, 'r'));
            Kernel = Add(new TestNamespace(instance, 'k'));
            // Created straight in their namespaces: nothing appears in the root namespace, even briefly.
            Stack.Ip($"link add {StackIf} type veth peer name {RouterStackIf} netns {Router.Name}");
            Kernel.Ip($"link add {KernelIf} type veth peer name {RouterKernelIf} netns {Router.Name}");
            Stack.DisableIpv6(StackIf);
            Router.DisableIpv6(RouterStackIf);
            Router.DisableIpv6(RouterKernelIf);
            Kernel.DisableIpv6(KernelIf);
            foreach (var (ns, ifname) in new[] { (Router, RouterStackIf), (Router, RouterKernelIf), (Kernel, KernelIf) })
                ns.Exec($"ethtool -K {ifname} tx off tso off gso off gro off");

            Router.Exec("sysctl -qw net.ipv4.ip_forward=1");
            Router.Ip($"addr add {StackGateway}/24 dev {RouterStackIf}");
            Router.Ip($"addr add {KernelGateway}/24 dev {RouterKernelIf}");
            Kernel.Ip($"addr add {KernelAddress}/24 dev {KernelIf}");
            foreach (var (ns, ifname) in new[] { (Stack, StackIf), (Router, RouterStackIf), (Router, RouterKernelIf), (Kernel, KernelIf) })
                ns.Ip($"link set {ifname} up");
            Kernel.Ip($"route add {StackAddress[..StackAddress.LastIndexOf('.')]}.0/24 via {KernelGateway}");

            Netns.Netns.Sh($"ip netns exec {Router.Name} nft '" +
                $"add table {Table}; " +
                $"add chain {Table} forward {{ type filter hook forward priority 0; policy accept; }}; " +
                $"add rule {Table} forward iifname \"{RouterStackIf}\" numgen random mod 100 < {lossPercent} counter drop; " +
                $"add rule {Table} forward iifname \"{RouterKernelIf}\" numgen random mod 100 < {lossPercent} counter drop'");
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    public int LossPercent { get; }
    public TestNamespace Stack { get; } = null!;
    public TestNamespace Router { get; } = null!;
    public TestNamespace Kernel { get; } = null!;

    /// <summary>The stack's veth end: up, with no address (the user-level stack owns <see cref="StackAddress"/>).</summary>
    public string StackIf { get; }
    public string RouterStackIf { get; }
    public string RouterKernelIf { get; }
    public string KernelIf { get; }
    public string StackAddress { get; }
    /// <summary>The router's address on the stack's subnet: the stack's gateway.</summary>
    public string StackGateway { get; }
    public string KernelAddress { get; }
    /// <summary>The router's address on the kernel's subnet, through which the kernel reaches the stack's.</summary>
    public string KernelGateway { get; }

    /// <summary>Packets the router has dropped so far in each direction (the rules' counters).</summary>
    public (long StackToKernel, long KernelToStack) Dropped()
    {
        string rules = Router.Exec($"nft list chain {Table} forward");
        long For(string ifname)
        {
            var m = Regex.Match(rules, $"iifname \"{ifname}\" .*counter packets (\\d+)");
            if (!m.Success)
                throw new InvalidOperationException($"no counted rule for {ifname} in: {rules}");
            return long.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture);
        }
        return (For(RouterStackIf), For(RouterKernelIf));
    }

    public void Dispose()
    {
        foreach (var ns in _namespaces)
            ns.Dispose();
        _namespaces.Clear();
    }

    private TestNamespace Add(TestNamespace ns)
    {
        _namespaces.Add(ns);
        return ns;
    }

    private static string Address(int b, int c, int d) => string.Create(CultureInfo.InvariantCulture, $"10.{b}.{c}.{d}");
}
