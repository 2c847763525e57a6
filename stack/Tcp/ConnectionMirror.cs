using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Onload.Stack.Wire;
using Onload.Vnic;

namespace Onload.Stack.Tcp;

/// <summary>
/// A copy of what another process needs to close a stack's TCP connections for it, kept in memory the caller
/// supplies (in driverlink mode a memfd the daemon also maps): when the stack's process dies, kill -9 included,
/// the daemon reads it (<see cref="OrphanCloser.Plan"/>) and sends each connection's FIN or RST as the kernel
/// does for a dead process's sockets.
/// </summary>
/// <remarks>
/// <para>Layout (<see cref="ConnectionMirrorLayout"/>): a 64-byte header (magic, version, record count and size,
/// the stack's MAC, IPv4 address and timestamp clock offset), then one 128-byte record per row of the stack's
/// <see cref="TcpTable"/>. A record holds a control word and two copies of the connection's state.</para>
/// <para>Consistency without a lock. The stack's thread is the only writer. An update writes the copy the control
/// word does not point at, then publishes it by storing the control word (its generation, whose low bit names the
/// complete copy) with release semantics. Whenever the writer stops, kill -9 between any two stores included, the
/// control word names a copy that was written whole: a half-written copy is never the named one. So a reader
/// after the writer's death needs no lock to recover, and there is no lock whose holder can die holding it: this
/// is the "process-shared lock that survives its holder's death", in lock-free form. A reader while the writer
/// lives (a diagnostic tool) uses the control word as a seqlock: it reads it, copies the named copy, reads it
/// again, and retries if it moved, since the writer may have begun rewriting that copy after the next flip.</para>
/// <para>Each copy carries its generation and a check word over its fields. They are not needed against a writer
/// that dies between stores; they are there because a dying process may have scribbled anywhere in its memory:
/// a copy whose check fails is not used (the reader falls back to the other copy if it is whole and exactly one
/// generation older, and says so), and a record with neither is skipped.</para>
/// <para>Cost: an update is about twenty stores into one record, no allocation, no syscall, no atomic
/// read-modify-write (single writer); the neighbour's MAC is looked up only when the neighbour table changed.</para>
/// </remarks>
public sealed unsafe class ConnectionMirror
{
    private readonly byte* _region;
    private readonly int _records;
    // Per row, the peer's MAC as last looked up, for which remote address and neighbour-table generation.
    private readonly ulong[] _macCache;
    private readonly uint[] _macCacheAddress;
    private readonly uint[] _macCacheGeneration;

    /// <summary>A mirror of <paramref name="connections"/> rows (<see cref="StackOptions.TcpConnections"/>) in
    /// <paramref name="length"/> bytes at <paramref name="region"/>, which must stay mapped while the stack lives
    /// and hold at least <see cref="RegionSize"/>(<paramref name="connections"/>) bytes, 8-byte aligned. The header
    /// is written when a stack takes the mirror.</summary>
    public ConnectionMirror(byte* region, nuint length, int connections)
    {
        if (region == null)
            throw new ArgumentNullException(nameof(region));
        ArgumentOutOfRangeException.ThrowIfLessThan(connections, 1);
        if (length < RegionSize(connections))
            throw new ArgumentException($"{length} bytes cannot mirror {connections} connections: {RegionSize(connections)} needed");
        if (((nuint)region & 7) != 0)
            throw new ArgumentException("the region must be 8-byte aligned");
        _region = region;
        _records = connections;
        _macCache = new ulong[connections];
        _macCacheAddress = new uint[connections];
        _macCacheGeneration = new uint[connections];
    }

    /// <summary>Bytes a mirror of <paramref name="connections"/> rows needs.</summary>
    public static nuint RegionSize(int connections) =>
        ConnectionMirrorLayout.HeaderSize + (nuint)Math.Max(0, connections) * ConnectionMirrorLayout.RecordSize;

    public int Records => _records;

    public byte* Region => _region;

