using System.Diagnostics;

namespace Onload.Tests.Wire;

/// <summary>
/// Every input the fuzzer once broke the stack with (tests/fuzz/regressions/TARGET/*.hex, each saying what it found)
/// replayed through its target (tests/Onload.Fuzz, not instrumented): the stack must now take it without an
/// exception, a leaked buffer or a TCP row left behind.
/// </summary>
[TestFixture]
[Category("hostile")]
public class FuzzRegressionTests
{
    private static string Root => Interop.Dist.Root;

    public static IEnumerable<string> Targets() =>
        Directory.GetDirectories(Path.Combine(Root, "tests", "fuzz", "regressions")).Select(Path.GetFileName)!;

    [TestCaseSource(nameof(Targets))]
    public void Every_saved_crash_input_is_now_taken_cleanly(string target)
    {
        string harness = Path.Combine(Root, "tests", "Onload.Fuzz", "bin", "Release", "net10.0", "onload-fuzz.dll");
        Assert.That(File.Exists(harness), Is.True, $"{harness} is built (make build)");
        var psi = new ProcessStartInfo("dotnet", [harness, target, "--replay", Path.Combine(Root, "tests", "fuzz", "regressions", target)])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        using var p = Process.Start(psi)!;
        string stdout = p.StandardOutput.ReadToEnd(), stderr = p.StandardError.ReadToEnd();
        Assert.That(p.WaitForExit(60_000), Is.True, "the replay finished");
        TestContext.Out.WriteLine(stdout.Trim());
        Assert.That(p.ExitCode, Is.Zero, stderr);
        Assert.That(stdout, Does.Contain("none failed"));
    }
}
