using System.Text.Json;
using Onload.StackDump;
using Onload.Tests.Interop;
using Onload.Tests.Netns;

namespace Onload.Tests.Preload;

/// <summary>
/// <c>dist/bin/onload-stackdump</c> run in a test's namespace and read back: how a test proves that a program's
/// sockets live on the stack and not in the kernel (a program that quietly fell back to the kernel has no stack, or
/// not the socket asked for).
/// </summary>
/// <example>
/// <code>
/// var stack = OnloadStackdump.WaitUntil(dl.Host, server.Pid, s => s.Listening(7402) is not null, Deadline, "the listener on the stack");
/// </code>
/// </example>
public static class OnloadStackdump
{
    /// <summary>Runs the tool with <paramref name="args"/> inside <paramref name="ns"/>, whatever its exit status.</summary>
    public static CommandResult Run(TestNamespace ns, params string[] args)
    {
        ArgumentNullException.ThrowIfNull(ns);
        return Netns.Netns.Exec("ip", ["netns", "exec", ns.Name, Dist.Bin("onload-stackdump"), .. args], TimeSpan.FromSeconds(30));
    }

    /// <summary>Every stack in <paramref name="ns"/> (<c>--json</c>); fails the test if the tool fails.</summary>
    public static IReadOnlyList<StackSnapshot> All(TestNamespace ns) => Parse(Run(ns, "--json"));

    /// <summary>The stack of process <paramref name="pid"/> (<c>--json --pid</c>), or null when it has none (yet).</summary>
    public static StackSnapshot? Query(TestNamespace ns, int pid)
    {
        var r = Run(ns, "--json", "--pid", pid.ToString(System.Globalization.CultureInfo.InvariantCulture));
        if (r.ExitCode != 0 && r.Stderr.Contains("has no Onload stack", StringComparison.Ordinal))
            return null;
        return Parse(r).Single();
    }

    /// <summary>Asks for process <paramref name="pid"/>'s stack until <paramref name="condition"/> holds of it, and
    /// returns that snapshot; fails the test with the last one seen when <paramref name="deadline"/> passes.</summary>
    public static StackSnapshot WaitUntil(TestNamespace ns, int pid, Func<StackSnapshot, bool> condition, TimeSpan deadline, string what)
    {
        ArgumentNullException.ThrowIfNull(condition);
        StackSnapshot? last = null;
        if (Poll.TryUntil(() => (last = Query(ns, pid)) is { } s && condition(s), deadline))
            return last!;
        Assert.Fail($"onload-stackdump never showed {what} for pid {pid}; last: " +
            (last is null ? "no stack" : JsonSerializer.Serialize(last, StackDumpJson.Default.StackSnapshot)));
        return null!;
    }

    /// <summary>The TCP listener on <paramref name="port"/>, or null.</summary>
    public static TcpSocketSnapshot? Listening(this StackSnapshot stack, int port)
    {
        ArgumentNullException.ThrowIfNull(stack);
        return stack.Tcp.FirstOrDefault(t => t.State == "LISTEN" && t.LocalPort == port);
    }

    /// <summary>The established TCP connections on local <paramref name="port"/> with <paramref name="peer"/>.</summary>
    public static IReadOnlyList<TcpSocketSnapshot> Established(this StackSnapshot stack, int port, string peer)
    {
        ArgumentNullException.ThrowIfNull(stack);
        return stack.Tcp.Where(t => t.State == "ESTABLISHED" && t.LocalPort == port && t.RemoteAddress == peer).ToList();
    }

    /// <summary>The established TCP connections to <paramref name="peer"/>:<paramref name="peerPort"/> (a client
    /// program's, from whatever local port it got).</summary>
    public static IReadOnlyList<TcpSocketSnapshot> ConnectedTo(this StackSnapshot stack, string peer, int peerPort)
    {
        ArgumentNullException.ThrowIfNull(stack);
        return stack.Tcp.Where(t => t.State == "ESTABLISHED" && t.RemoteAddress == peer && t.RemotePort == peerPort).ToList();
    }

    private static List<StackSnapshot> Parse(CommandResult r)
    {
        Assert.That(r.ExitCode, Is.Zero, $"{r.CommandLine}: {r.Stderr}");
        return JsonSerializer.Deserialize(r.Stdout, StackDumpJson.Default.ListStackSnapshot)
            ?? throw new InvalidOperationException($"{r.CommandLine} printed no JSON: {r.Stdout}");
    }
}
