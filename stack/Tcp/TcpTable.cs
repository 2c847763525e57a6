using System.Numerics;
using Onload.Stack.Memory;
using Onload.Stack.Wire;
using Onload.Vnic;

namespace Onload.Stack.Tcp;

/// <summary>
/// The TCP connection table: connections by index, a hash of (local port, remote address, remote port) for
/// established demultiplexing, per port the list of rows bound to it (several with SO_REUSEADDR or SO_REUSEPORT, as
/// Linux's bind bucket), and per row one send ring, one receive ring and one ring of sent-segment records (the
/// retransmission queue's scoreboard) in a single unmanaged arena (pages are touched only when used). Nothing is
/// allocated after construction.
/// </summary>
/// <remarks>
/// The arena is address space reserved without commitment (<see cref="ReservedMemory"/>): every row has room for
/// rings of the largest buffers, but only what a connection uses becomes memory. When a row is freed, the pages its
/// rings grew into beyond the first extents (<c>retainedSend</c>, <c>retainedReceive</c>) are given back, so a burst
/// of bulk connections leaves behind at most those first extents per row, kept for the next connection to reuse
/// without page faults.
/// </remarks>
public sealed unsafe class TcpTable : IDisposable, IPortTable
{
    private readonly StructTable<TcpConnection> _rows;
    private readonly int[] _buckets;
    private readonly int _bucketMask;
    private readonly PortLists _ports;
    private readonly int _rowBytes;
    private readonly FreeList _free;
    private byte* _arena;

    private readonly int _retainedSend;
    private readonly int _retainedReceive;

    public TcpTable(int connections, int sendBuffer, int receiveBuffer, int retainedSend = 0, int retainedReceive = 0)
    {
        _ports = new PortLists(connections); // first: it bounds the table's size
        if (!BitOperations.IsPow2(sendBuffer) || !BitOperations.IsPow2(receiveBuffer))
            throw new ArgumentException("TCP buffer sizes must be powers of two");
        _rows = new StructTable<TcpConnection>(connections);
        _free = new FreeList(connections);
        SendBufferSize = sendBuffer;
        ReceiveBufferSize = receiveBuffer;
        // One record per segment in flight: a full send buffer of 512-byte segments, at least 64.
        SentCapacity = Math.Max(64, sendBuffer / 512);
        // Whole pages per row, so that what one row gives back is its own.
        _rowBytes = (sendBuffer + receiveBuffer + SentCapacity * sizeof(TcpSentSegment) + 4095) & ~4095;
        _retainedSend = retainedSend;
        _retainedReceive = retainedReceive;
        _arena = ReservedMemory.Reserve((nuint)connections * (nuint)_rowBytes);
        ArenaBytes = (long)connections * _rowBytes;
        int buckets = (int)BitOperations.RoundUpToPowerOf2((uint)connections * 2);
        _buckets = new int[buckets];
        _bucketMask = buckets - 1;
        Array.Fill(_buckets, -1);
    }

    public int Capacity => _rows.Length;
    /// <summary>The most a connection's send or receive buffer can grow to: the ring's full size.</summary>
    public int SendBufferSize { get; }
    public int ReceiveBufferSize { get; }
    /// <summary>Segments one connection may have in flight (a power of two).</summary>
    public int SentCapacity { get; }
    public int Open { get; private set; }

    /// <summary>Address space the rows' rings are reserved in (not memory: see the remarks).</summary>
    public long ArenaBytes { get; }

    /// <summary>Bytes of the rings' arena that are memory now (for inspection: it walks the whole reservation).</summary>
    public long ArenaResidentBytes() => ReservedMemory.Resident(_arena, (nuint)ArenaBytes);

    /// <summary>The most ring memory a row keeps once its connection is gone: its rings' first extents and its
    /// sent-segment records (given back only when its send ring had grown).</summary>
    public long MostKeptPerRow => _retainedSend + _retainedReceive + (long)SentCapacity * sizeof(TcpSentSegment);

    /// <summary>Bytes of the rows themselves (fixed at construction).</summary>
    public long RowBytes => (long)_rows.Length * sizeof(TcpConnection);

    public ref TcpConnection this[int c] => ref _rows[c];

    public bool IsValid(int c) => (uint)c < (uint)_rows.Length && _rows[c].InUse;

    /// <summary>A new row, or -1 when the table is full. O(1): rows come off a free list, oldest freed first.</summary>
    public int Allocate()
    {
        int c = _free.Take();
        if (c < 0)
            return -1;
        ref var t = ref _rows[c];
        t = default;
        t.InUse = true;
        t.Listener = -1;
        t.AcceptNext = -1;
        t.AcceptHead = t.AcceptTail = -1;
        t.SynHead = t.SynNext = t.SynPrev = -1;
        t.HashNext = -1;
        t.TimeWaitNext = t.TimeWaitPrev = -1;
        t.SndBufSize = t.SndRingSize = SendBufferSize;
        t.RcvBufSize = t.RcvRingSize = ReceiveBufferSize;
        Open++;
        return c;
    }

