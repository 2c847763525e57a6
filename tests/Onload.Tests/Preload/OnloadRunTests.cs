using System.Diagnostics;
using Onload.Tests.Driverlink;
using Onload.Tests.Interop;
using Onload.Tests.Netns;

namespace Onload.Tests.Preload;

/// <summary>
/// The <c>onload-run</c> wrapper itself: options, profiles, the interface it picks and the exit status it passes
/// through. The programs here open no socket, so the stack is never loaded.
/// </summary>
public class OnloadRunTests
{
    private static readonly TimeSpan Deadline = DriverlinkPair.Deadline;

    private static (int Code, string Stdout, string Stderr) Run(IDictionary<string, string>? env, params string[] args)
    {
        var psi = new ProcessStartInfo(Dist.Bin("onload-run")) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (string a in args)
            psi.ArgumentList.Add(a);
        // The host's own interfaces must not decide these tests' results (pick_interface): name one.
        psi.Environment["ONLOAD_INTERFACE"] = "onl-none";
        psi.Environment.Remove("ONLOAD_SPIN_US");
        psi.Environment.Remove("ONLOAD_VNIC_MODE");
        foreach (var (k, v) in env ?? new Dictionary<string, string>())
            psi.Environment[k] = v;
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        string stderr = p.StandardError.ReadToEnd();
        Assert.That(p.WaitForExit(Deadline), Is.True, "onload-run ended");
        return (p.ExitCode, stdout.Result, stderr);
    }

    [Test]
    public void The_program_exit_status_passes_through()
    {
        Assert.That(Run(null, "sh", "-c", "exit 7").Code, Is.EqualTo(7));
        Assert.That(Run(null, "--", "true").Code, Is.Zero);
    }

    [Test]
    public void Help_prints_the_usage_and_exits_zero_and_a_bad_option_exits_two()
    {
        var help = Run(null, "--help");
        Assert.That(help.Code, Is.Zero);
        Assert.That(help.Stdout, Does.Contain("usage: onload-run").And.Contain("--profile").And.Contain("ONLOAD_SPIN_US"));

        var bad = Run(null, "--no-such-option", "true");
        Assert.That(bad.Code, Is.EqualTo(2));
        Assert.That(bad.Stderr, Does.Contain("unknown option --no-such-option"));

        Assert.That(Run(null).Code, Is.EqualTo(2), "no program");
    }

    [Test]
    public void The_latency_profile_sets_its_settings_and_leaves_what_the_user_set()
    {
        var latency = Run(null, "--profile", "latency", "sh", "-c", "echo $ONLOAD_SPIN_US $ONLOAD_VNIC_MODE");
        Assert.That(latency.Stdout.Trim(), Is.EqualTo("100000 exclusive"), latency.Stderr);

        var mine = Run(new Dictionary<string, string> { ["ONLOAD_SPIN_US"] = "7" }, "--profile=latency", "sh", "-c", "echo $ONLOAD_SPIN_US");
        Assert.That(mine.Stdout.Trim(), Is.EqualTo("7"), "the user's own setting wins");

        var none = Run(null, "sh", "-c", "echo ${ONLOAD_SPIN_US:-unset}");
        Assert.That(none.Stdout.Trim(), Is.EqualTo("unset"), "no profile, no settings added");
    }

    [Test]
    public void An_unknown_profile_or_a_profile_setting_anything_but_onload_variables_is_refused()
    {
        var unknown = Run(null, "--profile", "fastest", "true");
        Assert.That(unknown.Code, Is.EqualTo(2));
        Assert.That(unknown.Stderr, Does.Contain("no profile 'fastest'").And.Contain("latency").And.Contain("throughput"));

        string file = Path.Combine(Path.GetTempPath(), $"onload-run-test-{Environment.ProcessId}.opf");
        try
        {
            File.WriteAllText(file, "# a comment\nONLOAD_SPIN_US=3\nLD_PRELOAD=/tmp/evil.so\n");
            var bad = Run(null, "--profile", file, "true");
            Assert.That(bad.Code, Is.EqualTo(2));
            Assert.That(bad.Stderr, Does.Contain(":3: expected ONLOAD_NAME=value"));

            File.WriteAllText(file, "ONLOAD_SPIN_US=$(touch /tmp/onload-run-injected)\n");
            var literal = Run(null, "--profile", file, "sh", "-c", "printf %s \"$ONLOAD_SPIN_US\"");
            Assert.That(literal.Stdout, Is.EqualTo("$(touch /tmp/onload-run-injected)"), "values are taken literally");
            Assert.That(File.Exists("/tmp/onload-run-injected"), Is.False, "never evaluated");
        }
        finally
        {
            File.Delete(file);
        }
    }

    [Test]
    [Category("netns")]
    public void Without_an_interface_named_it_takes_the_only_one_with_an_ipv4_address_and_refuses_to_guess_between_two()
    {
        using var dl = DriverlinkPair.WithoutDaemon();
        string Chosen() => Onload.Tests.Netns.Netns.Sh(
            $"ip netns exec {dl.Host.Name} env -u ONLOAD_INTERFACE {Dist.Bin("onload-run")} sh -c 'echo \"[$ONLOAD_INTERFACE]\"' 2>&1");
        Assert.That(Chosen().Trim(), Is.EqualTo($"[{dl.Interface}]"));

        // A second addressed interface, inside the test's namespace (no dummy driver here: a veth pair's one end).
        dl.Host.Ip("link add onl-second type veth peer name onl-second-p");
        dl.Host.Ip("addr add 10.254.0.1/24 dev onl-second");
        dl.Host.Ip("link set onl-second up");
        string both = Chosen();
        Assert.That(both, Does.Contain("several interfaces").And.Contain(dl.Interface).And.Contain("onl-second"));
        Assert.That(both, Does.Contain("[]"), "none chosen");
    }
}
