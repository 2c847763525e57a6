using Onload.Stack.Memory;
using Onload.Stack.Wire;

namespace Onload.Stack.Udp;

/// <summary>One UDP socket's state (the stack's <c>struct udp_sock</c>).</summary>
public struct UdpSocket
{
    public bool InUse;
    public bool Bound;
    /// <summary>The port was reserved through <see cref="IStackControl.ReservePort"/> (driverlink mode): close
    /// gives it back.</summary>
    public bool PortReserved;
    /// <summary>SO_REUSEADDR: may bind a port whose other holders set it too.</summary>
    public bool ReuseAddr;
    /// <summary>SO_REUSEPORT: may bind a port whose other holders set it too; unicast datagrams are then shared
    /// among the group by a hash of their four-tuple.</summary>
    public bool ReusePort;
    public bool Connected;
    /// <summary>SO_BROADCAST: may send to broadcast addresses.</summary>
    public bool Broadcast;
    public Ipv4Address LocalAddress;
    public ushort LocalPort;
    public Ipv4Address RemoteAddress;
    public ushort RemotePort;
    /// <summary>A pending asynchronous error (sk_err), reported once by the next call, as an errno.</summary>
    public int Error;
    /// <summary>IP_MULTICAST_TTL (Linux default 1).</summary>
    public byte MulticastTtl;
    /// <summary>IP_MULTICAST_LOOP (Linux default on): our own multicast sends reach our own joined sockets.</summary>
    public bool MulticastLoop;
    /// <summary>Groups this socket joined (IP_ADD_MEMBERSHIP), bounded like Linux's IP_MAX_MEMBERSHIPS.</summary>
    public int Memberships;
    /// <summary>SO_RCVBUF in bytes, charged per buffer queued.</summary>
    public int ReceiveBufferBytes;
    public int QueuedBytes;
    public int QueueHead;
    public int QueueCount;
    public long InDatagrams;
    public long Drops;
}

/// <summary>A received datagram waiting in a socket's queue: the frame's buffer stays the stack's until read.</summary>
public struct UdpQueuedDatagram
{
    /// <summary>The frame's buffer, or -1 for a reassembled datagram.</summary>
    public int Buffer;
    /// <summary>For a reassembled datagram, its reassembly queue (which holds the fragments); else -1.</summary>
    public int Reassembly;
    /// <summary>Bytes charged to SO_RCVBUF for it.</summary>
    public int Charge;
    public ushort PayloadOffset;
    public ushort PayloadLength;
    public Ipv4Address SourceAddress;
    public ushort SourcePort;
}

/// <summary>
/// The UDP socket table: sockets by handle, per port the list of sockets bound to it (one, or several with
/// SO_REUSEADDR or SO_REUSEPORT), and one ring of queued datagrams per socket, all preallocated.
/// </summary>
public sealed class UdpSocketTable : IDisposable, IPortTable
{
    private readonly StructTable<UdpSocket> _sockets;
    private readonly StructTable<UdpQueuedDatagram> _queues;
    private readonly PortLists _ports;
    private readonly int _queueCapacity;
    private readonly FreeList _free;

    public UdpSocketTable(int sockets, int queueCapacity)
    {
        _ports = new PortLists(sockets); // first: it bounds the table's size
        _sockets = new StructTable<UdpSocket>(sockets);
        _free = new FreeList(sockets);
        _queueCapacity = queueCapacity;
        _queues = new StructTable<UdpQueuedDatagram>(sockets * queueCapacity);
    }

    public int Capacity => _sockets.Length;
    public int QueueCapacity => _queueCapacity;
    public int Open { get; private set; }

    public ref UdpSocket this[int handle] => ref _sockets[handle];

    public bool IsValid(int handle) => (uint)handle < (uint)_sockets.Length && _sockets[handle].InUse;

    /// <summary>A new socket's handle, or -1 when the table is full. O(1): handles come off a free list, oldest
    /// freed first.</summary>
    public int Allocate(int receiveBufferBytes)
    {
        int h = _free.Take();
        if (h < 0)
            return -1;
        ref var s = ref _sockets[h];
        s = default;
        s.InUse = true;
        s.ReceiveBufferBytes = receiveBufferBytes;
        Open++;
        return h;
    }

    public void Free(int handle)
    {
        ref var s = ref _sockets[handle];
        if (!s.InUse)
            return; // a second free must not put the handle on the free list twice
        UnbindPort(handle);
        s = default;
        _free.Return(handle);
        Open--;
    }

    /// <summary>The socket bound to <paramref name="port"/> most recently, or -1; the others follow through
    /// <see cref="NextOnPort"/>.</summary>
    public int FirstOnPort(ushort port) => _ports.First(port);

    public int NextOnPort(int handle) => _ports.Next(handle);

    public bool PortInUse(ushort port) => _ports.InUse(port);

    public PortBinder Binder(int handle)
    {
        ref var s = ref _sockets[handle];
        return new(s.LocalAddress, s.ReuseAddr, s.ReusePort, Listening: false);
    }

    public void BindPort(int handle, ushort port)
    {
        ref var s = ref _sockets[handle];
        _ports.Add(handle, port);
        s.Bound = true;
        s.LocalPort = port;
    }

    /// <summary>Takes socket <paramref name="handle"/> off its port's list; nothing for a socket not bound.</summary>
    public void UnbindPort(int handle)
    {
        ref var s = ref _sockets[handle];
        if (!s.Bound)
            return;
        _ports.Remove(handle, s.LocalPort);
        s.Bound = false;
    }

    public bool TryEnqueue(int handle, in UdpQueuedDatagram d)
    {
        ref var s = ref _sockets[handle];
        // Like the kernel, admit a datagram while the queue is under the limit, so one always fits in an empty queue.
        if (s.QueueCount == _queueCapacity || s.QueuedBytes >= s.ReceiveBufferBytes)
            return false;
        int slot = handle * _queueCapacity + (s.QueueHead + s.QueueCount) % _queueCapacity;
        _queues[slot] = d;
        s.QueueCount++;
        s.QueuedBytes += d.Charge;
        return true;
    }

    public ref UdpQueuedDatagram Peek(int handle)
    {
        ref var s = ref _sockets[handle];
        return ref _queues[handle * _queueCapacity + s.QueueHead];
    }

    public void Pop(int handle)
    {
        ref var s = ref _sockets[handle];
        s.QueuedBytes -= _queues[handle * _queueCapacity + s.QueueHead].Charge;
        s.QueueHead = (s.QueueHead + 1) % _queueCapacity;
        s.QueueCount--;
    }

    public void Dispose()
    {
        _sockets.Dispose();
        _queues.Dispose();
    }
}
