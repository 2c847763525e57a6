using System.CommandLine;
using System.Diagnostics;
using Onload.Stack.Tcp;
using Onload.Sweep;
using Onload.Tests.Tcp;

var seedsOption = new Option<int>("--seeds") { Description = "how many seeds per configuration", DefaultValueFactory = _ => 2000 };
var firstOption = new Option<ulong>("--first") { Description = "the first seed; the sweep runs --first .. --first + --seeds - 1", DefaultValueFactory = _ => 1 };
var bytesOption = new Option<int>("--bytes") { Description = "bytes per transfer", DefaultValueFactory = _ => 100_000 };
var configOption = new Option<string[]>("--config")
{
    Description = $"configurations to run, by name: {string.Join(", ", SweepConfig.All.Select(c => c.Name))}",
    DefaultValueFactory = _ => ["sack-cubic", "nosack-newreno"],
    AllowMultipleArgumentsPerToken = true,
};
var jobsOption = new Option<int>("--jobs") { Description = "seeds run at once (each on its own thread)", DefaultValueFactory = _ => Environment.ProcessorCount };
var outOption = new Option<string?>("--out") { Description = "the Markdown report (default perf/results/sweep.md in the repository)" };
var replayOption = new Option<ulong?>("--replay") { Description = "run this one seed in each configuration and print its result in full" };

var root = new RootCommand(
    "onload-sweep: bulk TCP transfers between two stacks over the simulated link, one per seed and configuration, " +
    "each seed its own mix of loss (up to 30% each way), duplication, reordering, corruption and delay. Checks every " +
    "byte; reports completion time, RTOs and retransmissions. Exits 1 when a transfer was damaged, stalled or failed " +
    "other than as Linux would (ETIMEDOUT).")
{
    seedsOption, firstOption, bytesOption, configOption, jobsOption, outOption, replayOption,
};

root.SetAction(parse =>
{
    var configs = new List<SweepConfig>();
    foreach (string name in parse.GetValue(configOption)!)
    {
        var config = SweepConfig.All.FirstOrDefault(c => c.Name == name);
        if (config == null)
        {
            Console.Error.WriteLine($"onload-sweep: unknown --config {name}; known: {string.Join(", ", SweepConfig.All.Select(c => c.Name))}");
            return 2;
        }
        configs.Add(config);
    }
    int bytes = parse.GetValue(bytesOption);

    if (parse.GetValue(replayOption) is { } seed)
    {
        Console.WriteLine(SeedMix.For(seed));
        bool ok = true;
        foreach (var config in configs)
        {
            var result = SimTransfer.Run(seed, config.Options(bytes));
            Console.WriteLine($"{config.Name}: {result}");
            ok &= result.Acceptable;
        }
        return ok ? 0 : 1;
    }

    int seeds = parse.GetValue(seedsOption);
    ulong first = parse.GetValue(firstOption);
    int jobs = Math.Max(1, parse.GetValue(jobsOption));
    string output = parse.GetValue(outOption) ?? DefaultReportPath();

    var work = configs.SelectMany(c => Enumerable.Range(0, seeds).Select(i => (Config: c, Seed: first + (ulong)i))).ToArray();
    var results = new TransferResult[work.Length];
    int done = 0;
    var clock = Stopwatch.StartNew();
    Console.Error.WriteLine($"onload-sweep: {seeds} seeds from {first} x {configs.Count} configurations, {bytes} bytes each, {jobs} at once");
    Parallel.For(0, work.Length, new ParallelOptions { MaxDegreeOfParallelism = jobs }, i =>
    {
        var result = SimTransfer.Run(work[i].Seed, work[i].Config.Options(bytes));
        results[i] = result;
        if (!result.Acceptable)
            Console.Error.WriteLine($"onload-sweep: {work[i].Config.Name}: {result}");
        int n = Interlocked.Increment(ref done);
        if (n % 500 == 0)
            Console.Error.WriteLine($"onload-sweep: {n} of {work.Length} in {clock.Elapsed.TotalSeconds:F0} s");
    });
    clock.Stop();

    var runs = configs.Select(c => new SweepRun(c, [.. results.Where(r => r.Options == c.Options(bytes))])).ToList();
    var report = new SweepReport(runs, first, seeds, bytes, jobs, clock.Elapsed);
    Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(output))!);
    File.WriteAllText(output, report.ToMarkdown());
    Console.Write(report.Summary());
    Console.WriteLine($"report: {output}");
    return runs.All(r => r.Results.All(x => x.Acceptable)) ? 0 : 1;
});

return root.Parse(args).Invoke();

static string DefaultReportPath()
{
    for (var dir = new DirectoryInfo(Directory.GetCurrentDirectory()); dir != null; dir = dir.Parent)
    {
        if (File.Exists(Path.Combine(dir.FullName, "Onload.sln")))
            return Path.Combine(dir.FullName, "perf", "results", "sweep.md");
    }
    return "sweep.md";
}

namespace Onload.Sweep
{
    /// <summary>A TCP configuration the sweep compares, by the name the command line uses.</summary>
    internal sealed record SweepConfig(string Name, string Title, bool Sack, CongestionControl CongestionControl)
    {
        public static readonly SweepConfig[] All =
        [
            new("sack-cubic", "SACK, CUBIC", true, CongestionControl.Cubic),
            new("nosack-newreno", "NewReno, no SACK", false, CongestionControl.NewReno),
            new("sack-newreno", "SACK, NewReno", true, CongestionControl.NewReno),
            new("nosack-cubic", "CUBIC, no SACK", false, CongestionControl.Cubic),
        ];

        public SimTransfer.Options Options(int bytes) =>
            new() { Sack = Sack, CongestionControl = CongestionControl, Bytes = bytes };
    }
}
