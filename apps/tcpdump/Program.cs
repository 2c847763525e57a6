using System.CommandLine;
using System.ComponentModel;
using System.Diagnostics;
using System.Globalization;
using Onload.Apps.Tcpdump;
using Onload.Vnic.Inspect;

var (ours, program) = CommandSplit.Split(args);

var writeOption = new Option<string?>("-w", "--write") { Description = "the pcap file the program's stack writes (%p becomes its pid)", HelpName = "FILE" };
var readOption = new Option<string?>("-r", "--read") { Description = "print a pcap file one line a frame, instead of running a program", HelpName = "FILE" };
var snapOption = new Option<int>("-s", "--snaplen")
{
    Description = $"bytes kept of each frame (1..{PcapFormat.MaxSnapLength})",
    HelpName = "SNAPLEN",
    DefaultValueFactory = _ => PcapFormat.DefaultSnapLength,
};
var countOption = new Option<long>("-c", "--count") { Description = "stop after this many frames (0: no limit)", HelpName = "COUNT" };
var vetoOption = new Option<string?>("--veto") { Description = "veto rules for the program's stack, e.g. \"drop rx udp dport 7001; drop any icmp\"", HelpName = "RULES" };

var root = new RootCommand(
    "onload-tcpdump: runs an accelerated PROGRAM (onload-echo, onload-pingpong) so that its stack writes every frame " +
    "its VNIC receives and sends to a pcap file that tcpdump and tshark read; exits with the program's status. " +
    "Usage: onload-tcpdump -w FILE [-s SNAPLEN] [-c COUNT] [--veto RULES] [--] PROGRAM [ARGS...], or onload-tcpdump -r FILE [-c COUNT].")
{
    writeOption, readOption, snapOption, countOption, vetoOption,
};

root.SetAction(parse =>
{
    string? write = parse.GetValue(writeOption);
    string? read = parse.GetValue(readOption);
    int snap = parse.GetValue(snapOption);
    long count = parse.GetValue(countOption);
    string? veto = parse.GetValue(vetoOption);
    if (count < 0 || count > int.MaxValue)
        return Usage($"-c {count}: must be 0..{int.MaxValue}");
    if (read is not null)
    {
        if (write is not null || program.Length > 0)
            return Usage("-r prints a file: no -w and no PROGRAM with it");
        try
        {
            return CapturePrinter.Print(read, count, Console.Out);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or InvalidDataException)
        {
            Console.Error.WriteLine($"onload-tcpdump: {read}: {e.Message}");
            return 1;
        }
    }
    if (program.Length == 0)
        return Usage("no PROGRAM to run (or -r FILE to print one)");
    if (write is null && veto is null)
        return Usage("-w FILE (or --veto RULES) is needed to run a program");
    if (snap is < 1 or > PcapFormat.MaxSnapLength)
        return Usage($"-s {snap}: must be 1..{PcapFormat.MaxSnapLength}");
    if (veto is not null)
    {
        try
        {
            VetoRules.Parse(veto);
        }
        catch (FormatException e)
        {
            return Usage(e.Message);
        }
    }
    return Run(program, write is null ? null : Path.GetFullPath(write), snap, count, veto);
});

return root.Parse(ours).Invoke();

static int Run(string[] program, string? path, int snap, long count, string? veto)
{
    var psi = new ProcessStartInfo(program[0]) { UseShellExecute = false };
    foreach (string a in program[1..])
        psi.ArgumentList.Add(a);
    if (path is not null)
    {
        psi.Environment[InspectionSettings.CaptureVariable] = path;
        psi.Environment[InspectionSettings.SnapLengthVariable] = snap.ToString(CultureInfo.InvariantCulture);
        psi.Environment[InspectionSettings.CountVariable] = count.ToString(CultureInfo.InvariantCulture);
        // A file left by an earlier run must not pass for this one's.
        if (!path.Contains("%p", StringComparison.Ordinal))
            File.Delete(path);
    }
    if (veto is not null)
        psi.Environment[InspectionSettings.VetoVariable] = veto;

    using var process = new Process { StartInfo = psi };
    try
    {
        process.Start();
    }
    catch (Win32Exception e)
    {
        Console.Error.WriteLine($"onload-tcpdump: {program[0]}: {e.Message}");
        return 127;
    }
    int status;
    using (Signals.ForwardTo(process.Id))
    {
        process.WaitForExit();
        status = process.ExitCode;
    }
    if (path is not null)
        Console.Error.WriteLine(Summary(InspectionSettings.ExpandPath(path, process.Id), program[0], status));
    return status;
}

// Read back from the file, so it says what a reader of the file will find.
static string Summary(string path, string program, int status)
{
    string name = Path.GetFileName(program);
    if (!File.Exists(path))
        return $"onload-tcpdump: {name} wrote no capture to {path} (exit status {status}): " +
            "does it open its VNIC through InspectionSettings.Apply?";
    try
    {
        using var reader = new PcapReader(path);
        long frames = 0, bytes = 0;
        while (reader.TryRead(out var r))
        {
            frames++;
            bytes += r.OriginalLength;
        }
        return string.Create(CultureInfo.InvariantCulture,
            $"onload-tcpdump: {frames} frames ({bytes} bytes) captured to {path}, snaplen {reader.SnapLength}" +
            $"{(reader.Truncated ? ", last record cut short" : "")}; {name} exited with status {status}");
    }
    catch (Exception e) when (e is IOException or InvalidDataException)
    {
        return $"onload-tcpdump: {path}: {e.Message}; {name} exited with status {status}";
    }
}

static int Usage(string message)
{
    Console.Error.WriteLine($"onload-tcpdump: {message}");
    return 2;
}
