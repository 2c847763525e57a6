namespace Onload.Tests.Interop;

/// <summary>Finds the install tree <c>dist/</c> that <c>make</c> builds, from the test assembly's location.</summary>
public static class Dist
{
    public static string Root
    {
        get
        {
            for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
                if (File.Exists(Path.Combine(dir.FullName, "Onload.sln")))
                    return dir.FullName;
            throw new InvalidOperationException("Onload.sln not found above " + AppContext.BaseDirectory);
        }
    }

    public static string Bin(string program) => Existing(Path.Combine(Root, "dist", "bin", program));

    /// <summary>A test helper program that <c>make</c> builds into dist/tests (not installed).</summary>
    public static string TestProgram(params string[] path) => Existing(Path.Combine([Root, "dist", "tests", .. path]));

    private static string Existing(string path)
    {
        if (!File.Exists(path))
            Assert.Fail($"{path} is missing: run 'make' (or 'make test', which builds it) first");
        return path;
    }
}
