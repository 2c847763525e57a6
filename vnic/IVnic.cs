namespace Onload.Vnic;

/// <summary>
/// One virtual NIC as the stack sees it: an RX and a TX descriptor ring over a packet buffer area.
/// </summary>
/// <remarks>
/// Ownership is by buffer index. <see cref="Receive"/> hands the caller buffers it must later
/// <see cref="BufferPool.Release"/>; <see cref="Transmit"/> takes ownership of the buffers it accepts
/// (the backend releases them once sent) and leaves the rest with the caller. Nothing here allocates per frame.
/// </remarks>
public interface IVnic : IDisposable
{
    /// <summary>The spec string this VNIC was opened from, e.g. <c>af_packet:eth0</c>.</summary>
    string Spec { get; }

    /// <summary>The source address of frames the stack sends on this VNIC.</summary>
    MacAddress MacAddress { get; }

    /// <summary>The largest IP packet the link carries (Ethernet payload, without the 14-byte header).</summary>
    int Mtu { get; }

    BufferPool Buffers { get; }

    VnicCounters Counters { get; }

    /// <summary>Moves up to <c>batch.Length</c> received frames into <paramref name="batch"/>; returns how many.</summary>
    int Receive(Span<PacketDescriptor> batch);

    /// <summary>Sends a batch with at most one kick to the backend; returns how many it accepted.</summary>
    int Transmit(ReadOnlySpan<PacketDescriptor> batch);

    /// <summary>A file descriptor that polls readable when frames may be waiting, for sleeping; -1 where there is none.</summary>
    int WaitHandle { get; }

    /// <summary>
    /// Called just before the caller sleeps on <see cref="WaitHandle"/> (<see cref="VnicWait.Wait"/> does). A backend
    /// whose peer signals the handle only for a declared sleeper (shared memory) arms that signal here. Returns false
    /// when frames are already waiting: poll again instead of sleeping. Backends whose handle always signals need
    /// nothing.
    /// </summary>
    bool PrepareToSleep() => true;

    /// <summary>
    /// Frames given to <see cref="Transmit"/> that the backend has not yet put on the wire or handed on: a
    /// shared-memory peer has not taken them, AF_XDP has not completed them. A process about to exit waits for 0, or
    /// its last frames (a FIN, an RST) go with its rings. Backends that send within Transmit have none.
    /// </summary>
    int TxPending() => 0;

    /// <summary>
    /// Asks the backend to deliver frames sent to an IPv4 multicast group (<paramref name="group"/> in host byte
    /// order): its MAC on a NIC's filter, its address in a steering map. Backends that see every frame need do
    /// nothing. Returns 0 or a negated errno.
    /// </summary>
    int JoinMulticast(uint group) => 0;

    /// <summary>Undoes <see cref="JoinMulticast"/>. Returns 0 or a negated errno.</summary>
    int LeaveMulticast(uint group) => 0;
}

/// <summary>Frame counts a backend keeps, by direction and by reason of drop.</summary>
public sealed class VnicCounters
{
    public long RxFrames;
    public long RxBytes;
    public long TxFrames;
    public long TxBytes;
    /// <summary>Received frames lost because the buffer pool was empty.</summary>
    public long RxDropNoBuffer;
    /// <summary>Received frames longer than a buffer.</summary>
    public long RxDropTooLong;
    /// <summary>Frames the kernel reported lost on the backend's own ring (AF_PACKET tp_drops).</summary>
    public long RxDropRingFull;
    /// <summary>Frames refused for sending because the TX ring was full.</summary>
    public long TxDropRingFull;
    /// <summary>Frames the backend failed to send (a system call error).</summary>
    public long TxErrors;
}
