using System.Globalization;

namespace Onload.Apps.Driverd;

/// <summary>
/// The daemon's config file (<c>--config FILE</c>): one <c>key = value</c> per line, <c>#</c> comments, the same
/// settings as the flags (which override it): <c>interfaces</c> (comma-separated), <c>max-vnics</c>,
/// <c>max-filters</c>, <c>max-filters-total</c>, <c>max-ring-size</c>, <c>default-ring-size</c>, <c>max-buffers</c>, <c>default-buffers</c>,
/// <c>grace</c> (seconds), <c>pin-root</c> (a bpffs directory or <c>none</c>), <c>forwarder-spin-us</c>,
/// <c>allow</c> (<c>UID[@IF]</c> grants, comma-separated; repeatable).
/// </summary>
internal static class DaemonConfig
{
    /// <summary>Parses <c>UID[@IF]</c> grants, comma-separated; a bad one throws FormatException naming
    /// <paramref name="where"/>.</summary>
    public static IEnumerable<(uint Uid, string? Interface)> ParseGrants(string value, string where)
    {
        foreach (string grant in value.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            string[] parts = grant.Split('@', 2);
            if (!uint.TryParse(parts[0], NumberStyles.None, CultureInfo.InvariantCulture, out uint uid) ||
                (parts.Length == 2 && parts[1].Length is 0 or > 15))
                throw new FormatException($"{where}: '{grant}' is not UID or UID@INTERFACE");
            yield return (uid, parts.Length == 2 ? parts[1] : null);
        }
    }

    /// <summary>Applies the file's settings to <paramref name="options"/>; a bad line throws FormatException naming it.</summary>
    public static DaemonOptions Apply(string path, DaemonOptions options)
    {
        int number = 0;
        foreach (string raw in File.ReadLines(path))
        {
            number++;
            string line = raw.Split('#', 2)[0].Trim();
            if (line.Length == 0)
                continue;
            int eq = line.IndexOf('=', StringComparison.Ordinal);
            if (eq <= 0)
                throw new FormatException($"{path}:{number}: expected 'key = value', got '{raw.Trim()}'");
            string key = line[..eq].Trim();
            string value = line[(eq + 1)..].Trim();
            int Int(int min)
            {
                if (!int.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out int v) || v < min)
                    throw new FormatException($"{path}:{number}: {key} = '{value}': expected a whole number of at least {min}");
                return v;
            }
            options = key switch
            {
                "interfaces" => options with { Interfaces = value.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries) },
                "max-vnics" => options with { MaxVnics = Int(1) },
                "max-filters" => options with { MaxFiltersPerVnic = Int(1) },
                "max-filters-total" => options with { MaxFiltersTotal = Int(1) },
                "max-ring-size" => options with { MaxRingSize = Int(64) },
                "default-ring-size" => options with { DefaultRingSize = Int(64) },
                "max-buffers" => options with { MaxBuffers = Int(128) },
                "default-buffers" => options with { DefaultBuffers = Int(128) },
                "grace" => options with { Grace = TimeSpan.FromSeconds(Int(0)) },
                "pin-root" => options with { PinRoot = value == "none" ? null : value },
                "forwarder-spin-us" => options with { ForwarderSpin = TimeSpan.FromMicroseconds(Int(0)) },
                "allow" => options with { Grants = [.. options.Grants, .. ParseGrants(value, $"{path}:{number}")] },
                _ => throw new FormatException($"{path}:{number}: unknown setting '{key}'"),
            };
        }
        if (options.DefaultRingSize > options.MaxRingSize || options.DefaultBuffers > options.MaxBuffers)
            throw new FormatException($"{path}: the default ring size and buffers must not exceed their maxima");
        return options;
    }
}
