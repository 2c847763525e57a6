using System.Globalization;
using Onload.StackDump;

namespace Onload.Apps.StackDump;

/// <summary>Finds the stacks of this network namespace: the listening <c>@onload-stack/PID</c> sockets in
/// <c>/proc/net/unix</c>, which shows only the reader's own namespace's sockets.</summary>
internal static class StackFinder
{
    /// <summary>__SO_ACCEPTCON in the Flags column: a listening socket (the connections it accepted share its name).</summary>
    private const int Listening = 0x10000;

    /// <summary>The pids with a stack, in ascending order.</summary>
    public static IReadOnlyList<int> Pids() => Parse(File.ReadLines("/proc/net/unix"));

    /// <summary>
    /// Lines as <c>/proc/net/unix</c> writes them after its header:
    /// <c>Num: RefCount Protocol Flags Type St Inode [Path]</c>, numbers in hex but the inode, an abstract path as <c>@name</c>.
    /// </summary>
    private static IReadOnlyList<int> Parse(IEnumerable<string> lines)
    {
        var pids = new SortedSet<int>();
        string prefix = "@" + StackDumpProtocol.NamePrefix;
        foreach (string line in lines)
        {
            var fields = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (fields.Length < 8 || !fields[7].StartsWith(prefix, StringComparison.Ordinal))
                continue;
            if (!int.TryParse(fields[3], NumberStyles.HexNumber, CultureInfo.InvariantCulture, out int flags) || (flags & Listening) == 0)
                continue;
            if (int.TryParse(fields[7].AsSpan(prefix.Length), NumberStyles.None, CultureInfo.InvariantCulture, out int pid) && pid > 0)
                pids.Add(pid);
        }
        return [.. pids];
    }
}
