using Onload.Vnic;

namespace Onload.Perf.Stack;

/// <summary>
/// A VNIC that receives a chosen frame on demand and drops what is sent, so a benchmark measures the stack's own
/// cost per frame and nothing of a backend.
/// </summary>
internal sealed class ReplayVnic : IVnic
{
    private byte[][] _frames = [];
    private int _next;

    public ReplayVnic(MacAddress mac) => MacAddress = mac;

    public string Spec => "replay:bench";
    public MacAddress MacAddress { get; }
    public int Mtu => 1500;
    public BufferPool Buffers { get; } = new(256);
    public VnicCounters Counters { get; } = new();
    public int WaitHandle => -1;

    /// <summary>The frames the next <see cref="Receive"/> calls hand out, once each, in order.</summary>
    public void Arm(byte[][] frames)
    {
        _frames = frames;
        _next = 0;
    }

    public int Receive(Span<PacketDescriptor> batch)
    {
        int n = 0;
        while (n < batch.Length && _next < _frames.Length && Buffers.TryAllocate(out int buffer))
        {
            var frame = _frames[_next++];
            frame.CopyTo(Buffers.Span(buffer));
            batch[n++] = new PacketDescriptor(buffer, frame.Length);
        }
        return n;
    }

    public int Transmit(ReadOnlySpan<PacketDescriptor> batch)
    {
        foreach (ref readonly var d in batch)
        {
            Counters.TxFrames++;
            Buffers.Release(d.Buffer);
        }
        return batch.Length;
    }

    public void Dispose() => Buffers.Dispose();
}
