using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Exporters.Json;
using BenchmarkDotNet.Jobs;
using BenchmarkDotNet.Running;
using BenchmarkDotNet.Toolchains.InProcess.Emit;

namespace Onload.Perf;

/// <summary>
/// Entry point of onload-bench. Takes BenchmarkDotNet's own arguments (--filter, --list flat, ...), and
/// <c>--job dry|short|medium|long|verylong|default</c> (handled here) or <c>--quick</c>: a short in-process job
/// per benchmark, enough to show that every benchmark runs (its numbers are rough). With no --filter, runs
/// every benchmark. Reports go to perf/results/ (Markdown, JSON, CSV, HTML under perf/results/results/).
/// </summary>
public static class Program
{
    public static int Main(string[] args)
    {
        bool quick = args.Contains("--quick");
        args = [.. args.Where(a => a != "--quick")];
        // BenchmarkDotNet ignores --job when the config has a default job, as ours must (for the toolchain).
        Job baseJob = TakeBaseJob(ref args);
        if (!args.Any(a => a is "--filter" or "-f" or "--list" or "--help" or "-h" or "-?" or "--version"
                           || a.StartsWith("--filter=", StringComparison.Ordinal)))
            args = [.. args, "--filter", "*"];

        DirectoryInfo? root = RepositoryRoot();
        string results = root != null
            ? Path.Combine(root.FullName, "perf", "results")
            : Path.Combine(Directory.GetCurrentDirectory(), "results");

        Job job = quick
            ? Job.ShortRun.WithWarmupCount(1).WithIterationCount(3).WithToolchain(InProcessEmitToolchain.Instance).WithId("Quick")
            : root != null
                ? baseJob.WithToolchain(PerfToolchain.Create(new FileInfo(Path.Combine(root.FullName, "perf", "Onload.Perf.csproj"))))
                : baseJob.WithToolchain(InProcessEmitToolchain.Instance); // no sources to build from: run in-process

        IConfig config = DefaultConfig.Instance
            .WithArtifactsPath(results)
            .AddExporter(JsonExporter.Full)
            .AddJob(job.AsDefault())
            .WithOptions(ConfigOptions.JoinSummary);

        var summaries = BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args, config).ToArray();
        // Non-zero when the arguments were wrong or matched nothing, or a benchmark failed to build or
        // run, so that a script notices.
        bool listOrHelp = args.Any(a => a is "--list" or "--help" or "-h" or "-?" or "--version");
        if (summaries.Length == 0 && !listOrHelp)
            return 1;
        return summaries.Any(s => s.HasCriticalValidationErrors || s.Reports.Any(r => !r.Success)) ? 1 : 0;
    }

    /// <summary>Removes <c>--job NAME</c> (or <c>-j NAME</c>) from the arguments and returns that job.</summary>
    private static Job TakeBaseJob(ref string[] args)
    {
        int i = Array.FindIndex(args, a => a is "--job" or "-j");
        if (i < 0 || i + 1 >= args.Length)
            return Job.Default;
        string name = args[i + 1];
        args = [.. args[..i], .. args[(i + 2)..]];
        return name.ToLowerInvariant() switch
        {
            "dry" => Job.Dry,
            "short" => Job.ShortRun,
            "medium" => Job.MediumRun,
            "long" => Job.LongRun,
            "verylong" => Job.VeryLongRun,
            "default" => Job.Default,
            _ => throw new ArgumentException($"unknown --job {name}: use dry, short, medium, long, verylong or default"),
        };
    }

    /// <summary>The repository this binary was built in, found by its Onload.sln; null when run elsewhere.</summary>
    private static DirectoryInfo? RepositoryRoot()
    {
        foreach (string start in new[] { AppContext.BaseDirectory, Directory.GetCurrentDirectory() })
        {
            for (var dir = new DirectoryInfo(start); dir != null; dir = dir.Parent)
            {
                if (File.Exists(Path.Combine(dir.FullName, "Onload.sln")) && File.Exists(Path.Combine(dir.FullName, "perf", "Onload.Perf.csproj")))
                    return dir;
            }
        }
        return null;
    }
}
