using System.Buffers;
using System.Text.Json.Serialization;

namespace Onload.Apps.WebSample;

/// <summary>
/// What the sample serves: <c>GET /</c> a line of text, <c>GET /bytes/{n}</c> n bytes of <see cref="Pattern"/>,
/// <c>POST /echo</c> the request body back, <c>GET /health</c>, and <c>GET /stats</c> the process's GC allocation
/// (perf/web.sh divides its growth by the requests wrk made).
/// </summary>
internal static class Endpoints
{
    /// <summary>The largest /bytes answer: 1 GiB.</summary>
    public const long MaxBytes = 1L << 30;

    public static void Map(WebApplication app, string transport)
    {
        string hello = $"Hello from onload-web-sample over {transport}\n";
        app.MapGet("/", () => hello);
        app.MapGet("/health", () => "ok\n");
        app.MapGet("/bytes/{n:long}", WriteBytesAsync);
        app.MapPost("/echo", EchoAsync);
        app.MapGet("/stats", () => new SampleStats(
            GC.GetTotalAllocatedBytes(precise: true), GC.CollectionCount(0), GC.CollectionCount(1), GC.CollectionCount(2)));
    }

    /// <summary>Byte i of every /bytes answer: i mod 251 (a prime, so the pattern does not line up with any buffer
    /// size and a misplaced block shows).</summary>
    public static byte Pattern(long i) => (byte)(i % 251);

    private static async Task WriteBytesAsync(long n, HttpContext context)
    {
        if (n is < 0 or > MaxBytes)
        {
            context.Response.StatusCode = StatusCodes.Status400BadRequest;
            return;
        }
        context.Response.ContentType = "application/octet-stream";
        context.Response.ContentLength = n;
        var writer = context.Response.BodyWriter;
        for (long at = 0; at < n;)
        {
            var span = writer.GetSpan(4096);
            int chunk = (int)Math.Min(span.Length, n - at);
            Fill(span[..chunk], at);
            writer.Advance(chunk);
            at += chunk;
            if (writer.UnflushedBytes >= 64 * 1024 || at == n)
            {
                var flushed = await writer.FlushAsync(context.RequestAborted);
                if (flushed.IsCanceled || flushed.IsCompleted)
                    return;
            }
        }
    }

    private static void Fill(Span<byte> span, long start)
    {
        int phase = (int)(start % 251);
        for (int i = 0; i < span.Length; i++)
        {
            span[i] = (byte)phase;
            phase = phase == 250 ? 0 : phase + 1;
        }
    }

    /// <summary>Copies the request body to the response as it arrives (same length when the request gave one).</summary>
    private static async Task EchoAsync(HttpContext context)
    {
        context.Response.ContentType = context.Request.ContentType ?? "application/octet-stream";
        if (context.Request.ContentLength is { } length)
            context.Response.ContentLength = length;
        var reader = context.Request.BodyReader;
        var writer = context.Response.BodyWriter;
        while (true)
        {
            var read = await reader.ReadAsync(context.RequestAborted);
            foreach (var segment in read.Buffer)
                writer.Write(segment.Span);
            reader.AdvanceTo(read.Buffer.End);
            var flushed = await writer.FlushAsync(context.RequestAborted);
            if (read.IsCompleted || flushed.IsCompleted)
                break;
        }
    }
}

/// <summary>The process's garbage-collector figures at the time of asking.</summary>
internal sealed record SampleStats(long GcAllocatedBytes, int Gen0Collections, int Gen1Collections, int Gen2Collections);

[JsonSerializable(typeof(SampleStats))]
internal sealed partial class SampleJson : JsonSerializerContext;
