using System.Globalization;

namespace Onload.Apps.Echo;

/// <summary>ONLOAD_* settings read from the environment (documented in the README's settings table).</summary>
/// <remarks>The stack's own settings (table sizes, buffers, TCP options) are <see cref="Onload.Driverlink.StackSettings"/>.</remarks>
internal sealed record Settings(int SpinMicroseconds, bool Trace)
{
    public static Settings FromEnvironment() => new(
        SpinMicroseconds: Int("ONLOAD_SPIN_US", 100),
        Trace: Int("ONLOAD_TRACE", 0) != 0);

    private static int Int(string name, int fallback) =>
        int.TryParse(Environment.GetEnvironmentVariable(name), NumberStyles.Integer, CultureInfo.InvariantCulture, out int v)
            ? v
            : fallback;
}