    /// <summary>Zeroes the records and writes the header, magic last: called once by the stack that owns it.</summary>
    internal void Attach(MacAddress mac, Ipv4Address address, uint tsOffset)
    {
        var h = (ConnectionMirrorLayout.Header*)_region;
        Volatile.Write(ref h->Magic, 0);
        new Span<byte>(_region + ConnectionMirrorLayout.HeaderSize, checked((int)((nuint)_records * ConnectionMirrorLayout.RecordSize))).Clear();
        h->Version = ConnectionMirrorLayout.Version;
        h->HeaderSize = (ushort)ConnectionMirrorLayout.HeaderSize;
        h->RecordCount = (uint)_records;
        h->RecordSize = (uint)ConnectionMirrorLayout.RecordSize;
        h->LocalMac = mac.Value;
        h->LocalAddress = address.Value;
        h->TsOffset = tsOffset;
        h->WriterPid = (uint)Environment.ProcessId;
        Array.Clear(_macCacheGeneration);
        Volatile.Write(ref h->Magic, ConnectionMirrorLayout.Magic);
    }

    /// <summary>The cached MAC of the peer at <paramref name="remote"/> if the neighbour table has not changed
    /// since it was looked up.</summary>
    internal bool TryCachedMac(int row, Ipv4Address remote, uint neighbourGeneration, out MacAddress mac)
    {
        mac = new MacAddress(_macCache[row]);
        return _macCacheGeneration[row] == neighbourGeneration && _macCacheAddress[row] == remote.Value;
    }

    internal void CacheMac(int row, Ipv4Address remote, uint neighbourGeneration, MacAddress mac)
    {
        _macCache[row] = mac.Value;
        _macCacheAddress[row] = remote.Value;
        _macCacheGeneration[row] = neighbourGeneration;
    }

    /// <summary>Publishes row <paramref name="row"/>'s state: writes the spare copy, then flips to it.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void Write(int row, in ConnectionMirrorLayout.Copy state)
    {
        var r = ConnectionMirrorLayout.RecordAt(_region, row);
        uint generation = ConnectionMirrorLayout.Next(r->Control); // only this thread writes it
        var copy = ConnectionMirrorLayout.CopyOf(r, generation);
        *copy = state;
        copy->Generation = generation;
        copy->Check = ConnectionMirrorLayout.CheckOf(copy);
        Volatile.Write(ref r->Control, generation); // release: the copy's stores are visible before the flip
    }

    /// <summary>The row was freed: its record says CLOSED.</summary>
    internal void Clear(int row)
    {
        ConnectionMirrorLayout.Copy closed = default;
        Write(row, closed);
        _macCacheGeneration[row] = 0;
    }
}

/// <summary>What each record says besides its state and numbers.</summary>
[Flags]
public enum MirrorFlags : byte
{
    None = 0,
    /// <summary>The application's receive queue held data it had not read (Linux tcp_close's data_was_unread).</summary>
    Unread = 1,
    /// <summary>The send buffer held data never sent (beyond SND.NXT).</summary>
    Unsent = 2,
    /// <summary>Data or a FIN sent and not yet acknowledged (SND.UNA ≠ SND.NXT).</summary>
    Unacked = 4,
    /// <summary>Timestamps were negotiated: every non-RST segment must carry TSopt (RFC 7323 §3.2).</summary>
    Timestamps = 8,
    /// <summary>A child of a listener that the application has not accepted.</summary>
    NotAccepted = 16,
    /// <summary>Our FIN has gone out (SND.NXT counts it).</summary>
    FinSent = 32,
    /// <summary>The connection failed (reset, timed out): the application only has an error left to read.</summary>
    Dead = 64,
}

/// <summary>The bytes of a <see cref="ConnectionMirror"/> region: shared by the stack, which writes them, and
/// <see cref="OrphanCloser"/>, which reads them in another process. Native byte order (both run on one host);
/// addresses in host order as <see cref="Ipv4Address.Value"/>.</summary>
public static unsafe class ConnectionMirrorLayout
{
    public const uint Magic = 0x4D43_4C4F; // "OLCM" in memory on little-endian hosts
    public const ushort Version = 1;
    public const nuint HeaderSize = 64;
    public const nuint RecordSize = 128;
    private const int CopyOffset0 = 8;
    private const int CopyOffset1 = 64;

