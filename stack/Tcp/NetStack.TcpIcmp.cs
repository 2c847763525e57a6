using System.Buffers.Binary;
using Onload.Stack.Icmp;
using Onload.Stack.Tcp;
using Onload.Stack.Wire;

namespace Onload.Stack;

// ICMP errors about our TCP segments (RFC 5927, RFC 1122 §4.2.3.9, RFC 1191), as Linux's tcp_v4_err: an error
// must quote a connection's four-tuple and a sequence number we have sent and not had acknowledged, so that a blind
// attacker must guess both (RFC 5927 §4.1); fragmentation needed lowers the connection's path MTU; a hard error
// ends a connection still opening; an established one only remembers the error, reported if it then times out.
public sealed partial class NetStack
{
    /// <summary>The lowest path MTU a "fragmentation needed" may set (Linux's net.ipv4.route.min_pmtu, 512 + 20 +
    /// 20): lower values, forged or not, would make segments of a few bytes (RFC 5927 §7.2).</summary>
    public const int TcpMinPathMtu = 552;

    /// <summary>An ICMP error quoting a TCP segment we sent; <paramref name="quotedTcp"/> holds at least the first 8
    /// bytes of its header (ports and sequence number, all RFC 792 promises).</summary>
    private void TcpIcmpError(IcmpPacket icmp, Ipv4Packet inner, ReadOnlySpan<byte> quotedTcp)
    {
        ushort localPort = BinaryPrimitives.ReadUInt16BigEndian(quotedTcp);
        ushort remotePort = BinaryPrimitives.ReadUInt16BigEndian(quotedTcp[2..]);
        uint seq = BinaryPrimitives.ReadUInt32BigEndian(quotedTcp[4..]);
        int c = _tcp.Find(localPort, inner.Destination, remotePort);
        if (c < 0)
        {
            Counters.Count(DropReason.IcmpErrorNoSocket); // Linux: IcmpInErrors, -ENOENT
            return;
        }
        ref var t = ref _tcp[c];
        if (t.State is TcpState.TimeWait or TcpState.Closed)
        {
            Counters.Count(DropReason.TcpIcmpIgnored);
            return;
        }
        byte type = icmp.Type, code = icmp.Code;
        if (t.State == TcpState.SynReceived && t.Listener >= 0)
        {
            // A listener's half-open child (Linux's request sock, tcp_req_err): the error must quote our SYN-ACK, and
            // only a sign that the client cannot be reached drops the child; the SYN queue has one row fewer.
            if (seq != t.Iss)
                TcpIcmpOutOfWindow();
            else if (type is IcmpType.ParameterProblem or IcmpType.TimeExceeded ||
                     type == IcmpType.DestinationUnreachable && code is IcmpUnreachableCode.Network or IcmpUnreachableCode.Host)
            {
                Counters.TcpExtListenDrops++;
                TcpFree(c);
            }
            else
                Counters.Count(DropReason.TcpIcmpIgnored);
            return;
        }
        // RFC 5927 §4.1: only about data in flight, SND.UNA ≤ SEQ ≤ SND.NXT (Linux's "between", both ends in).
        if (Seq.Lt(seq, t.SndUna) || Seq.Gt(seq, t.SndNxt))
        {
            TcpIcmpOutOfWindow();
            return;
        }
        int errno;
        switch (type)
        {
            case IcmpType.ParameterProblem:
                errno = (int)Errno.EPROTO;
                break;
            case IcmpType.TimeExceeded:
                errno = (int)Errno.EHOSTUNREACH;
                break;
            case IcmpType.DestinationUnreachable when code == IcmpUnreachableCode.FragmentationNeeded:
                TcpPathMtuReduced(c, icmp.NextHopMtu);
                return;
            case IcmpType.DestinationUnreachable when code <= 15:
                errno = IcmpErrors.ToErrno(type, code).Errno;
                break;
            default:
                Counters.Count(DropReason.TcpIcmpIgnored); // redirects, source quench (RFC 6633), unknown codes
                return;
        }
        if (t.State is TcpState.SynSent or TcpState.SynReceived)
        {
            // Still opening: any of these ends connect() with the error (Linux's tcp_v4_err sets sk_err and calls
            // tcp_done), not only RFC 1122's protocol and port unreachable.
            TcpFail(c, errno);
            return;
        }
        // Synchronized: RFC 1122 §4.2.3.9 lets only a few be fatal, and routers lie; Linux keeps trying and reports
        // the error only if the connection then times out (sk_err_soft), or to getsockopt(SO_ERROR).
        t.SoftError = errno;
        Counters.TcpIcmpSoftErrors++;
    }

    private void TcpIcmpOutOfWindow()
    {
        Counters.TcpExtOutOfWindowIcmps++;
        Counters.Count(DropReason.TcpIcmpOutOfWindow);
    }

    /// <summary>
    /// Fragmentation needed (RFC 1191 §3, Linux's tcp_v4_mtu_reduced): the path MTU falls to what the router said,
    /// never below <see cref="TcpMinPathMtu"/> and never up; the MSS follows, and segments in flight that no longer
    /// fit are sent again at once in pieces (Linux's tcp_simple_retransmit), without touching the congestion window:
    /// nothing was lost to congestion.
    /// </summary>
    private void TcpPathMtuReduced(int c, int nextHopMtu)
    {
        ref var t = ref _tcp[c];
        int current = t.PathMtu != 0 ? Math.Min(t.PathMtu, _mtu) : _mtu;
        int mtu = Math.Max(nextHopMtu, TcpMinPathMtu);
        if (mtu >= current)
        {
            Counters.Count(DropReason.TcpIcmpIgnored); // would raise it: RFC 1191 §3 ignores a larger one
            return;
        }
        t.PathMtu = (ushort)mtu;
        Counters.TcpPathMtuReductions++;
        TcpSyncMss(c);
        bool marked = false;
        for (int i = 0; i < t.SentCount; i++)
        {
            ref var r = ref SentSegment(c, i);
            if (r.DataLength > t.SndMss && (r.Flags & SentFlags.Sacked) == 0 && !WaitsForRetransmit(r.Flags))
            {
                MarkLost(c, ref r);
                marked = true;
            }
        }
        if (marked)
            TcpOutput(c);
    }
}
