namespace Onload.Stack.Tcp;

/// <summary>What the sender knows of one segment it sent (RFC 6675's scoreboard, RFC 8985's per-segment state).</summary>
[Flags]
public enum SentFlags : byte
{
    None = 0,
    /// <summary>The segment carries the FIN (its last sequence number).</summary>
    Fin = 1,
    /// <summary>The receiver holds it: a SACK block covered it (RFC 2018).</summary>
    Sacked = 2,
    /// <summary>Deemed lost (RACK, three duplicate ACKs, or a timeout) and not yet sent again.</summary>
    Lost = 4,
    /// <summary>Sent more than once: its RTT is ambiguous (Karn) and a D-SACK for it means the resend was spurious.</summary>
    Retransmitted = 8,
    /// <summary>Lost and sent again: the copy in flight counts in the pipe.</summary>
    Resent = 16,
    /// <summary>Sent again only in part, cut to the peer's window: when that part is acknowledged the rest is lost
    /// again (<see cref="Resent"/> cleared).</summary>
    Cut = 32,
}

/// <summary>
/// One sent segment: its sequence range (data, plus one for a FIN), when it last left, and its scoreboard state.
/// Records lie end to end from SND.UNA to SND.MAX in a per-connection ring (<see cref="TcpTable.SentSegments"/>).
/// </summary>
public struct TcpSentSegment
{
    public uint Start;
    public uint Length;
    public long SentAt;
    public SentFlags Flags;

    public readonly uint End => Start + Length;
    public readonly int DataLength => (int)Length - ((Flags & SentFlags.Fin) != 0 ? 1 : 0);

    /// <summary>Counted in the pipe (RFC 6675 §4, as Linux's packets_out − sacked_out − lost_out + retrans_out):
    /// not SACKed, and either not lost or lost and sent again.</summary>
    public readonly bool InPipe => (Flags & SentFlags.Sacked) == 0 && ((Flags & SentFlags.Lost) == 0 || (Flags & SentFlags.Resent) != 0);
}
