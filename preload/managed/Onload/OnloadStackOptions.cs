using System.Globalization;
using System.IO.Pipelines;
using System.Net;
using Onload.Stack;

namespace Onload.Sockets;

/// <summary>How <see cref="OnloadStack.Open"/> and <see cref="OnloadStack.Attach"/> make a stack.</summary>
public sealed record OnloadStackOptions
{
    /// <summary>Direct mode: the VNIC spec KIND:NAME (af_xdp:IF[:QUEUE], af_packet:IF, tap:NAME, shm:NAME).</summary>
    public string? Vnic { get; init; }

    /// <summary>Direct mode: the stack's own IPv4 address, which the kernel does not hold.</summary>
    public IPAddress? Address { get; init; }

    public int PrefixLength { get; init; } = 24;

    /// <summary>The default gateway for destinations off the subnet (direct mode; driverlink mode takes the kernel's).</summary>
    public IPAddress? Gateway { get; init; }

    /// <summary>How long the stack thread keeps polling after its last work before it sleeps on the VNIC
    /// (ONLOAD_SPIN_US, else 100 µs).</summary>
    public TimeSpan SpinTime { get; init; } = TimeSpan.FromMicroseconds(EnvironmentInt("ONLOAD_SPIN_US", 100));

    /// <summary>TCP_NODELAY on every connection (Pipelines.Sockets.Unofficial's recommended option, and Kestrel's).</summary>
    public bool NoDelay { get; init; } = true;

    /// <summary>Bytes a connection's Input pipe holds unread before the stack stops reading from that connection
    /// (its TCP receive window then closes). Pipelines' default: 64 KiB.</summary>
    public long InputPauseThreshold { get; init; } = 65536;

    /// <summary>Bytes a connection's Output pipe holds unsent before the application's FlushAsync waits.</summary>
    public long OutputPauseThreshold { get; init; } = 65536;

    /// <summary>The memory pool of the connections' pipes (Pipelines' default when null).</summary>
    public System.Buffers.MemoryPool<byte>? MemoryPool { get; init; }

    /// <summary>Driverlink mode: how to reach onload-driverd (the namespace's own daemon, started on demand, when null).</summary>
    public Onload.Driverlink.DriverlinkClientOptions? Driverlink { get; init; }

    /// <summary>Adjusts the stack's options (table sizes, MSL, buffers...) before it is made.</summary>
    public Func<StackOptions, StackOptions>? ConfigureStack { get; init; }

    private static int EnvironmentInt(string name, int fallback) =>
        int.TryParse(Environment.GetEnvironmentVariable(name), NumberStyles.Integer, CultureInfo.InvariantCulture, out int v) && v >= 0
            ? v
            : fallback;

    internal PipeOptions InputPipe(PipeScheduler stackScheduler) =>
        new(MemoryPool, readerScheduler: PipeScheduler.ThreadPool, writerScheduler: stackScheduler,
            pauseWriterThreshold: InputPauseThreshold, resumeWriterThreshold: InputPauseThreshold / 2, useSynchronizationContext: false);

    internal PipeOptions OutputPipe(PipeScheduler stackScheduler) =>
        new(MemoryPool, readerScheduler: stackScheduler, writerScheduler: PipeScheduler.ThreadPool,
            pauseWriterThreshold: OutputPauseThreshold, resumeWriterThreshold: OutputPauseThreshold / 2, useSynchronizationContext: false);
}