    [StructLayout(LayoutKind.Explicit, Size = 64)]
    public struct Header
    {
        [FieldOffset(0)] public uint Magic;
        [FieldOffset(4)] public ushort Version;
        [FieldOffset(6)] public ushort HeaderSize;
        [FieldOffset(8)] public uint RecordCount;
        [FieldOffset(12)] public uint RecordSize;
        /// <summary>The stack's interface MAC, low 48 bits.</summary>
        [FieldOffset(16)] public ulong LocalMac;
        [FieldOffset(24)] public uint LocalAddress;
        /// <summary>The random offset of the stack's TSval clock (RFC 7323 §5.4), for information: records carry
        /// the clock's value itself.</summary>
        [FieldOffset(28)] public uint TsOffset;
        [FieldOffset(32)] public uint WriterPid;
    }

    [StructLayout(LayoutKind.Explicit, Size = 128)]
    public struct Record
    {
        /// <summary>The generation of the last complete copy; its low bit names the copy. 0: never written.</summary>
        [FieldOffset(0)] public uint Control;
    }

    /// <summary>One copy of a connection's state.</summary>
    [StructLayout(LayoutKind.Explicit, Size = 56)]
    public struct Copy
    {
        [FieldOffset(0)] public uint Generation;
        [FieldOffset(4)] public TcpState State;
        [FieldOffset(5)] public MirrorFlags Flags;
        [FieldOffset(6)] public ushort LocalPort;
        [FieldOffset(8)] public uint RemoteAddress;
        [FieldOffset(12)] public ushort RemotePort;
        /// <summary>The window field of our last segment (scaled by <see cref="RcvWndShift"/>).</summary>
        [FieldOffset(14)] public ushort Window;
        /// <summary>The next hop's MAC as the stack sends to it, low 48 bits; 0 if unresolved.</summary>
        [FieldOffset(16)] public ulong RemoteMac;
        [FieldOffset(24)] public uint SndNxt;
        [FieldOffset(28)] public uint RcvNxt;
        [FieldOffset(32)] public uint SndUna;
        /// <summary>TS.Recent: what our next segment echoes as TSecr.</summary>
        [FieldOffset(36)] public uint TsRecent;
        /// <summary>Our TSval clock when the record was written: no smaller than any TSval sent before.</summary>
        [FieldOffset(40)] public uint TsVal;
        /// <summary>Where frames to the peer go: the peer itself on the subnet, else the gateway.</summary>
        [FieldOffset(44)] public uint NextHop;
        [FieldOffset(48)] public byte RcvWndShift;
        [FieldOffset(52)] public uint Check;
    }

    /// <summary>The generation after <paramref name="g"/>: parity alternates (it names the copy) and 0 ("never
    /// written") and 0xFFFFFFFF are skipped, so 0xFFFFFFFE is followed by 1.</summary>
    public static uint Next(uint g) => g >= 0xFFFF_FFFE ? 1 : g + 1;

    public static uint Previous(uint g) => g == 1 ? 0xFFFF_FFFE : g - 1;

    public static Record* RecordAt(byte* region, int row) => (Record*)(region + HeaderSize + (nuint)row * RecordSize);

    public static Copy* CopyOf(Record* r, uint generation) => (Copy*)((byte*)r + ((generation & 1) == 0 ? CopyOffset0 : CopyOffset1));

    /// <summary>A check word over the copy's first 52 bytes (FNV-1a over 32-bit words): a scribbled copy fails it
    /// with odds of 2^-32.</summary>
    public static uint CheckOf(Copy* c)
    {
        var w = (uint*)c;
        uint h = 0x811C_9DC5;
        for (int i = 0; i < 13; i++)
            h = (h ^ w[i]) * 0x0100_0193;
        return h;
    }
}