    public void Free(int c)
    {
        ref var t = ref _rows[c];
        if (!t.InUse)
            return; // a second free must not put the row on the free list twice
        Unhash(c);
        UnbindPort(c);
        byte* row = _arena + (long)c * _rowBytes;
        if (t.SndRingSize > _retainedSend)
            ReservedMemory.Discard(row + _retainedSend, (nuint)(t.SndRingSize - _retainedSend));
        if (t.RcvRingSize > _retainedReceive)
            ReservedMemory.Discard(row + SendBufferSize + _retainedReceive, (nuint)(t.RcvRingSize - _retainedReceive));
        // A sender whose ring grew walked its sent-segment records too: all but their first page go back with it.
        if (t.SndRingSize > _retainedSend)
            ReservedMemory.Discard(row + SendBufferSize + ReceiveBufferSize + 4096, (nuint)(SentCapacity * sizeof(TcpSentSegment) - 4096));
        t = default;
        _free.Return(c);
        Open--;
    }

    /// <summary>The send ring as far as the connection uses it (<see cref="TcpConnection.SndRingSize"/>): pages
    /// beyond are never touched until the buffer grows into them.</summary>
    public Span<byte> SendRing(int c) => new(_arena + (long)c * _rowBytes, _rows[c].SndRingSize);

    public Span<byte> ReceiveRing(int c) => new(_arena + (long)c * _rowBytes + SendBufferSize, _rows[c].RcvRingSize);

    /// <summary>The ring of records of the segments sent and not yet cumulatively acknowledged, in sequence order
    /// from <see cref="TcpConnection.SentHead"/>.</summary>
    public Span<TcpSentSegment> SentSegments(int c) =>
        new(_arena + (long)c * _rowBytes + SendBufferSize + ReceiveBufferSize, SentCapacity);

    /// <summary>The row bound to <paramref name="port"/> most recently, or -1; the others follow through
    /// <see cref="NextOnPort"/>. Connections accepted from a listener share its port without being here.</summary>
    public int FirstOnPort(ushort port) => _ports.First(port);

    public int NextOnPort(int c) => _ports.Next(c);

    public bool PortInUse(ushort port) => _ports.InUse(port);

    /// <summary>Row <paramref name="c"/> as the bind rule sees it. Its address is left as the wildcard: a TCP row
    /// binds the stack's one address or the wildcard, which overlap, so the address never lets two rows share.</summary>
    public PortBinder Binder(int c)
    {
        ref var t = ref _rows[c];
        return new(Ipv4Address.Any, t.ReuseAddr, t.ReusePort, Listening: t.State == TcpState.Listen);
    }

    public void BindPort(int c, ushort port)
    {
        ref var t = ref _rows[c];
        _ports.Add(c, port);
        t.Bound = true;
        t.LocalPort = port;
    }

    /// <summary>Takes row <paramref name="c"/> off its port's list (it keeps <see cref="TcpConnection.LocalPort"/>);
    /// nothing for a row not bound.</summary>
    public void UnbindPort(int c)
    {
        ref var t = ref _rows[c];
        if (!t.Bound)
            return;
        _ports.Remove(c, t.LocalPort);
        t.Bound = false;
    }

    private int Bucket(ushort localPort, Ipv4Address remote, ushort remotePort) =>
        (int)(((uint)localPort * 0x9E37_79B1u ^ remote.Value * 0x85EB_CA6Bu ^ (uint)remotePort * 0xC2B2_AE35u) >> 8) & _bucketMask;

    public void Hash(int c)
    {
        ref var t = ref _rows[c];
        int b = Bucket(t.LocalPort, t.RemoteAddress, t.RemotePort);
        t.HashNext = _buckets[b];
        _buckets[b] = c;
        t.Hashed = true;
    }

    public void Unhash(int c)
    {
        ref var t = ref _rows[c];
        if (!t.Hashed)
            return;
        int b = Bucket(t.LocalPort, t.RemoteAddress, t.RemotePort);
        if (_buckets[b] == c)
            _buckets[b] = t.HashNext;
        else
        {
            int p = _buckets[b];
            while (_rows[p].HashNext != c)
                p = _rows[p].HashNext;
            _rows[p].HashNext = t.HashNext;
        }
        t.Hashed = false;
        t.HashNext = -1;
    }

    /// <summary>The connection for a segment's four-tuple, or -1.</summary>
    public int Find(ushort localPort, Ipv4Address remote, ushort remotePort)
    {
        for (int c = _buckets[Bucket(localPort, remote, remotePort)]; c >= 0; c = _rows[c].HashNext)
        {
            ref var t = ref _rows[c];
            if (t.LocalPort == localPort && t.RemotePort == remotePort && t.RemoteAddress == remote)
                return c;
        }
        return -1;
    }

    public void Dispose()
    {
        _rows.Dispose();
        if (_arena != null)
            ReservedMemory.Release(_arena, (nuint)ArenaBytes);
        _arena = null;
    }
}
