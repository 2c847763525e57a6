using System.Buffers.Binary;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using Onload.Driverlink;
using Onload.Vnic.Native;

namespace Onload.Tests.Driverlink;

/// <summary>A kernel TCP connection taken out of its socket as CRIU dumps one: its state and its queued bytes.</summary>
internal sealed partial record KernelTcpCheckpoint(TcpRepairState State, byte[] Sent, byte[] Unsent, byte[] Received)
{
    private const int SOL_TCP = 6;
    private const int TCP_MAXSEG = 2;
    private const int TCP_INFO = 11;
    private const int TCP_REPAIR = 19;
    private const int TCP_REPAIR_QUEUE = 20;
    private const int TCP_QUEUE_SEQ = 21;
    private const int TCP_TIMESTAMP = 24;
    private const int TCP_REPAIR_WINDOW = 29;
    private const int TCP_RECV_QUEUE = 1;
    private const int TCP_SEND_QUEUE = 2;
    private const nuint SIOCINQ = 0x541B;
    private const nuint SIOCOUTQ = 0x5411;
    private const nuint SIOCOUTQNSD = 0x894B;
    private const int MSG_PEEK = 2;
    private const int MSG_DONTWAIT = 0x40;
    private const byte TCP_CLOSE_WAIT = 8;
    // struct tcp_info: tcpi_state at byte 0, tcpi_options at byte 5, tcpi_snd_wscale:4 and tcpi_rcv_wscale:4 at byte 6.
    private const int TCPI_OPT_TIMESTAMPS = 1, TCPI_OPT_SACK = 2, TCPI_OPT_WSCALE = 4;

    /// <summary>
    /// Puts <paramref name="socket"/> (connected, in the caller's hands alone) in repair mode, reads its connection
    /// out, and closes it: in repair mode the close sends nothing, so the peer sees no FIN and no RST.
    /// </summary>
    public static unsafe KernelTcpCheckpoint TakeAndCloseSilently(Socket socket)
    {
        var local = (System.Net.IPEndPoint)socket.LocalEndPoint!;
        var remote = (System.Net.IPEndPoint)socket.RemoteEndPoint!;
        int fd = (int)socket.Handle;
        Set(fd, TCP_REPAIR, 1);
        byte* info = stackalloc byte[256];
        uint length = 256;
        Check(Libc.GetSockOpt(fd, SOL_TCP, TCP_INFO, info, &length), "TCP_INFO");
        int inq = Ioctl(fd, SIOCINQ), outq = Ioctl(fd, SIOCOUTQ), notSent = Ioctl(fd, SIOCOUTQNSD);
        Set(fd, TCP_REPAIR_QUEUE, TCP_SEND_QUEUE);
        uint writeSeq = (uint)Get(fd, TCP_QUEUE_SEQ);
        byte[] sendQueue = Peek(fd, outq);
        Set(fd, TCP_REPAIR_QUEUE, TCP_RECV_QUEUE);
        uint rcvNxt = (uint)Get(fd, TCP_QUEUE_SEQ);
        byte[] received = Peek(fd, inq);
        uint* window = stackalloc uint[5]; // snd_wl1, snd_wnd, max_window, rcv_wnd, rcv_wup
        length = 5 * sizeof(uint);
        Check(Libc.GetSockOpt(fd, SOL_TCP, TCP_REPAIR_WINDOW, window, &length), "TCP_REPAIR_WINDOW");
        int options = info[5];
        // The peer's FIN is in rcv_nxt; the state counts it apart.
        bool peerClosed = info[0] == TCP_CLOSE_WAIT;
        bool scaling = (options & TCPI_OPT_WSCALE) != 0, timestamps = (options & TCPI_OPT_TIMESTAMPS) != 0;
        var state = new TcpRepairState(
            Ipv4(local), (ushort)local.Port, Ipv4(remote), (ushort)remote.Port,
            SndUna: writeSeq - (uint)outq,
            RcvNxt: peerClosed ? rcvNxt - 1 : rcvNxt,
            SndWnd: window[1], SndWl1: window[0],
            // The right edge advertised, rcv_wup + rcv_wnd, as a window from RcvNxt.
            RcvWnd: window[4] + window[3] - rcvNxt, MaxWindow: window[2],
            Mss: (ushort)Get(fd, TCP_MAXSEG), WindowScaling: scaling,
            SndWscale: scaling ? (byte)(info[6] & 0xF) : (byte)0, RcvWscale: scaling ? (byte)(info[6] >> 4) : (byte)0,
            Timestamps: timestamps, TsVal: timestamps ? (uint)Get(fd, TCP_TIMESTAMP) : 0,
            Sack: (options & TCPI_OPT_SACK) != 0,
            PeerClosed: peerClosed);
        socket.SafeHandle.SetHandleAsInvalid();
        Check(Libc.Close(fd), "close");
        int sentLength = outq - notSent;
        return new KernelTcpCheckpoint(state, sendQueue[..sentLength], sendQueue[sentLength..], received);
    }

    private static uint Ipv4(System.Net.IPEndPoint e) =>
        BinaryPrimitives.ReadUInt32BigEndian(e.Address.MapToIPv4().GetAddressBytes());

    private static unsafe byte[] Peek(int fd, int count)
    {
        var bytes = new byte[count];
        fixed (byte* p = bytes)
        {
            // In repair mode a read of the selected queue peeks at it, the send queue included.
            nint n = count == 0 ? 0 : Recv(fd, p, (nuint)count, MSG_PEEK | MSG_DONTWAIT);
            Assert.That((int)n, Is.EqualTo(count), $"peeking at a queue of {count} bytes: errno {Marshal.GetLastPInvokeError()}");
        }
        return bytes;
    }

    private static unsafe int Ioctl(int fd, nuint request)
    {
        int value = 0;
        Check(Libc.Ioctl(fd, request, &value), $"ioctl {request:x}");
        return value;
    }

    private static unsafe void Set(int fd, int option, int value) =>
        Check(Libc.SetSockOpt(fd, SOL_TCP, option, &value, sizeof(int)), $"setsockopt {option}");

    private static unsafe int Get(int fd, int option)
    {
        int value = 0;
        uint length = sizeof(int);
        Check(Libc.GetSockOpt(fd, SOL_TCP, option, &value, &length), $"getsockopt {option}");
        return value;
    }

    private static void Check(int rc, string what) =>
        Assert.That(rc, Is.EqualTo(0), $"{what}: errno {Marshal.GetLastPInvokeError()}");

    [LibraryImport("libc", EntryPoint = "recv", SetLastError = true)]
    private static unsafe partial nint Recv(int fd, byte* buffer, nuint length, int flags);
}
