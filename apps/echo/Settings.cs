using System.Globalization;

namespace Onload.Apps.Echo;

/// <summary>ONLOAD_* settings read from the environment (documented in the README's settings table).</summary>
internal sealed record Settings(int SpinMicroseconds, bool Trace, bool TcpSack, bool TcpSyncookies, string TcpCongestion)
{
    public static Settings FromEnvironment() => new(
        SpinMicroseconds: Int("ONLOAD_SPIN_US", 100),
        Trace: Int("ONLOAD_TRACE", 0) != 0,
        TcpSack: Int("ONLOAD_TCP_SACK", 1) != 0,
        TcpSyncookies: Int("ONLOAD_TCP_SYNCOOKIES", 1) != 0,
        TcpCongestion: Environment.GetEnvironmentVariable("ONLOAD_TCP_CONGESTION") is { Length: > 0 } cc ? cc : "cubic");

    private static int Int(string name, int fallback) =>
        int.TryParse(Environment.GetEnvironmentVariable(name), NumberStyles.Integer, CultureInfo.InvariantCulture, out int v)
            ? v
            : fallback;
}
