using System.Diagnostics;
using System.Text;

namespace Onload.Tests.Netns;

/// <summary>
/// A program running inside a network namespace (<c>ip netns exec NS prog args</c>), its output captured as it
/// comes. <c>ip netns exec</c> execs the program, so <see cref="Pid"/> is the program's own.
/// </summary>
/// <remarks>Start one through a fixture (<see cref="TestNamespace.Start"/>, <see cref="NamespacePair.Start"/>) so
/// that it is killed before its namespace is deleted, even when the test fails.</remarks>
public sealed class NsProcess : IDisposable
{
    private readonly Process _process;
    private readonly StringBuilder _stdout = new();
    private readonly StringBuilder _stderr = new();
    private readonly object _lock = new();
    private bool _disposed;
    private int? _exitCode;

    private NsProcess(string ns, string commandLine, Process process)
    {
        Namespace = ns;
        CommandLine = commandLine;
        _process = process;
    }

    public string Namespace { get; }
    public string CommandLine { get; }
    public int Pid => _process.Id;

    public string Stdout
    {
        get { lock (_lock) return _stdout.ToString(); }
    }

    public string Stderr
    {
        get { lock (_lock) return _stderr.ToString(); }
    }

    /// <summary>Whether the process has ended (always true once disposed: Dispose kills it).</summary>
    public bool HasExited => _disposed || _process.HasExited;

    /// <summary>The exit code once exited (137 when killed), null while running.</summary>
    public int? ExitCode => _disposed ? _exitCode : _process.HasExited ? _process.ExitCode : null;

    /// <summary>Starts <paramref name="program"/> in namespace <paramref name="ns"/>; prefer a fixture's Start.</summary>
    public static NsProcess Start(string ns, string program, params string[] args)
    {
        ArgumentNullException.ThrowIfNull(ns);
        ArgumentNullException.ThrowIfNull(program);
        ArgumentNullException.ThrowIfNull(args);
        var psi = new ProcessStartInfo("ip")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        // env restores SIGINT's default: a test run started in the background (as `cmd &` in a script) ignores
        // SIGINT, the ignored disposition is inherited, and .NET programs then never see the SIGINT a test sends.
        foreach (var a in (string[])["netns", "exec", ns, "env", "--default-signal=INT", program, .. args])
            psi.ArgumentList.Add(a);
        var process = new Process { StartInfo = psi, EnableRaisingEvents = true };
        var p = new NsProcess(ns, $"ip netns exec {ns} {program} {string.Join(' ', args)}".TrimEnd(), process);
        process.OutputDataReceived += (_, e) => p.Append(p._stdout, e.Data);
        process.ErrorDataReceived += (_, e) => p.Append(p._stderr, e.Data);
        process.Start();
        process.StandardInput.Close();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        return p;
    }

    /// <summary>Waits until standard output or error contains <paramref name="text"/>; fails the test on timeout.</summary>
    public void WaitForOutput(string text, TimeSpan deadline)
    {
        ArgumentNullException.ThrowIfNull(text);
        if (!Poll.TryUntil(() => Stdout.Contains(text, StringComparison.Ordinal) || Stderr.Contains(text, StringComparison.Ordinal), deadline))
            NUnit.Framework.Assert.Fail($"timed out waiting for '{text}' from '{CommandLine}' (exited: {HasExited}); " +
                $"stdout: {Stdout.Trim()}; stderr: {Stderr.Trim()}");
    }

    /// <summary>Waits for the process to end by itself; false on timeout.</summary>
    public bool WaitForExit(TimeSpan deadline)
    {
        if (_disposed)
            return true;
        if (!_process.WaitForExit(deadline))
            return false;
        _process.WaitForExit(); // drains the output readers
        return true;
    }

    /// <summary>Kills the process and its children (SIGKILL) and waits for it; harmless when already gone.</summary>
    public void Kill()
    {
        if (_disposed)
            return;
        try
        {
            if (!_process.HasExited)
                _process.Kill(entireProcessTree: true);
        }
        catch (InvalidOperationException)
        {
            // exited in between
        }
        _process.WaitForExit(5000);
    }

    /// <summary>Kills the process if still running; idempotent.</summary>
    public void Dispose()
    {
        if (_disposed)
            return;
        Kill();
        _exitCode = _process.HasExited ? _process.ExitCode : null;
        _disposed = true;
        _process.Dispose();
    }

    private void Append(StringBuilder to, string? line)
    {
        if (line is null)
            return;
        lock (_lock)
            to.AppendLine(line);
    }
}
