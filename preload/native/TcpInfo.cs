using System.Buffers.Binary;
using Onload.Stack.Tcp;

namespace Onload.Native;

/// <summary>
/// getsockopt(TCP_INFO) for a connection on the stack, in Linux's <c>struct tcp_info</c> layout
/// (include/uapi/linux/tcp.h) up to <c>tcpi_snd_wnd</c>: what iperf3, ss-like tools and programs that watch their
/// own connections read. Fields the stack does not keep (pacing, delivery rate, byte totals) are 0.
/// </summary>
internal static class TcpInfo
{
    /// <summary>The bytes filled: struct tcp_info as far as tcpi_snd_wnd.</summary>
    public const int Size = 232;

    private const byte OptTimestamps = 1, OptSack = 2, OptWscale = 4;
    private const byte CaOpen = 0, CaRecovery = 3, CaLoss = 4;

    /// <summary>Writes the connection's tcp_info into <paramref name="info"/> (at least <see cref="Size"/> bytes).</summary>
    public static void Fill(ref readonly TcpConnection t, int mtu, Span<byte> info)
    {
        info[..Size].Clear();
        int mss = Math.Max(1, (int)t.SndMss);
        uint inFlight = t.SndNxt - t.SndUna;
        info[0] = LinuxState(t.State);
        info[1] = t.RtoRecovery ? CaLoss : t.InRecovery ? CaRecovery : CaOpen;
        info[2] = (byte)Math.Min(t.Backoff, 255); // tcpi_retransmits: RTOs in a row
        info[4] = (byte)Math.Min(t.Backoff, 255); // tcpi_backoff
        info[5] = (byte)((t.Timestamps ? OptTimestamps : 0) | (t.SackPermitted ? OptSack : 0) |
                         (t.SndWndShift != 0 || t.RcvWndShift != 0 ? OptWscale : 0));
        info[6] = (byte)((t.SndWndShift & 0xf) | (t.RcvWndShift << 4));
        Put(info, 8, Micros(t.Rto));
        Put(info, 16, (uint)mss);                          // tcpi_snd_mss
        Put(info, 20, (uint)mss);                          // tcpi_rcv_mss: the stack keeps one MSS
        Put(info, 24, (uint)((inFlight + mss - 1) / mss)); // tcpi_unacked, in segments
        Put(info, 28, (uint)t.SackedCount);
        Put(info, 32, (uint)t.LostCount);
        Put(info, 60, (uint)mtu);                          // tcpi_pmtu
        Put(info, 64, (uint)t.RcvBufSize);                 // tcpi_rcv_ssthresh
        Put(info, 68, Micros(t.Srtt));
        Put(info, 72, Micros(t.RttVar));
        Put(info, 76, t.Ssthresh == uint.MaxValue ? 0x7fffffffu : t.Ssthresh / (uint)mss); // TCP_INFINITE_SSTHRESH
        Put(info, 80, t.Cwnd / (uint)mss);
        Put(info, 84, (uint)mss);                          // tcpi_advmss
        Put(info, 88, 3);                                  // tcpi_reordering: the dupthresh
        Put(info, 92, Micros(t.RcvRtt));
        Put(info, 96, (uint)t.RcvSpace);
        Put(info, 100, t.TotalRetrans);
        Put(info, 144, (uint)Math.Max(0, t.SndQueued - (int)inFlight)); // tcpi_notsent_bytes
        Put(info, 148, Micros(t.RackMinRtt));               // tcpi_min_rtt
        Put(info, 228, t.SndWnd);                          // tcpi_snd_wnd (kept scaled)
    }

    private static void Put(Span<byte> info, int offset, uint value) => BinaryPrimitives.WriteUInt32LittleEndian(info[offset..], value);

    private static uint Micros(long ns) => (uint)Math.Clamp(ns / 1000, 0, uint.MaxValue);

    /// <summary>The state's number in Linux's include/net/tcp_states.h.</summary>
    private static byte LinuxState(TcpState state) => state switch
    {
        TcpState.Established => 1,
        TcpState.SynSent => 2,
        TcpState.SynReceived => 3,
        TcpState.FinWait1 => 4,
        TcpState.FinWait2 => 5,
        TcpState.TimeWait => 6,
        TcpState.Closed => 7,
        TcpState.CloseWait => 8,
        TcpState.LastAck => 9,
        TcpState.Listen => 10,
        TcpState.Closing => 11,
        _ => 7,
    };
}
