using System.Globalization;

namespace Onload.Tests.Netns;

/// <summary>
/// Names of the namespaces and interfaces the tests create: <c>olt{pid}-{instance}{role}</c>, e.g.
/// <c>olt12345-3k</c>. The prefix marks them as ours, the pid lets <see cref="Netns.SweepLeftovers"/> tell a dead
/// run's leftovers from a live parallel run's, the instance counter keeps one process's fixtures apart, and the
/// role letter names the side (k: kernel, s: stack, t: tap). Interface names are limited to 15 characters.
/// </summary>
public static class TestNames
{
    public const string Prefix = "olt";
    public const int MaxLength = 15;

    private static int _instances;

    /// <summary>A number no other fixture of this process has.</summary>
    public static int NextInstance() => Interlocked.Increment(ref _instances);

    public static string Make(int instance, char role)
    {
        string name = string.Create(CultureInfo.InvariantCulture, $"{Prefix}{Environment.ProcessId}-{instance}{role}");
        if (name.Length > MaxLength)
            throw new InvalidOperationException($"test name '{name}' is longer than {MaxLength} characters");
        return name;
    }

    /// <summary>The pid embedded in a name made by <see cref="Make"/>; false for other names.</summary>
    public static bool TryParsePid(string name, out int pid)
    {
        pid = 0;
        if (!name.StartsWith(Prefix, StringComparison.Ordinal))
            return false;
        int end = name.IndexOf('-', Prefix.Length);
        return end > Prefix.Length &&
            int.TryParse(name.AsSpan(Prefix.Length, end - Prefix.Length), NumberStyles.None, CultureInfo.InvariantCulture, out pid);
    }
}
