namespace Onload.Vnic.Inspect;

/// <summary>
/// A VNIC whose receive and transmit paths pass through registered <see cref="IFrameInspector"/>s: each sees every
/// frame and may drop it, the way a NIC's filter or netfilter would. Wraps any other <see cref="IVnic"/>; every member
/// but <see cref="Receive"/> and <see cref="Transmit"/> passes straight through.
/// </summary>
/// <remarks>
/// <para>Each direction has its own chain, run in the order inspectors were added; the first
/// <see cref="FrameVerdict.Drop"/> ends the chain, so an inspector placed after a veto sees only what passed. That is
/// how a capture is placed like tcpdump's on Linux: before the veto on receive (the packet tap runs before netfilter),
/// after it on transmit (the tap runs as the frame reaches the driver).</para>
/// <para>A dropped received frame's buffer goes back to the pool and the batch closes up over it. A vetoed frame to
/// send is released and counts as accepted, so <see cref="Transmit"/> still returns the length of the prefix of the
/// batch it took ownership of: when the backend refuses part of the batch (a full ring), the frames from the first
/// refused one on, vetoed or not, stay with the caller. A frame the backend refused has been seen by the transmit
/// chain all the same, as Linux's tap sees a frame the driver then refuses.</para>
/// <para>With no inspector on a direction the cost is one test per batch. Registration copies the chain (rare, cold);
/// nothing allocates per frame. Single-threaded, like the stack that drives it.</para>
/// </remarks>
public sealed class InspectedVnic : IVnic
{
    private readonly IVnic _inner;
    private readonly IClock _clock;
    private IFrameInspector[] _receive = [];
    private IFrameInspector[] _transmit = [];
    // The frames of a transmit batch that passed, and where each sat in the caller's batch; grown, never shrunk.
    private PacketDescriptor[] _passed = new PacketDescriptor[64];
    private int[] _passedAt = new int[64];

    public InspectedVnic(IVnic inner, IClock? clock = null)
    {
        ArgumentNullException.ThrowIfNull(inner);
        _inner = inner;
        _clock = clock ?? MonotonicClock.Instance;
    }

    /// <summary>The VNIC underneath, which this one disposes.</summary>
    public IVnic Inner => _inner;

    /// <summary>Received frames an inspector dropped.</summary>
    public long RxVetoed { get; private set; }

    /// <summary>Frames to send an inspector dropped (accepted from the caller and released, never sent).</summary>
    public long TxVetoed { get; private set; }

    public IReadOnlyList<IFrameInspector> ReceiveInspectors => _receive;
    public IReadOnlyList<IFrameInspector> TransmitInspectors => _transmit;

    /// <summary>Adds <paramref name="inspector"/> at the end of both chains.</summary>
    public void Add(IFrameInspector inspector)
    {
        Add(inspector, FrameDirection.Receive);
        Add(inspector, FrameDirection.Transmit);
    }

    /// <summary>Adds <paramref name="inspector"/> at the end of one direction's chain.</summary>
    public void Add(IFrameInspector inspector, FrameDirection direction)
    {
        ArgumentNullException.ThrowIfNull(inspector);
        if (direction == FrameDirection.Receive)
            _receive = [.. _receive, inspector];
        else
            _transmit = [.. _transmit, inspector];
    }

    /// <summary>Removes <paramref name="inspector"/> from both chains; false when it was on neither.</summary>
    public bool Remove(IFrameInspector inspector)
    {
        ArgumentNullException.ThrowIfNull(inspector);
        int before = _receive.Length + _transmit.Length;
        _receive = Array.FindAll(_receive, i => !ReferenceEquals(i, inspector));
        _transmit = Array.FindAll(_transmit, i => !ReferenceEquals(i, inspector));
        return _receive.Length + _transmit.Length != before;
    }

    public string Spec => _inner.Spec;
    public MacAddress MacAddress => _inner.MacAddress;
    public int Mtu => _inner.Mtu;
    public BufferPool Buffers => _inner.Buffers;
    public VnicCounters Counters => _inner.Counters;
    public int WaitHandle => _inner.WaitHandle;
    public bool PrepareToSleep() => _inner.PrepareToSleep();

    public int TxPending() => _inner.TxPending();
    public int JoinMulticast(uint group) => _inner.JoinMulticast(group);
    public int LeaveMulticast(uint group) => _inner.LeaveMulticast(group);

    public int Receive(Span<PacketDescriptor> batch)
    {
        int n = _inner.Receive(batch);
        var chain = _receive;
        if (chain.Length == 0 || n == 0)
            return n;
        long now = _clock.NowNanoseconds;
        var pool = _inner.Buffers;
        int kept = 0;
        for (int i = 0; i < n; i++)
        {
            var d = batch[i];
            if (Run(chain, FrameDirection.Receive, pool.Span(in d), now) == FrameVerdict.Drop)
            {
                pool.Release(d.Buffer);
                RxVetoed++;
                continue;
            }
            batch[kept++] = d;
        }
        return kept;
    }

    public int Transmit(ReadOnlySpan<PacketDescriptor> batch)
    {
        var chain = _transmit;
        if (chain.Length == 0 || batch.Length == 0)
            return _inner.Transmit(batch);
        if (_passed.Length < batch.Length)
        {
            _passed = new PacketDescriptor[batch.Length];
            _passedAt = new int[batch.Length];
        }
        long now = _clock.NowNanoseconds;
        var pool = _inner.Buffers;
        int passed = 0;
        for (int i = 0; i < batch.Length; i++)
        {
            if (Run(chain, FrameDirection.Transmit, pool.Span(in batch[i]), now) == FrameVerdict.Pass)
            {
                _passed[passed] = batch[i];
                _passedAt[passed++] = i;
            }
        }
        int sent = passed == 0 ? 0 : _inner.Transmit(_passed.AsSpan(0, passed));
        // The caller's batch is ours up to the first frame the backend refused; release the vetoed frames in it.
        int owned = sent == passed ? batch.Length : _passedAt[sent];
        for (int i = 0, p = 0; i < owned; i++)
        {
            if (p < passed && _passedAt[p] == i)
            {
                p++;
                continue;
            }
            pool.Release(batch[i].Buffer);
            TxVetoed++;
        }
        return owned;
    }

    private static FrameVerdict Run(IFrameInspector[] chain, FrameDirection direction, ReadOnlySpan<byte> frame, long now)
    {
        foreach (var inspector in chain)
            if (inspector.Inspect(direction, frame, now) == FrameVerdict.Drop)
                return FrameVerdict.Drop;
        return FrameVerdict.Pass;
    }

    /// <summary>Disposes the VNIC underneath. The inspectors belong to whoever added them.</summary>
    public void Dispose() => _inner.Dispose();
}
