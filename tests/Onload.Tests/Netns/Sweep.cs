using System.Globalization;

namespace Onload.Tests.Netns;

public static partial class Netns
{
    /// <summary>
    /// Removes what earlier test runs left behind when they died before their fixtures' Dispose: every namespace
    /// named with the <see cref="TestNames.Prefix"/> whose embedded pid is no live process (so parallel runs keep
    /// theirs), after killing processes still inside it, and every such link left in the root namespace.
    /// Returns what it removed.
    /// </summary>
    public static IReadOnlyList<string> SweepLeftovers()
    {
        var removed = new List<string>();
        var namespaces = TryRun("ip netns list");
        if (namespaces.Succeeded)
        {
            foreach (var line in Lines(namespaces.Stdout))
            {
                // "olt123-4k (id: 7)" or just "olt123-4k"
                string name = line.Split(' ', 2)[0];
                if (!IsStale(name))
                    continue;
                KillProcessesIn(name);
                if (TryRun("ip netns del " + name).Succeeded)
                    removed.Add("netns " + name);
            }
        }

        var links = TryRun("ip -o link show");
        if (links.Succeeded)
        {
            foreach (var line in Lines(links.Stdout))
            {
                // "12: olt123-4k@if11: <BROADCAST,...> ..."
                var parts = line.Split(": ", 3);
                if (parts.Length < 2)
                    continue;
                string name = parts[1].Split('@')[0];
                if (IsStale(name) && TryRun("ip link del " + name).Succeeded)
                    removed.Add("link " + name);
            }
        }

        // bpffs mounts a driverlink test made for its daemon's pins: /run/onload-test-bpf-PID.
        foreach (string dir in Directory.GetDirectories("/run", "onload-test-bpf-*"))
        {
            if (int.TryParse(dir[(dir.LastIndexOf('-') + 1)..], out int pid) && Directory.Exists($"/proc/{pid}"))
                continue;
            TryRun($"umount -l {dir}");
            if (TryRun($"rmdir {dir}").Succeeded)
                removed.Add("bpffs " + dir);
        }
        return removed;
    }

    /// <summary>Ours (prefix) and not a live process's: its pid is gone, or it has no pid we can read.</summary>
    private static bool IsStale(string name)
    {
        if (!name.StartsWith(TestNames.Prefix, StringComparison.Ordinal))
            return false;
        return !TestNames.TryParsePid(name, out int pid) || !IsAlive(pid);
    }

    private static bool IsAlive(int pid) =>
        Directory.Exists(string.Create(CultureInfo.InvariantCulture, $"/proc/{pid}"));

    /// <summary>Kills every process inside namespace <paramref name="ns"/> (ip netns pids lists them).</summary>
    internal static void KillProcessesIn(string ns)
    {
        var pids = TryRun("ip netns pids " + ns);
        if (!pids.Succeeded)
            return;
        foreach (var line in Lines(pids.Stdout))
            if (int.TryParse(line.Trim(), NumberStyles.None, CultureInfo.InvariantCulture, out int pid) && pid != Environment.ProcessId)
                TryRun(string.Create(CultureInfo.InvariantCulture, $"kill -9 {pid}"));
    }

    private static string[] Lines(string text) => text.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
}
