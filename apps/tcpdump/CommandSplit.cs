namespace Onload.Apps.Tcpdump;

/// <summary>
/// Splits <c>onload-tcpdump [OPTIONS] [--] PROGRAM [ARGS...]</c> where the program starts, before System.CommandLine
/// sees the options: the program's own arguments (<c>--vnic ...</c>) are not ours to parse.
/// </summary>
internal static class CommandSplit
{
    /// <summary>Our options that take a value in the next argument.</summary>
    private static readonly HashSet<string> WithValue = new(StringComparer.Ordinal)
    {
        "-w", "--write", "-r", "--read", "-s", "--snaplen", "-c", "--count", "--veto",
    };

    /// <summary>Our arguments, and the program's command line (empty when there is none).</summary>
    public static (string[] Ours, string[] Program) Split(string[] args)
    {
        for (int i = 0; i < args.Length; i++)
        {
            string a = args[i];
            if (a == "--")
                return (args[..i], args[(i + 1)..]);
            if (WithValue.Contains(a))
                i++;
            else if (!a.StartsWith('-'))
                return (args[..i], args[i..]);
        }
        return (args, []);
    }
}
