namespace Onload.Vnic.Sim;

/// <summary>
/// A deterministic in-memory Ethernet link between two <see cref="SimVnic"/>s. Every fault is drawn from one
/// seeded generator and every delay is in virtual time, so a run repeats exactly from its seed.
/// </summary>
/// <remarks>
/// This is the one simulated part of the project: it exists to explore loss, reordering and timing, which the
/// kernel peer cannot be made to do on demand. Frames in flight sit in slots preallocated at construction.
/// </remarks>
public sealed class SimLink : IDisposable
{
    private readonly SeededRandom _random;

    public SimLink(ulong seed, VirtualClock clock, LinkFaults? aToB = null, LinkFaults? bToA = null,
        int mtu = 1500, int buffers = 1024, int inFlight = 1024)
    {
        Clock = clock;
        Seed = seed;
        _random = new SeededRandom(seed);
        var fab = aToB ?? LinkFaults.None;
        var fba = bToA ?? LinkFaults.None;
        fab.Validate();
        fba.Validate();
        A = new SimVnic("sim:a", MacAddress.LocallyAdministered(0x0000_5100_0000_0A), mtu, buffers);
        B = new SimVnic("sim:b", MacAddress.LocallyAdministered(0x0000_5100_0000_0B), mtu, buffers);
        A.Attach(new SimWire(B, fab, _random, clock, inFlight, mtu + 14));
        B.Attach(new SimWire(A, fba, _random, clock, inFlight, mtu + 14));
        A.Pair(B);
        B.Pair(A);
    }

    public ulong Seed { get; }
    public VirtualClock Clock { get; }
    public SimVnic A { get; }
    public SimVnic B { get; }
    public LinkStats AToB => A.Wire.Stats;
    public LinkStats BToA => B.Wire.Stats;

    /// <summary>The virtual time at which the next frame in flight lands, or <see cref="long.MaxValue"/>.</summary>
    public long NextDelivery => Math.Min(A.Wire.NextDelivery, B.Wire.NextDelivery);

    public void Dispose()
    {
        A.Dispose();
        B.Dispose();
    }
}

/// <summary>One direction of a <see cref="SimLink"/>: frames sent by one end, waiting to land at the other.</summary>
internal sealed class SimWire
{
    private readonly SimVnic _to;
    private readonly LinkFaults _faults;
    private readonly SeededRandom _random;
    private readonly VirtualClock _clock;
    private readonly byte[][] _data;
    private readonly int[] _length;
    private readonly long[] _due;
    private readonly long[] _order;
    private readonly int[] _free;
    private readonly int[] _busy;
    private int _freeCount;
    private int _busyCount;
    private long _sequence;
    private int _heldBack = -1;

    public SimWire(SimVnic to, LinkFaults faults, SeededRandom random, VirtualClock clock, int slots, int frameMax)
    {
        _to = to;
        _faults = faults;
        _random = random;
        _clock = clock;
        _data = new byte[slots][];
        for (int i = 0; i < slots; i++)
            _data[i] = new byte[frameMax];
        _length = new int[slots];
        _due = new long[slots];
        _order = new long[slots];
        _free = new int[slots];
        _busy = new int[slots];
        for (int i = 0; i < slots; i++)
            _free[i] = i;
        _freeCount = slots;
    }

    public LinkStats Stats { get; } = new();

    public long NextDelivery
    {
        get
        {
            long next = long.MaxValue;
            for (int i = 0; i < _busyCount; i++)
                next = Math.Min(next, _due[_busy[i]]);
            return next;
        }
    }

    public void Send(ReadOnlySpan<byte> frame)
    {
        Stats.Sent++;
        if (_random.NextDouble() < _faults.Loss)
        {
            Stats.Lost++;
            return;
        }
        int copies = _random.NextDouble() < _faults.Duplicate ? 2 : 1;
        if (copies == 2)
            Stats.Duplicated++;
        for (int c = 0; c < copies; c++)
            Enqueue(frame);
    }

    private const int EthernetHeaderBits = 14 * 8;

    private void Enqueue(ReadOnlySpan<byte> frame)
    {
        if (_freeCount == 0 || frame.Length > _data[0].Length)
        {
            Stats.DroppedQueueFull++;
            return;
        }
        int corruptBit = -1;
        if (frame.Length > 0 && _random.NextDouble() < _faults.Corrupt)
        {
            corruptBit = _random.Next(frame.Length * 8);
            Stats.Corrupted++;
            // A real NIC's frame check sequence drops a damaged frame; the link lets damage inside an IPv4 packet
            // through, for the IP, TCP and UDP checksums to catch, and drops the rest (ARP has no checksum).
            if (corruptBit < EthernetHeaderBits || frame.Length < 14 || frame[12] != 0x08 || frame[13] != 0x00)
                return;
        }
        int slot = _free[--_freeCount];
        frame.CopyTo(_data[slot]);
        _length[slot] = frame.Length;
        if (corruptBit >= 0)
            _data[slot][corruptBit >> 3] ^= (byte)(1 << (corruptBit & 7));
        long span = _faults.MaxDelayNs - _faults.MinDelayNs;
        long delay = _faults.MinDelayNs + (span == 0 ? 0 : (long)(_random.NextUInt64() % (ulong)(span + 1)));
        _due[slot] = _clock.NowNanoseconds + delay;
        _order[slot] = _sequence++;
        _busy[_busyCount++] = slot;

        // Reordering: hold this frame until the next one is queued, then let it land just after that one.
        if (_heldBack >= 0)
        {
            _due[_heldBack] = _due[slot]; // lands with the frame sent after it, and (by order) just behind it
            _order[_heldBack] = _sequence++;
            _heldBack = -1;
        }
        else if (_random.NextDouble() < _faults.Reorder)
        {
            _heldBack = slot;
            _due[slot] = long.MaxValue;
            Stats.Reordered++;
        }
    }

    /// <summary>Lands every frame due by now at the far end, oldest due first.</summary>
    public void Deliver()
    {
        long now = _clock.NowNanoseconds;
        while (true)
        {
            int pick = -1;
            for (int i = 0; i < _busyCount; i++)
            {
                int s = _busy[i];
                if (_due[s] <= now && (pick < 0 || _due[s] < _due[_busy[pick]] ||
                    (_due[s] == _due[_busy[pick]] && _order[s] < _order[_busy[pick]])))
                    pick = i;
            }
            if (pick < 0)
                return;
            int slot = _busy[pick];
            _busy[pick] = _busy[--_busyCount];
            _free[_freeCount++] = slot;
            if (_to.Land(_data[slot].AsSpan(0, _length[slot])))
                Stats.Delivered++;
        }
    }
}
