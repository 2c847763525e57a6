using System.Diagnostics;
using NUnit.Framework;

namespace Onload.Tests.Netns;

/// <summary>
/// One network namespace for a test, with loopback up and IPv6 off (so the namespace's kernel sends nothing of its
/// own accord). Dispose kills the processes started in it and deletes it, which removes its interfaces.
/// </summary>
public sealed class TestNamespace : IDisposable
{
    private readonly List<NsProcess> _processes = [];
    private bool _disposed;

    /// <summary>Creates namespace <see cref="TestNames.Make"/>(instance, role).</summary>
    public TestNamespace(int instance, char role)
        : this(TestNames.Make(instance, role))
    {
    }

    public TestNamespace(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        Name = name;
        Netns.Run("ip netns add " + name);
        try
        {
            Netns.Run($"ip -n {name} link set lo up");
            // Before any interface exists, so new ones inherit it: no router solicitations, DAD or MLD.
            DisableIpv6("all");
            DisableIpv6("default");
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    public string Name { get; }

    /// <summary>Starts a program inside this namespace; it is killed on Dispose if still running.</summary>
    public NsProcess Start(string program, params string[] args)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var p = NsProcess.Start(Name, program, args);
        lock (_processes)
            _processes.Add(p);
        return p;
    }

    /// <summary>Runs <c>ip -n NAME</c> + <paramref name="args"/>, returning standard output.</summary>
    public string Ip(string args) => Netns.Run($"ip -n {Name} {args}");

    /// <summary>Runs a command line inside the namespace (<c>ip netns exec</c>), returning standard output.</summary>
    public string Exec(string commandLine) => Netns.Run($"ip netns exec {Name} {commandLine}");

    /// <summary>
    /// Runs a shell line inside the namespace with <paramref name="input"/> on its standard input (closed after it)
    /// and returns its standard output. Fails the test if it exits non-zero, or if it has not finished within
    /// <paramref name="deadline"/> (it is then killed, with its children).
    /// </summary>
    public byte[] Pipe(string shell, ReadOnlySpan<byte> input, TimeSpan deadline)
    {
        var psi = new ProcessStartInfo("ip") { RedirectStandardInput = true, RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in new[] { "netns", "exec", Name, "sh", "-c", shell })
            psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var stdout = new MemoryStream();
        var copy = p.StandardOutput.BaseStream.CopyToAsync(stdout);
        var stderr = p.StandardError.ReadToEndAsync();
        p.StandardInput.BaseStream.Write(input);
        p.StandardInput.Close();
        if (!p.WaitForExit(deadline))
        {
            p.Kill(entireProcessTree: true);
            p.WaitForExit();
            Assert.Fail($"'{shell}' did not finish within {deadline.TotalSeconds:0.###} s; stderr: {stderr.Result}");
        }
        copy.Wait(deadline);
        Assert.That(p.ExitCode, Is.Zero, $"'{shell}': {stderr.Result}");
        return stdout.ToArray();
    }

    /// <summary>Sets net.ipv6.conf.IF.disable_ipv6 = 1 where the kernel has IPv6; no-op where it has not.</summary>
    public void DisableIpv6(string ifname)
    {
        Netns.Sh($"ip netns exec {Name} sh -c 'f=/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6; if [ -e $f ]; then echo 1 > $f; fi'");
    }

    /// <summary>Runs <paramref name="f"/> on a thread inside this namespace (see <see cref="Netns.RunInNamespace{T}"/>).</summary>
    public T Run<T>(Func<T> f) => Netns.RunInNamespace(Name, f);

    public void Dispose()
    {
        if (_disposed)
            return;
        _disposed = true;
        NsProcess[] started;
        lock (_processes)
            started = [.. _processes];
        foreach (var p in started)
            p.Dispose();
        // Anything else still inside (started by hand in a test) would keep the namespace alive.
        Netns.KillProcessesIn(Name);
        Netns.TryRun("ip netns del " + Name);
    }
}
