using Onload.Vnic.Native;
using static Onload.Vnic.Native.Netlink;

namespace Onload.Vnic.Netlink;

/// <summary>
/// A NETLINK_ROUTE socket (rtnetlink(7)) of the calling thread's network namespace: dumps of the kernel's links,
/// IPv4 addresses, main-table IPv4 routes and IPv4 neighbours, and the receive side that
/// <see cref="RtnetlinkMonitor"/> reads notifications from. Messages are decoded straight from the receive buffer.
/// </summary>
/// <remarks>Not thread-safe: one owner at a time, as with any socket whose replies are matched by sequence.</remarks>
public sealed unsafe class RtnetlinkSocket : IDisposable
{
    /// <summary>Large enough for any datagram the kernel sends: a dump fills at most 32 KiB per datagram
    /// (netlink_dump), a notification far less.</summary>
    internal const int BufferBytes = 64 * 1024;
    private const int DumpAttempts = 4;
    private static readonly TimeSpan ReplyTimeout = TimeSpan.FromSeconds(5);

    private readonly byte[] _buffer = GC.AllocateUninitializedArray<byte>(BufferBytes, pinned: true);
    private int _fd;
    private uint _sequence;

    private RtnetlinkSocket(int fd)
    {
        _fd = fd;
        // Sequence numbers unique to this socket's life, so a late reply to an earlier socket's request never matches.
        _sequence = (uint)Environment.TickCount;
    }

    /// <summary>The socket's file descriptor, to wait on with poll(2) or epoll (POLLIN when a datagram is queued).</summary>
    public int Fd => _fd >= 0 ? _fd : throw new ObjectDisposedException(nameof(RtnetlinkSocket));

    public NetlinkCounters Counters { get; } = new();

    /// <summary>A socket for dumps only: it joins no multicast group.</summary>
    public static RtnetlinkSocket Open() => Open([], 0);

    /// <summary>
    /// Opens a socket joined to the RTNLGRP_* <paramref name="groups"/>; <paramref name="receiveBufferBytes"/>, when
    /// not 0, sets SO_RCVBUF (forced past rmem_max where the caller has CAP_NET_ADMIN): how many notifications may
    /// queue before the kernel drops them and reports ENOBUFS.
    /// </summary>
    internal static RtnetlinkSocket Open(ReadOnlySpan<int> groups, int receiveBufferBytes)
    {
        const string What = "rtnetlink";
        int fd = Libc.Socket(AF_NETLINK, LinuxConstants.SOCK_RAW | LinuxConstants.SOCK_CLOEXEC, NETLINK_ROUTE);
        if (fd < 0)
            throw OpenFailure.Call(What, "socket(AF_NETLINK, NETLINK_ROUTE)", Errno.Last);
        var socket = new RtnetlinkSocket(fd);
        try
        {
            // Port id 0 in bind: the kernel assigns one.
            var local = new SockAddrNl { Family = AF_NETLINK };
            if (Libc.Bind(fd, &local, (uint)sizeof(SockAddrNl)) != 0)
                throw OpenFailure.Call(What, "bind", Errno.Last);
            if (receiveBufferBytes > 0)
            {
                int size = receiveBufferBytes;
                if (Libc.SetSockOpt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof(int)) != 0
                    && Libc.SetSockOpt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof(int)) != 0)
                    throw OpenFailure.Call(What, "setsockopt(SO_RCVBUF)", Errno.Last);
            }
            foreach (int group in groups)
            {
                int g = group;
                if (Libc.SetSockOpt(fd, SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, &g, sizeof(int)) != 0)
                    throw OpenFailure.Call(What, $"setsockopt(NETLINK_ADD_MEMBERSHIP, {group})", Errno.Last);
            }
            return socket;
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    /// <summary>Every interface (RTM_GETLINK).</summary>
    public IReadOnlyList<Link> DumpLinks()
    {
        Span<byte> ifinfomsg = stackalloc byte[IfInfoMsgSize]; // family AF_UNSPEC: all links
        ifinfomsg.Clear();
        return Dump<Link>(RTM_GETLINK, ifinfomsg, static _ => true);
    }

    /// <summary>Every IPv4 address (RTM_GETADDR, AF_INET).</summary>
    public IReadOnlyList<Address> DumpAddresses()
    {
        Span<byte> ifaddrmsg = stackalloc byte[IfAddrMsgSize];
        ifaddrmsg.Clear();
        ifaddrmsg[0] = (byte)LinuxConstants.AF_INET;
        return Dump<Address>(RTM_GETADDR, ifaddrmsg, static _ => true);
    }

