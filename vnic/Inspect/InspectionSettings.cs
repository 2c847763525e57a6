using System.Globalization;

namespace Onload.Vnic.Inspect;

/// <summary>
/// Puts a capture and a veto rule set on a VNIC from the environment, as <c>onload-tcpdump</c> asks a program to:
/// <list type="table">
/// <item><term><c>ONLOAD_CAPTURE</c></term><description>pcap file to write every frame to; <c>%p</c> becomes the process id</description></item>
/// <item><term><c>ONLOAD_CAPTURE_SNAPLEN</c></term><description>bytes kept of each frame (default 65535)</description></item>
/// <item><term><c>ONLOAD_CAPTURE_COUNT</c></term><description>frames to capture before stopping (0, the default: no limit)</description></item>
/// <item><term><c>ONLOAD_VETO</c></term><description>a <see cref="VetoRules"/> set</description></item>
/// </list>
/// </summary>
/// <remarks>
/// The capture sits where tcpdump's does on Linux: a received frame is captured before the veto rules see it (the
/// packet tap runs before netfilter), so a vetoed received frame is in the file; a frame to send is captured only
/// once the rules passed it (the tap runs as the frame reaches the driver), so a vetoed sent frame is not.
/// </remarks>
public static class InspectionSettings
{
    public const string CaptureVariable = "ONLOAD_CAPTURE";
    public const string SnapLengthVariable = "ONLOAD_CAPTURE_SNAPLEN";
    public const string CountVariable = "ONLOAD_CAPTURE_COUNT";
    public const string VetoVariable = "ONLOAD_VETO";

    /// <summary>
    /// Returns <paramref name="vnic"/> itself when none of the variables is set, else an <see cref="InspectedVnic"/>
    /// over it with the capture and the rules in place; <paramref name="resources"/> is then the capture file, for the
    /// caller to dispose after the VNIC (it flushes what is buffered), else null. Disposing the returned VNIC disposes
    /// <paramref name="vnic"/>. On a bad setting it throws <see cref="FormatException"/>, and when the file cannot be
    /// created <see cref="IOException"/> or <see cref="UnauthorizedAccessException"/>; <paramref name="vnic"/> is then
    /// left as it was, the caller's to dispose.
    /// </summary>
    public static IVnic Apply(IVnic vnic, out IDisposable? resources) =>
        Apply(vnic, Environment.GetEnvironmentVariable, MonotonicClock.Instance, out resources);

    /// <summary><see cref="Apply(IVnic, out IDisposable?)"/> with the variables from <paramref name="environment"/> and
    /// timestamps from <paramref name="clock"/> (the clock the stack reads).</summary>
    public static IVnic Apply(IVnic vnic, Func<string, string?> environment, IClock clock, out IDisposable? resources)
    {
        ArgumentNullException.ThrowIfNull(vnic);
        ArgumentNullException.ThrowIfNull(environment);
        ArgumentNullException.ThrowIfNull(clock);
        resources = null;
        string? path = NonEmpty(environment(CaptureVariable));
        string? veto = NonEmpty(environment(VetoVariable));
        if (path is null && veto is null)
            return vnic;

        var rules = veto is null ? null : VetoRules.Parse(veto);
        PcapWriter? capture = null;
        if (path is not null)
        {
            var options = new PcapWriterOptions
            {
                SnapLength = Number(environment, SnapLengthVariable, PcapFormat.DefaultSnapLength, 1, PcapFormat.MaxSnapLength),
                MaxFrames = Number(environment, CountVariable, 0, 0, int.MaxValue),
            };
            capture = new PcapWriter(ExpandPath(path, Environment.ProcessId), options, clock);
        }

        var inspected = new InspectedVnic(vnic, clock);
        if (capture is not null)
            inspected.Add(capture, FrameDirection.Receive);
        if (rules is not null)
            inspected.Add(rules);
        if (capture is not null)
            inspected.Add(capture, FrameDirection.Transmit);
        resources = capture;
        return inspected;
    }

    /// <summary>The capture path with <c>%p</c> replaced by <paramref name="pid"/>.</summary>
    public static string ExpandPath(string path, int pid)
    {
        ArgumentNullException.ThrowIfNull(path);
        return path.Replace("%p", pid.ToString(CultureInfo.InvariantCulture), StringComparison.Ordinal);
    }

    private static string? NonEmpty(string? value) => string.IsNullOrWhiteSpace(value) ? null : value;

    private static int Number(Func<string, string?> environment, string name, int fallback, int min, int max)
    {
        string? text = NonEmpty(environment(name));
        if (text is null)
            return fallback;
        if (!int.TryParse(text.Trim(), NumberStyles.None, CultureInfo.InvariantCulture, out int value) || value < min || value > max)
            throw new FormatException($"{name}={text}: expected a number {min}..{max}");
        return value;
    }
}
