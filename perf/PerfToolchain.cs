using BenchmarkDotNet.Loggers;
using BenchmarkDotNet.Toolchains;
using BenchmarkDotNet.Toolchains.CsProj;
using BenchmarkDotNet.Toolchains.DotNetCli;

namespace Onload.Perf;

/// <summary>
/// BenchmarkDotNet's usual out-of-process toolchain (generate a project, build it, run each benchmark in its
/// own process), told where our project file is. Its stock generator looks for a project named after the
/// assembly (onload-bench.csproj) and so can't find perf/Onload.Perf.csproj.
/// </summary>
internal static class PerfToolchain
{
    // What CsProjCoreToolchain.From(NetCoreAppSettings.NetCoreApp10_0) builds, but for the generator. Its
    // paths are null (meaning: the defaults), which BenchmarkDotNet accepts though it annotates them non-null.
    private static readonly NetCoreAppSettings Settings = NetCoreAppSettings.NetCoreApp10_0;

    public static IToolchain Create(FileInfo projectFile) => new Toolchain(
        "CsProj",
        new Generator(projectFile),
        new DotNetCliBuilder(Settings.TargetFrameworkMoniker, Settings.CustomDotNetCliPath, logOutput: false),
        new DotNetCliExecutor(Settings.CustomDotNetCliPath!));

    private sealed class Generator(FileInfo projectFile) : CsProjGenerator(
        Settings.TargetFrameworkMoniker, Settings.CustomDotNetCliPath!, Settings.PackagesPath!,
        Settings.RuntimeFrameworkVersion!, isNetCore: true)
    {
        protected override FileInfo GetProjectFilePath(Type benchmarkTarget, ILogger logger) => projectFile;
    }
}
