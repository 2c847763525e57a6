namespace Onload.Vnic.Sim;

/// <summary>One end of a <see cref="SimLink"/>, behaving like any other VNIC.</summary>
public sealed class SimVnic : IVnic
{
    private readonly DescriptorRing _rx;
    private SimWire? _wire;

    internal SimVnic(string spec, MacAddress mac, int mtu, int buffers)
    {
        Spec = spec;
        MacAddress = mac;
        Mtu = mtu;
        Buffers = new BufferPool(buffers);
        _rx = new DescriptorRing(512);
    }

    public string Spec { get; }
    public MacAddress MacAddress { get; }
    public int Mtu { get; }
    public BufferPool Buffers { get; }
    public VnicCounters Counters { get; } = new();
    public int WaitHandle => -1;

    internal SimWire Wire => _wire ?? throw new InvalidOperationException("not attached");

    internal void Attach(SimWire wire) => _wire = wire;

    /// <summary>Called by the far end's wire: copies a frame into this end's pool and RX ring.</summary>
    internal bool Land(ReadOnlySpan<byte> frame)
    {
        if (frame.Length > Buffers.BufferSize)
        {
            Counters.RxDropTooLong++;
            return false;
        }
        if (_rx.Space == 0)
        {
            Counters.RxDropRingFull++;
            return false;
        }
        if (!Buffers.TryAllocate(out int buffer))
        {
            Counters.RxDropNoBuffer++;
            return false;
        }
        frame.CopyTo(Buffers.Span(buffer));
        _rx.TryProduce(new PacketDescriptor(buffer, frame.Length));
        return true;
    }

    public int Receive(Span<PacketDescriptor> batch)
    {
        // Frames travelling towards this end land when the reader looks, like a NIC's DMA seen at poll time.
        _peer?.Wire.Deliver();
        int n = _rx.Consume(batch);
        for (int i = 0; i < n; i++)
        {
            Counters.RxFrames++;
            Counters.RxBytes += batch[i].Length;
        }
        return n;
    }

    private SimVnic? _peer;

    internal void Pair(SimVnic peer) => _peer = peer;

    public int Transmit(ReadOnlySpan<PacketDescriptor> batch)
    {
        foreach (ref readonly var d in batch)
        {
            Counters.TxFrames++;
            Counters.TxBytes += d.Length;
            Wire.Send(Buffers.Span(d));
            Buffers.Release(d.Buffer);
        }
        return batch.Length;
    }

    public void Dispose() => Buffers.Dispose();
}