    /// <summary>The IPv4 routes of routing table <paramref name="table"/>, main by default (RTM_GETROUTE, AF_INET).
    /// The kernel dumps every table unless the socket asked for strict checking, so the table is chosen here.</summary>
    public IReadOnlyList<Route> DumpRoutes(uint table = Route.MainTable)
    {
        Span<byte> rtmsg = stackalloc byte[RtMsgSize];
        rtmsg.Clear();
        rtmsg[0] = (byte)LinuxConstants.AF_INET;
        rtmsg[4] = table <= 255 ? (byte)table : (byte)0;
        return Dump<Route>(RTM_GETROUTE, rtmsg, r => r.Table == table);
    }

    /// <summary>Every IPv4 neighbour entry (RTM_GETNEIGH, AF_INET).</summary>
    public IReadOnlyList<Neighbour> DumpNeighbours()
    {
        Span<byte> ndmsg = stackalloc byte[NdMsgSize];
        ndmsg.Clear();
        ndmsg[0] = (byte)LinuxConstants.AF_INET;
        return Dump<Neighbour>(RTM_GETNEIGH, ndmsg, static _ => true);
    }

    /// <summary>
    /// Has the kernel resolve <paramref name="ipv4"/> (host byte order) on interface <paramref name="ifIndex"/> as
    /// if a packet were going there: RTM_NEWNEIGH with NTF_USE creates the entry if need be and sends the ARP
    /// request (neigh_event_send). The answer shows as a neighbour notification. Returns 0 or the kernel's errno.
    /// Needs CAP_NET_ADMIN.
    /// </summary>
    public int ResolveNeighbour(int ifIndex, uint ipv4)
    {
        Span<byte> request = stackalloc byte[64];
        var w = new NetlinkWriter(request);
        uint seq = ++_sequence;
        w.BeginMessage(RTM_NEWNEIGH, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE, seq);
        var ndmsg = w.Reserve(NdMsgSize);
        ndmsg[0] = (byte)LinuxConstants.AF_INET;
        System.Buffers.Binary.BinaryPrimitives.WriteInt32LittleEndian(ndmsg[4..], ifIndex);
        ndmsg[10] = NTF_USE;
        w.AttributeIpv4(NDA_DST, ipv4);
        w.EndMessage();
        Send(request[..w.Length]);
        while (true)
        {
            int n = Receive(ReplyTimeout);
            if (n <= 0)
                continue;
            var reader = new NetlinkMessageReader(_buffer.AsSpan(0, Math.Min(n, BufferBytes)));
            while (reader.TryNext(out var m))
            {
                if (m.Sequence == seq && m.Type == NLMSG_ERROR && m.Error is int error)
                    return -error;
            }
        }
    }

    /// <summary>
    /// Sends a dump request and gathers the multi-part reply up to NLMSG_DONE. A reply the kernel marks
    /// NLM_F_DUMP_INTR (the table changed mid-walk), a lost or cut datagram, is redone from the start; NLMSG_ERROR
    /// becomes an <see cref="IOException"/> carrying errno.
    /// </summary>
    private List<T> Dump<T>(ushort type, ReadOnlySpan<byte> familyHeader, Func<T, bool> keep) where T : RtnetlinkObject
    {
        for (int attempt = 1; ; attempt++)
        {
            var result = new List<T>();
            uint seq = ++_sequence;
            SendRequest(type, NLM_F_REQUEST | NLM_F_DUMP, seq, familyHeader);
            bool consistent = true;
            bool done = false;
            while (!done)
            {
                int n = Receive(ReplyTimeout);
                if (n < 0)
                {
                    consistent = false; // overrun: something was lost; keep reading to this dump's end
                    continue;
                }
                if (n > BufferBytes)
                {
                    consistent = false;
                    n = BufferBytes;
                }
                var reader = new NetlinkMessageReader(_buffer.AsSpan(0, n));
                while (reader.TryNext(out var m))
                {
                    if (m.Sequence != seq)
                        continue; // an earlier request's leftovers
                    if (m.DumpInterrupted)
                        consistent = false;
                    switch (m.Type)
                    {
                        case NLMSG_DONE:
                            // Since 4.x a dump that fails part-way reports its error in NLMSG_DONE's payload.
                            if (m.Error is < 0 and int doneError)
                                throw DumpFailure(type, -doneError);
                            done = true;
                            break;
                        case NLMSG_ERROR:
                            if (m.Error is not int error)
                            {
                                Counters.Malformed();
                                break;
                            }
                            if (error < 0)
                                throw DumpFailure(type, -error);
                            break;
                        case NLMSG_NOOP:
                            break;
                        case NLMSG_OVERRUN:
                            consistent = false;
                            break;
                        default:
                            var r = Rtnetlink.TryDecode(m, out var o);
                            if (r == DecodeResult.Malformed)
                                Counters.Malformed();
                            else if (r == DecodeResult.Decoded && o is T t && keep(t))
                                result.Add(t);
                            break;
                    }
                    if (done)
                        break;
                }
                if (reader.Malformed)
                    Counters.Malformed();
            }
            if (consistent)
                return result;
            Counters.DumpRetried();
            if (attempt == DumpAttempts)
                throw new IOException($"rtnetlink: dump (type {type}) was interrupted {DumpAttempts} times in a row");
        }
    }

