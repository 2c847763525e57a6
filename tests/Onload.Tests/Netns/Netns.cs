using System.Diagnostics;
using System.Runtime.ExceptionServices;
using NUnit.Framework;

namespace Onload.Tests.Netns;

/// <summary>The result of a command the helpers ran.</summary>
public sealed record CommandResult(string CommandLine, int ExitCode, string Stdout, string Stderr)
{
    public bool Succeeded => ExitCode == 0;
}

/// <summary>
/// Helpers for tests that run inside network namespaces: running <c>ip</c> and friends, running .NET code with a
/// thread inside a namespace, and checking for root.
/// </summary>
public static partial class Netns
{
    public static readonly TimeSpan DefaultTimeout = TimeSpan.FromSeconds(30);

    /// <summary>Whether the effective user is root (creating namespaces, veths, taps and packet sockets needs it).</summary>
    public static bool IsRoot => LinuxNative.GetEuid() == 0;

    /// <summary>Ignores the calling test when not root.</summary>
    public static void RequireRoot()
    {
        if (!IsRoot)
            Assert.Ignore("needs root: creates network namespaces, veth pairs, taps and packet sockets");
    }

    /// <summary>
    /// Runs a command line split on spaces (no quoting: meant for <c>ip ...</c>, <c>ethtool ...</c>) and returns
    /// its standard output; throws with its standard error when it fails or times out.
    /// </summary>
    public static string Run(string commandLine, TimeSpan? timeout = null)
    {
        var r = TryRun(commandLine, timeout);
        if (!r.Succeeded)
            throw new InvalidOperationException($"'{r.CommandLine}' exited {r.ExitCode}: {r.Stderr.Trim()}{Tail(r.Stdout)}");
        return r.Stdout;
    }

    /// <summary>Like <see cref="Run"/> but returns the result instead of throwing on a non-zero exit.</summary>
    public static CommandResult TryRun(string commandLine, TimeSpan? timeout = null)
    {
        ArgumentNullException.ThrowIfNull(commandLine);
        var words = commandLine.Split(' ', StringSplitOptions.RemoveEmptyEntries);
        if (words.Length == 0)
            throw new ArgumentException("empty command line", nameof(commandLine));
        return Exec(words[0], words.AsSpan(1).ToArray(), timeout ?? DefaultTimeout);
    }

    /// <summary>Runs <paramref name="script"/> with /bin/sh -c (pipes, redirections) and returns its standard output.</summary>
    public static string Sh(string script, TimeSpan? timeout = null)
    {
        var r = Exec("/bin/sh", ["-c", script], timeout ?? DefaultTimeout);
        if (!r.Succeeded)
            throw new InvalidOperationException($"sh -c '{script}' exited {r.ExitCode}: {r.Stderr.Trim()}{Tail(r.Stdout)}");
        return r.Stdout;
    }

    /// <summary>Runs a program with arguments (no shell), waiting at most <paramref name="timeout"/>.</summary>
    public static CommandResult Exec(string program, IReadOnlyList<string> args, TimeSpan timeout)
    {
        ArgumentNullException.ThrowIfNull(program);
        ArgumentNullException.ThrowIfNull(args);
        string line = args.Count == 0 ? program : program + " " + string.Join(' ', args);
        var psi = new ProcessStartInfo(program)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        foreach (var a in args)
            psi.ArgumentList.Add(a);
        using var p = new Process { StartInfo = psi };
        try
        {
            p.Start();
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            throw new InvalidOperationException($"cannot run '{line}': {e.Message} (is {program} installed?)", e);
        }
        p.StandardInput.Close();
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(timeout))
        {
            try { p.Kill(entireProcessTree: true); } catch (InvalidOperationException) { }
            p.WaitForExit();
            throw new TimeoutException($"'{line}' did not finish within {timeout.TotalSeconds:0.#} s; stderr: {stderr.Result.Trim()}");
        }
        p.WaitForExit(); // lets the output readers finish
        return new CommandResult(line, p.ExitCode, stdout.Result, stderr.Result);
    }

    /// <summary>
    /// Runs <paramref name="f"/> on a new thread that first joins network namespace <paramref name="ns"/>
    /// (setns on /var/run/netns/NS). Sockets, packet rings and taps opened by <paramref name="f"/> belong to that
    /// namespace for good and can then be used from any thread; the joining thread ends with <paramref name="f"/>.
    /// </summary>
    public static T RunInNamespace<T>(string ns, Func<T> f)
    {
        ArgumentNullException.ThrowIfNull(ns);
        ArgumentNullException.ThrowIfNull(f);
        T result = default!;
        ExceptionDispatchInfo? error = null;
        var thread = new Thread(() =>
        {
            try
            {
                JoinNamespace(ns);
                result = f();
            }
#pragma warning disable CA1031 // handed back to the calling thread as is
            catch (Exception e)
#pragma warning restore CA1031
            {
                error = ExceptionDispatchInfo.Capture(e);
            }
        })
        {
            IsBackground = true,
            Name = "netns " + ns,
        };
        thread.Start();
        thread.Join();
        error?.Throw();
        return result;
    }

    /// <summary>Runs <paramref name="a"/> with a thread inside namespace <paramref name="ns"/>.</summary>
    public static void RunInNamespace(string ns, Action a)
    {
        ArgumentNullException.ThrowIfNull(a);
        RunInNamespace(ns, () =>
        {
            a();
            return 0;
        });
    }

    /// <summary>Whether a namespace of that name exists (ip netns add creates /var/run/netns/NAME).</summary>
    public static bool NamespaceExists(string ns) => File.Exists("/var/run/netns/" + ns);

    /// <summary>Moves the calling thread (only it: setns acts per thread) into namespace <paramref name="ns"/>.</summary>
    private static void JoinNamespace(string ns)
    {
        string path = "/var/run/netns/" + ns;
        int fd = LinuxNative.Open(path, LinuxNative.O_RDONLY | LinuxNative.O_CLOEXEC);
        if (fd < 0)
            throw new InvalidOperationException($"open {path}: {LinuxNative.ErrnoText(System.Runtime.InteropServices.Marshal.GetLastPInvokeError())}");
        try
        {
            if (LinuxNative.SetNs(fd, LinuxNative.CLONE_NEWNET) != 0)
                throw new InvalidOperationException($"setns({path}, CLONE_NEWNET): {LinuxNative.ErrnoText(System.Runtime.InteropServices.Marshal.GetLastPInvokeError())}");
        }
        finally
        {
            LinuxNative.Close(fd);
        }
    }

    private static string Tail(string stdout) => string.IsNullOrWhiteSpace(stdout) ? "" : $" (stdout: {stdout.Trim()})";
}
