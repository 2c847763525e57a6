using System.Buffers;
using System.IO.Pipelines;
using System.Text;
using Onload.Sockets;

namespace Onload.Tests.Managed;

/// <summary>What the conversation tests do with pipes: write, read to the end, echo.</summary>
internal static class Conversation
{
    /// <summary>Writes <paramref name="data"/> in pieces of <paramref name="chunk"/> bytes, flushing each.</summary>
    public static async Task WriteAllAsync(PipeWriter output, ReadOnlyMemory<byte> data, int chunk = 16384, bool complete = true)
    {
        for (int at = 0; at < data.Length; at += chunk)
        {
            var result = await output.WriteAsync(data.Slice(at, Math.Min(chunk, data.Length - at)));
            if (result.IsCompleted)
                throw new InvalidOperationException($"the output stopped taking data after {at} bytes");
        }
        if (complete)
            await output.CompleteAsync();
    }

    /// <summary>Reads until the Input pipe completes (the peer's FIN), returning everything read.</summary>
    public static async Task<byte[]> ReadToEndAsync(PipeReader input, TimeSpan? pacing = null)
    {
        var received = new MemoryStream();
        while (true)
        {
            var result = await input.ReadAsync();
            foreach (var segment in result.Buffer)
                received.Write(segment.Span);
            input.AdvanceTo(result.Buffer.End);
            if (result.IsCompleted)
                return received.ToArray();
            if (pacing is { } p)
                await Task.Delay(p);
        }
    }

    /// <summary>Reads one line ending in \n (without it), or null at the end of the stream.</summary>
    public static async Task<string?> ReadLineAsync(PipeReader input)
    {
        while (true)
        {
            var result = await input.ReadAsync();
            var buffer = result.Buffer;
            var newline = buffer.PositionOf((byte)'\n');
            if (newline is { } end)
            {
                string line = Encoding.ASCII.GetString(buffer.Slice(0, end).ToArray());
                input.AdvanceTo(buffer.GetPosition(1, end));
                return line;
            }
            input.AdvanceTo(buffer.Start, buffer.End);
            if (result.IsCompleted)
                return null;
        }
    }

    public static ValueTask<FlushResult> WriteLineAsync(PipeWriter output, string line) =>
        output.WriteAsync(Encoding.ASCII.GetBytes(line + "\n"));

    /// <summary>Copies Input to Output until the peer's FIN, then completes Output (our FIN) and closes.</summary>
    public static async Task EchoAsync(IPipeConnection connection)
    {
        await using (connection)
        {
            while (true)
            {
                var result = await connection.Input.ReadAsync();
                foreach (var segment in result.Buffer)
                    await connection.Output.WriteAsync(segment);
                connection.Input.AdvanceTo(result.Buffer.End);
                if (result.IsCompleted)
                    break;
            }
            await connection.Output.CompleteAsync();
        }
    }

    /// <summary>Answers datagrams with themselves until cancelled.</summary>
    public static async Task UdpEchoAsync(IDatagramSocket socket, CancellationToken cancellationToken)
    {
        var buffer = new byte[65536];
        try
        {
            while (true)
            {
                var received = await socket.ReceiveFromAsync(buffer, cancellationToken);
                await socket.SendToAsync(buffer.AsMemory(0, received.Length), received.RemoteEndPoint, cancellationToken);
            }
        }
        catch (OperationCanceledException)
        {
        }
    }
}