    private static IOException DumpFailure(ushort type, int errno) =>
        new($"rtnetlink: dump request (type {type}) failed: {Errno.Describe(errno)}", errno);

    private void SendRequest(ushort type, ushort flags, uint seq, ReadOnlySpan<byte> familyHeader)
    {
        Span<byte> request = stackalloc byte[64];
        var w = new NetlinkWriter(request);
        w.BeginMessage(type, flags, seq);
        w.Write(familyHeader);
        w.EndMessage();
        Send(request[..w.Length]);
    }

    private void Send(ReadOnlySpan<byte> message)
    {
        var kernel = new SockAddrNl { Family = AF_NETLINK };
        fixed (byte* p = message)
        {
            nint sent;
            do
                sent = Libc.SendTo(Fd, p, (nuint)message.Length, 0, &kernel, (uint)sizeof(SockAddrNl));
            while (sent < 0 && Errno.Last == Errno.EINTR);
            if (sent < 0)
                throw OpenFailure.Call("rtnetlink", "sendto", Errno.Last);
        }
    }

    /// <summary>
    /// Waits up to <paramref name="timeout"/> for a datagram from the kernel and reads it into the buffer (see
    /// <see cref="TryReceive"/> for the result); throws <see cref="TimeoutException"/> when none came.
    /// </summary>
    private int Receive(TimeSpan timeout)
    {
        long deadline = Environment.TickCount64 + (long)timeout.TotalMilliseconds;
        while (true)
        {
            int n = TryReceive();
            if (n != 0)
                return n;
            int left = (int)Math.Max(0, deadline - Environment.TickCount64);
            if (left == 0)
                throw new TimeoutException($"rtnetlink: no reply from the kernel within {timeout.TotalSeconds:0.#} s");
            var pfd = new PollFd { Fd = Fd, Events = LinuxConstants.POLLIN };
            if (Libc.Poll(&pfd, 1, left) < 0 && Errno.Last != Errno.EINTR)
                throw OpenFailure.Call("rtnetlink", "poll", Errno.Last);
        }
    }

    /// <summary>
    /// Reads one queued datagram without blocking. Returns its length (more than the buffer when the kernel cut
    /// it: counted in <see cref="NetlinkCounters.TruncatedDatagrams"/>), 0 when none is queued, or -1 when the
    /// receive queue overflowed and notifications were lost (ENOBUFS, counted in <see cref="NetlinkCounters.Overruns"/>).
    /// Datagrams from senders other than the kernel are dropped and counted.
    /// </summary>
    internal int TryReceive()
    {
        while (true)
        {
            var from = default(SockAddrNl);
            uint fromLen = (uint)sizeof(SockAddrNl);
            nint n;
            fixed (byte* p = _buffer)
                n = Libc.RecvFrom(Fd, p, BufferBytes, LinuxConstants.MSG_DONTWAIT | MSG_TRUNC, &from, &fromLen);
            if (n < 0)
            {
                int e = Errno.Last;
                switch (e)
                {
                    case Errno.EINTR:
                        continue;
                    case Errno.EAGAIN:
                        return 0;
                    case Errno.ENOBUFS:
                        Counters.Overrun();
                        return -1;
                    default:
                        throw OpenFailure.Call("rtnetlink", "recvfrom", e);
                }
            }
            if (from.Pid != 0)
            {
                Counters.Foreign();
                continue;
            }
            if (n == 0)
                continue; // an empty datagram carries nothing
            if (n > BufferBytes)
                Counters.Truncated();
            return (int)n;
        }
    }

    /// <summary>The bytes of the datagram <see cref="TryReceive"/> just read (at most the buffer's size).</summary>
    internal ReadOnlySpan<byte> Received(int length) => _buffer.AsSpan(0, Math.Min(length, BufferBytes));

    public void Dispose()
    {
        int fd = Interlocked.Exchange(ref _fd, -1);
        if (fd >= 0)
            Libc.Close(fd);
    }
}
