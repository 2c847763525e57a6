using System.Globalization;
using NUnit.Framework;

namespace Onload.Tests.Netns;

/// <summary>The namespace helpers themselves: cleanup on Dispose and the sweep of dead runs' leftovers.</summary>
[TestFixture]
[Category("netns")]
public sealed class NetnsHelperTests
{
    [Test]
    public void Names_carry_the_pid_and_fit_an_interface_name()
    {
        string name = TestNames.Make(TestNames.NextInstance(), 'k');
        Assert.That(name, Does.StartWith("olt" + Environment.ProcessId.ToString(CultureInfo.InvariantCulture) + "-"));
        Assert.That(name, Has.Length.LessThanOrEqualTo(15));
        Assert.That(TestNames.TryParsePid(name, out int pid), Is.True);
        Assert.That(pid, Is.EqualTo(Environment.ProcessId));
        Assert.That(TestNames.TryParsePid("eth0", out _), Is.False);
    }

    [Test]
    public void Dispose_kills_started_processes_and_deletes_both_namespaces()
    {
        Netns.RequireRoot();
        var pair = new NamespacePair();
        NsProcess sleeper;
        try
        {
            sleeper = pair.Start(pair.KernelNs, "sleep", "600");
            pair.Start(pair.StackNs, "ping", "127.0.0.1").WaitForOutput("bytes from", TimeSpan.FromSeconds(5));
            Assert.That(Netns.NamespaceExists(pair.KernelNs), Is.True);
            Assert.That(pair.Kernel.Exec("ethtool -k " + pair.KernelIf), Does.Contain("tcp-segmentation-offload: off"));
        }
        finally
        {
            pair.Dispose();
        }
        Assert.Multiple(() =>
        {
            Assert.That(sleeper.HasExited, Is.True, "the process was killed");
            Assert.That(Netns.NamespaceExists(pair.KernelNs), Is.False);
            Assert.That(Netns.NamespaceExists(pair.StackNs), Is.False);
        });
    }

    [Test]
    public void Programs_started_from_inside_RunInNamespace_run_in_that_namespace()
    {
        Netns.RequireRoot();
        using var pair = new NamespacePair();
        string links = Netns.RunInNamespace(pair.KernelNs, () => Netns.Run("ip -o link show"));
        Assert.That(links, Does.Contain(pair.KernelIf + "@"));
    }

    [Test]
    public void Sweep_removes_a_dead_runs_namespaces_and_links_but_not_a_live_runs()
    {
        Netns.RequireRoot();
        // A pid above pid_max belongs to no process.
        int deadPid = int.Parse(File.ReadAllText("/proc/sys/kernel/pid_max").Trim(), CultureInfo.InvariantCulture) + 1;
        string dead = string.Create(CultureInfo.InvariantCulture, $"olt{deadPid}-1k");
        using var live = new TestNamespace(TestNames.NextInstance(), 'z');
        try
        {
            Netns.Run("ip netns add " + dead);
            // The link half of the sweep looks at the namespace it runs in: run it inside `live`, so the test
            // creates nothing in the root namespace.
            live.Ip(string.Create(CultureInfo.InvariantCulture, $"link add olt{deadPid}-2a type veth peer name olt{deadPid}-2b"));
            live.Ip(string.Create(CultureInfo.InvariantCulture, $"link add {live.Name}a type veth peer name {live.Name}b"));

            var removed = Netns.RunInNamespace(live.Name, Netns.SweepLeftovers);

            Assert.Multiple(() =>
            {
                Assert.That(removed, Does.Contain("netns " + dead));
                Assert.That(Netns.NamespaceExists(dead), Is.False);
                Assert.That(Netns.NamespaceExists(live.Name), Is.True, "a live process's namespace stays");
                string links = live.Ip("-o link show");
                Assert.That(links, Does.Not.Contain(string.Create(CultureInfo.InvariantCulture, $"olt{deadPid}-2")));
                Assert.That(links, Does.Contain(live.Name + "a"), "a live process's link stays");
            });
        }
        finally
        {
            Netns.TryRun("ip netns del " + dead);
        }
    }
}
