using System.Runtime.InteropServices;
using Onload.Vnic;
using Onload.Vnic.Native;

namespace Onload.Driverlink;

/// <summary>
/// The VNIC a driverlink client gets: the rings the daemon gave it (its own shared-memory rings in shared mode,
/// the queue's AF_XDP socket in exclusive mode) with the interface's MAC and MTU, as the kernel reports them.
/// </summary>
/// <remarks>
/// Frames go straight to the inner VNIC; this adds no work per frame. <see cref="WaitHandle"/> is an epoll
/// descriptor holding the inner VNIC's handle and the client's event descriptor, so a stack asleep on it wakes for
/// the daemon's events (a neighbour resolved, the link gone down) as for frames.
/// </remarks>
public sealed class DriverlinkVnic : IVnic
{
    private readonly IVnic _inner;
    private readonly int _epoll;

    internal DriverlinkVnic(string interfaceName, IVnic inner, MacAddress mac, int mtu, int eventFd)
    {
        _inner = inner;
        Spec = "driverlink:" + interfaceName;
        MacAddress = mac;
        Mtu = Math.Min(mtu, inner.Buffers.BufferSize - 14);
        _epoll = Libc.EpollCreate1(EpollConstants.EPOLL_CLOEXEC);
        if (_epoll < 0 || !Add(inner.WaitHandle) || !Add(eventFd))
        {
            int e = Marshal.GetLastPInvokeError();
            if (_epoll >= 0)
                _ = Libc.Close(_epoll);
            throw new IOException($"{Spec}: epoll: errno {e}", e);
        }
    }

    private bool Add(int fd) => fd < 0 || Libc.EpollAdd(_epoll, fd, EpollConstants.EPOLLIN) == 0;

    /// <summary>A new daemon's connection replaces the dead one's: its event descriptor wakes the stack instead.</summary>
    internal void ReplaceEventFd(int old, int replacement)
    {
        _ = Libc.EpollDel(_epoll, old);
        if (!Add(replacement))
            throw new IOException($"{Spec}: epoll_ctl: errno {Marshal.GetLastPInvokeError()}");
    }

    /// <summary>The backend underneath (ShmVnic or AfXdpVnic), for inspection.</summary>
    public IVnic Inner => _inner;

    public string Spec { get; }
    public MacAddress MacAddress { get; }

    /// <summary>The interface's MTU, lowered or raised by the daemon's MTU events (never past the buffers).</summary>
    public int Mtu { get; internal set; }

    public BufferPool Buffers => _inner.Buffers;
    public VnicCounters Counters => _inner.Counters;
    public int WaitHandle => _epoll;

    public int Receive(Span<PacketDescriptor> batch)
    {
        int n = _inner.Receive(batch);
        if (_side is { Pending: true } side && n < batch.Length)
            n += side.Drain(batch[n..], _inner.Buffers, Mtu);
        return n;
    }

    private KernelSideChannel? _side;

    /// <summary>Datagrams that reached a UDP port's kernel socket (fragments, local senders) and were handed on.</summary>
    public long KernelDelivered => _side?.Delivered ?? 0;

    /// <summary>Has the datagrams that reach <paramref name="fd"/>, a UDP port's backing socket, delivered to the stack too.</summary>
    internal void AddKernelSocket(int fd, uint address, ushort port)
    {
        if (_side is null)
        {
            var side = new KernelSideChannel(MacAddress);
            if (!Add(side.WaitHandle))
            {
                side.Dispose();
                throw new IOException($"{Spec}: epoll_ctl: errno {Marshal.GetLastPInvokeError()}");
            }
            _side = side;
        }
        _side.Add(fd, address, port);
    }

    internal void RemoveKernelSocket(int fd) => _side?.Remove(fd);

    public int Transmit(ReadOnlySpan<PacketDescriptor> batch) => _inner.Transmit(batch);

    public bool PrepareToSleep() => _inner.PrepareToSleep();

    public int TxPending() => _inner.TxPending();

    internal void SetMtu(int mtu) => Mtu = Math.Min(mtu, _inner.Buffers.BufferSize - 14);

    private bool _disposed;

    /// <summary>Closes the rings or socket and the epoll descriptor. Idempotent.</summary>
    public void Dispose()
    {
        if (_disposed)
            return;
        _disposed = true;
        _side?.Dispose();
        _inner.Dispose();
        _ = Libc.Close(_epoll);
    }
}
