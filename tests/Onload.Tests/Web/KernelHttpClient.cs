using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Text.RegularExpressions;
using Onload.Tests.Netns;

namespace Onload.Tests.Web;

/// <summary>
/// What a user points at a web server from the kernel's side: curl for single requests, keep-alive and many
/// connections at once, wrk for load. Everything runs in <see cref="Namespace"/> against <see cref="BaseUrl"/>.
/// </summary>
public sealed partial class KernelHttpClient(TestNamespace ns, string baseUrl)
{
    public static readonly TimeSpan Deadline = TimeSpan.FromSeconds(60);

    public TestNamespace Namespace { get; } = ns;

    /// <summary>e.g. http://10.77.5.2:8080</summary>
    public string BaseUrl { get; } = baseUrl;

    /// <summary>The body of GET <paramref name="path"/>; fails the test unless the status is 2xx (curl --fail).</summary>
    public byte[] Get(string path) =>
        Namespace.Pipe($"curl -sS --fail --max-time 30 {BaseUrl}{path}", [], Deadline);

    /// <summary>The body of POST <paramref name="path"/> with <paramref name="body"/> as its body.</summary>
    public byte[] Post(string path, ReadOnlySpan<byte> body) =>
        Namespace.Pipe($"curl -sS --fail --max-time 30 -H 'Content-Type: application/octet-stream' --data-binary @- {BaseUrl}{path}",
            body, Deadline);

    /// <summary>
    /// GETs <paramref name="path"/> <paramref name="count"/> times in one curl, which keeps its connection alive
    /// between them; returns each request's (status, connections curl opened for it).
    /// </summary>
    public (int Status, int Connects)[] GetKeepAlive(string path, int count)
    {
        // -o applies to one URL: each needs its own.
        string urls = string.Join(' ', Enumerable.Repeat($"-o /dev/null {BaseUrl}{path}", count));
        string output = Encoding.ASCII.GetString(Namespace.Pipe(
            $"curl -sS --max-time 30 -w '%{{http_code}} %{{num_connects}}\\n' {urls}", [], Deadline));
        return ParseStatusLines(output);
    }

    /// <summary>
    /// GETs <paramref name="path"/> <paramref name="count"/> times, up to <paramref name="parallel"/> at once, each
    /// on a connection of its own (Connection: close); returns each request's (status, connections opened).
    /// </summary>
    public (int Status, int Connects)[] GetInParallel(string path, int count, int parallel)
    {
        // One URL per line in a config file read from standard input: hundreds of URLs would not fit a command line.
        var config = new StringBuilder();
        for (int i = 0; i < count; i++)
            config.Append(CultureInfo.InvariantCulture, $"url = \"{BaseUrl}{path}\"\noutput = \"/dev/null\"\n");
        string output = Encoding.ASCII.GetString(Namespace.Pipe(
            $"curl -sS --max-time 30 --parallel --parallel-immediate --parallel-max {parallel} -H 'Connection: close' " +
            "-w '%{http_code} %{num_connects}\\n' -K -", Encoding.ASCII.GetBytes(config.ToString()), Deadline));
        return ParseStatusLines(output);
    }

    /// <summary>GETs <paramref name="path"/> but stops reading after <paramref name="after"/> (curl --max-time,
    /// which closes the connection); true when curl did give up (exit 28) rather than finish or fail otherwise.</summary>
    public (bool GaveUp, string Why) GivesUpOn(string path, TimeSpan after)
    {
        // Read slowly, so the answer cannot finish first however fast the path (kernel sockets over veth moved the
        // whole gigabyte in under half a second).
        var r = Netns.Netns.Exec("ip", ["netns", "exec", Namespace.Name, "curl", "-sS", "-o", "/dev/null", "--limit-rate", "1M", "--max-time",
            after.TotalSeconds.ToString(CultureInfo.InvariantCulture), "-w", "HTTP %{http_code}, %{size_download} bytes",
            BaseUrl + path], Deadline);
        return (r.ExitCode == 28, $"curl exited {r.ExitCode} ({r.Stdout.Trim()}): {r.Stderr.Trim()}");
    }

    /// <summary>Runs wrk against <paramref name="path"/> and returns what it reports.</summary>
    public WrkResult Wrk(string path, int connections, int threads, TimeSpan duration)
    {
        string output = Encoding.ASCII.GetString(Namespace.Pipe(
            string.Create(CultureInfo.InvariantCulture,
                $"wrk -t{threads} -c{connections} -d{(int)duration.TotalSeconds}s --latency --timeout 5s {BaseUrl}{path}"),
            [], duration + Deadline));
        return WrkResult.Parse(output);
    }

    /// <summary>SHA-256 of the first <paramref name="length"/> bytes of the sample's pattern (byte i = i mod 251).</summary>
    public static byte[] PatternSha256(long length)
    {
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        var block = new byte[251 * 64];
        for (int i = 0; i < block.Length; i++)
            block[i] = (byte)(i % 251);
        for (long at = 0; at < length; at += block.Length)
            sha.AppendData(block, 0, (int)Math.Min(block.Length, length - at));
        return sha.GetHashAndReset();
    }

    private static (int, int)[] ParseStatusLines(string output) =>
        output.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Select(line => line.Split(' '))
            .Select(f => (int.Parse(f[0], CultureInfo.InvariantCulture), int.Parse(f[1], CultureInfo.InvariantCulture)))
            .ToArray();
}

/// <summary>
/// What wrk printed: requests completed, socket errors (connect, read, write, timeout; wrk prints the line only when
/// one is non-zero), non-2xx/3xx responses (likewise), requests per second and the latency percentiles.
/// </summary>
public sealed partial record WrkResult(long Requests, long ConnectErrors, long ReadErrors, long WriteErrors, long Timeouts,
    long Non2xx3xx, double RequestsPerSecond, string Output)
{
    public long SocketErrors => ConnectErrors + ReadErrors + WriteErrors + Timeouts;

    public static WrkResult Parse(string output)
    {
        ArgumentNullException.ThrowIfNull(output);
        var requests = RequestsLine().Match(output);
        if (!requests.Success)
            throw new FormatException("no 'N requests in' line in wrk's output: " + output);
        var errors = SocketErrorsLine().Match(output);
        var non2xx = Non2xxLine().Match(output);
        var rate = RateLine().Match(output);
        long Group(Match m, int i) => m.Success ? long.Parse(m.Groups[i].Value, CultureInfo.InvariantCulture) : 0;
        return new WrkResult(Group(requests, 1), Group(errors, 1), Group(errors, 2), Group(errors, 3), Group(errors, 4),
            Group(non2xx, 1), rate.Success ? double.Parse(rate.Groups[1].Value, CultureInfo.InvariantCulture) : 0, output);
    }

    [GeneratedRegex(@"(\d+) requests in")]
    private static partial Regex RequestsLine();

    [GeneratedRegex(@"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")]
    private static partial Regex SocketErrorsLine();

    [GeneratedRegex(@"Non-2xx or 3xx responses: (\d+)")]
    private static partial Regex Non2xxLine();

    [GeneratedRegex(@"Requests/sec:\s+([\d.]+)")]
    private static partial Regex RateLine();
}
