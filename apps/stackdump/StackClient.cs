using System.Text.Json;
using Onload.Driverlink;
using Onload.StackDump;

namespace Onload.Apps.StackDump;

/// <summary>Asks one process's stack for its snapshot (<see cref="StackDumpProtocol"/>).</summary>
internal static class StackClient
{
    /// <summary>The snapshot of <paramref name="pid"/>'s stack, or null with <paramref name="error"/> saying why
    /// (no such stack, refused, no whole answer within <paramref name="timeoutMs"/>, a document that does not parse).</summary>
    public static StackSnapshot? Query(int pid, int timeoutMs, out string error)
    {
        error = "";
        long deadline = Environment.TickCount64 + timeoutMs;
        DriverlinkSocket socket;
        try
        {
            socket = DriverlinkSocket.Connect(StackDumpProtocol.Name(pid), timeoutMs);
        }
        catch (DriverlinkSocketException e)
        {
            error = (Onload.Stack.Errno)e.Errno switch
            {
                Onload.Stack.Errno.ECONNREFUSED => "no stack listens (the process ended?)",
                Onload.Stack.Errno.EAGAIN => $"no answer within {timeoutMs} ms (its queue of dump requests is full)",
                _ => e.Message,
            };
            return null;
        }
        using (socket)
        {
            var document = new MemoryStream();
            var buffer = new byte[StackDumpProtocol.ChunkBytes];
            while (true)
            {
                var r = socket.Receive(buffer, default, dontWait: true);
                if (r.Status == ReceiveStatus.Ok)
                    document.Write(buffer, 0, r.Length);
                else if (r.Status == ReceiveStatus.PeerClosed)
                    break;
                else if (r.Status != ReceiveStatus.WouldBlock)
                {
                    error = $"reading its answer: {r.Status} (errno {r.Errno})";
                    return null;
                }
                else if (!socket.WaitReady(writable: false, (int)Math.Max(0, deadline - Environment.TickCount64)))
                {
                    error = $"no answer within {timeoutMs} ms";
                    return null;
                }
            }
            return Parse(document.ToArray(), out error);
        }
    }

    /// <summary>A stack's answer: its snapshot, or its refusal as <paramref name="error"/>.</summary>
    public static StackSnapshot? Parse(byte[] document, out string error)
    {
        error = "";
        try
        {
            using var json = JsonDocument.Parse(document);
            if (json.RootElement.ValueKind == JsonValueKind.Object && json.RootElement.TryGetProperty("error", out var refusal))
            {
                error = refusal.GetString() ?? "refused";
                return null;
            }
            return json.RootElement.Deserialize(StackDumpJson.Default.StackSnapshot)
                ?? throw new JsonException("an empty document");
        }
        catch (JsonException e)
        {
            error = document.Length == 0 ? "it closed without answering" : $"its answer does not parse: {e.Message}";
            return null;
        }
    }
}
