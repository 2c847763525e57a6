using System.Text.Json.Serialization;

// What a stack tells onload-stackdump, and how. This one file is compiled into both ends: the stack library (which
// writes it) and apps/stackdump (which reads it), so the two cannot disagree; the tests link it too.
namespace Onload.StackDump;

/// <summary>
/// The rendezvous: a process whose stack started listens on the abstract Unix socket <c>@onload-stack/PID</c>
/// (SOCK_SEQPACKET, so it shows in <c>/proc/net/unix</c> of its network namespace only). A client connects and reads
/// one JSON <see cref="StackSnapshot"/> as messages of at most <see cref="ChunkBytes"/>, until the stack closes its end.
/// </summary>
public static class StackDumpProtocol
{
    public const string NamePrefix = "onload-stack/";

    /// <summary>The most bytes one message carries: well under the smallest socket buffer Linux allows
    /// (net.core.wmem_default is rarely below 200 KB), so one send never needs a larger one.</summary>
    public const int ChunkBytes = 16 * 1024;

    /// <summary>The abstract name (without the leading NUL) of process <paramref name="pid"/>'s stack.</summary>
    public static string Name(int pid) => NamePrefix + pid.ToString(System.Globalization.CultureInfo.InvariantCulture);
}

/// <summary>One process's stack: where it runs, its VNIC and link, its sockets and its counters.</summary>
/// <param name="Command">The program's command line, arguments separated by spaces.</param>
/// <param name="Address">The stack's IPv4 address and prefix, "10.0.0.1/24".</param>
/// <param name="Suspended">The daemon suspended the VNIC (a reset or a move): nothing moves until it resumes.</param>
/// <param name="Removed">The daemon's connection ended: the VNIC carries nothing more.</param>
/// <param name="Filters">Ports the daemon steers to this VNIC.</param>
/// <param name="Counters">The stack's counters by their names in <c>StackCounters</c> (the kernel's SNMP names where
/// they mean the same), drops as "Drop.REASON", and the socket layer's as "Layer.NAME" (BackgroundRuns: the background
/// thread found frames or due timers; BackgroundFrames: the frames it took; WaiterWakeups: sleeping threads woken
/// because their socket became ready).</param>
/// <param name="Runtime">What the stack's managed runtime allocated and collected.</param>
public sealed record StackSnapshot(
    int Pid,
    string Command,
    string Interface,
    VnicSnapshot Vnic,
    string Mac,
    string Address,
    int Mtu,
    bool LinkUp,
    bool Suspended,
    bool Removed,
    int Filters,
    List<TcpSocketSnapshot> Tcp,
    List<UdpSocketSnapshot> Udp,
    Dictionary<string, long> Counters,
    RuntimeSnapshot Runtime);

/// <summary>
/// The managed runtime the stack runs on: the NativeAOT runtime inside libonload_stack.so, which only the stack's
/// code runs on (a .NET program under onload-run has a runtime of its own, not counted here). The data path is to
/// allocate nothing, so between two snapshots of a program in steady state <see cref="AllocatedBytes"/> and the
/// collection counts stay the same.
/// </summary>
/// <param name="AllocatedBytes">Bytes allocated on the managed heap since the runtime started, by each of its threads
/// (the program's threads while inside the stack, the background thread, the driverlink client's threads) except the
/// onload-stackdump thread: everything that thread ever allocated (these documents, the accepted connections) is left
/// out, so that asking does not change the answer. Exact to the byte: read with
/// <c>GC.GetTotalAllocatedBytes(precise: true)</c>, which stops the runtime's threads for a moment as a collection
/// does, before the snapshot is made.</param>
/// <param name="Gen0Collections">Collections since the runtime started (<c>GC.CollectionCount(0)</c>: every
/// collection collects generation 0, so this counts the two below too).</param>
/// <param name="Gen1Collections">Collections of generations 1 and 0, full ones included.</param>
/// <param name="Gen2Collections">Full collections.</param>
/// <param name="HeapBytes">Bytes the managed heap holds now, garbage not yet collected included, the dumps' own too
/// (<c>GC.GetTotalMemory(false)</c>).</param>
/// <param name="PauseUs">How long collections have stopped the runtime's threads, in all (<c>GC.GetTotalPauseDuration</c>).</param>
public sealed record RuntimeSnapshot(
    long AllocatedBytes,
    int Gen0Collections,
    int Gen1Collections,
    int Gen2Collections,
    long HeapBytes,
    long PauseUs);

/// <summary>The VNIC: the driverlink spec, the backend under it, how it was attached and its frame counts.</summary>
/// <param name="Mode">"shared" (the daemon forwards into shared-memory rings) or "exclusive" (the queue's own AF_XDP
/// socket).</param>
public sealed record VnicSnapshot(
    string Spec,
    string Backend,
    string Mode,
    uint Id,
    long RxFrames,
    long TxFrames,
    long RxDropNoBuffer,
    long RxDropRingFull,
    long TxDropRingFull,
    long TxErrors);

/// <summary>
/// One TCP connection or listener. State names are Linux's (as netstat prints them: LISTEN, ESTABLISHED, ...).
/// Queues are as <c>ss</c> shows them: bytes unread and bytes unacknowledged, and for a listener the accept queue's
/// length and the backlog.
/// </summary>
/// <param name="Id">The stack's row (the handle the shim's fd names).</param>
/// <param name="Retransmits">Segments sent again over the connection's life (tcpi_total_retrans).</param>
/// <param name="Backoff">Retransmission timeouts in a row now (tcpi_backoff).</param>
/// <param name="Orphaned">The program closed it; the stack is still finishing it (Linux's orphans).</param>
public sealed record TcpSocketSnapshot(
    int Id,
    string State,
    string LocalAddress,
    int LocalPort,
    string RemoteAddress,
    int RemotePort,
    int ReceiveQueue,
    int SendQueue,
    uint Retransmits,
    int Backoff,
    long RttUs,
    long RttVarUs,
    long RtoUs,
    uint Cwnd,
    uint Ssthresh,
    int Mss,
    bool Orphaned);

/// <summary>One UDP socket: its addresses and what waits in its receive queue.</summary>
public sealed record UdpSocketSnapshot(
    int Id,
    string LocalAddress,
    int LocalPort,
    string RemoteAddress,
    int RemotePort,
    int QueuedDatagrams,
    int QueuedBytes,
    long InDatagrams,
    long Drops);

/// <summary>What the stack sends instead of a snapshot when it refuses (the client is neither root nor its user).</summary>
public sealed record StackDumpRefusal(string Error);

/// <summary>Source-generated (de)serialisation: NativeAOT has no reflection to do it at run time.</summary>
[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase, WriteIndented = true)]
[JsonSerializable(typeof(StackSnapshot))]
[JsonSerializable(typeof(List<StackSnapshot>))]
[JsonSerializable(typeof(StackDumpRefusal))]
public sealed partial class StackDumpJson : JsonSerializerContext;
