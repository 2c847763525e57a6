using System.Buffers.Binary;
using Onload.Stack.Wire;
using Onload.Vnic;

namespace Onload.Stack.Tcp;

/// <summary>What the daemon sends for one connection of a dead process.</summary>
public enum OrphanKind : byte
{
    /// <summary>FIN|ACK at SND.NXT: the peer reads end of stream, as after close() (tcp_close → tcp_send_fin).</summary>
    Fin,
    /// <summary>RST|ACK at SND.NXT (tcp_send_active_reset): the peer's next call fails with ECONNRESET.</summary>
    Reset,
}

/// <summary>Why a connection gets what it gets.</summary>
public enum OrphanReason : byte
{
    /// <summary>Nothing left unread or unsent: an orderly close.</summary>
    Close,
    /// <summary>The application had not read everything (Linux: data_was_unread, TcpExtTCPAbortOnClose).</summary>
    Unread,
    /// <summary>Data never sent was left in the dead process's send buffer. Linux would send it before its FIN; the
    /// daemon cannot (the bytes are in the dead process's memory), and a FIN would make the peer take a truncated
    /// stream for a whole one, so it resets.</summary>
    Unsent,
    /// <summary>A connection the application never accepted: Linux resets those when their listener closes
    /// (inet_csk_listen_stop → tcp_disconnect).</summary>
    NotAccepted,
}

/// <summary>One segment to send for a dead process's connection, with all a frame needs.</summary>
/// <param name="Row">The connection's row in the dead stack's table.</param>
/// <param name="FromOlderCopy">The record's current copy was damaged and the one before it was used: its numbers
/// may be one update old (the peer then ignores the segment or answers it, and the kernel's RST to that answer
/// ends the connection).</param>
public readonly record struct OrphanAction(
    int Row, OrphanKind Kind, OrphanReason Reason, TcpState State,
    MacAddress LocalMac, MacAddress RemoteMac, Ipv4Address LocalAddress, Ipv4Address RemoteAddress, Ipv4Address NextHop,
    ushort LocalPort, ushort RemotePort, uint Seq, uint Ack, ushort Window,
    bool Timestamps, uint TsVal, uint TsEcr, bool FromOlderCopy)
{
    /// <summary>The next hop's MAC is unknown (never resolved): the caller must resolve <see cref="NextHop"/>.</summary>
    public bool NeedsNeighbour => RemoteMac == MacAddress.Zero;
}

/// <summary>
/// The daemon's half of closing a dead process's TCP connections: reads a <see cref="ConnectionMirror"/> region
/// (<see cref="Plan"/>) and builds the frame for each connection (<see cref="BuildFrame"/>); a
/// <see cref="RawFrameSender"/> puts them on the wire.
/// </summary>
/// <remarks>
/// <para>What is sent follows Linux's tcp_close for a process that exits with sockets open: unread data resets
/// (whatever the state); ESTABLISHED, CLOSE_WAIT and SYN_RECEIVED, and FIN_WAIT_1 / LAST_ACK whose FIN has not
/// gone yet, send a FIN; SYN_SENT, LISTEN, TIME_WAIT, CLOSED and states whose FIN is out send nothing.</para>
/// <para>Timestamps. Linux accepts a RST without TSopt (PAWS is skipped when the segment has none, and a RST is
/// accepted even when it fails PAWS: tcp_validate_incoming), so a RST carries none, as the stack's own RSTs.
/// RFC 7323 §3.2 lets a receiver drop a non-RST segment that lacks TSopt once it was negotiated, so a FIN carries
/// it: TSval is the stack's clock when the record was written, no less than any TSval it sent (PAWS accepts
/// it, RFC 7323 §5.3), and TSecr is TS.Recent, a value the peer sent.</para>
/// </remarks>
public static unsafe class OrphanCloser
{
    /// <summary>The largest frame <see cref="BuildFrame"/> writes: Ethernet, IPv4, TCP with a 12-byte option.</summary>
    public const int MaxFrameLength = EthernetFrame.HeaderLength + Ipv4Packet.MinHeaderLength + TcpSegment.MinHeaderLength + 12;

    private const int ReadAttempts = 8;

    /// <summary>
    /// The segments to send for the connections in a mirror region of <paramref name="length"/> bytes. Never
    /// throws on its content and never reads outside it: a bad header gives no actions, a bad record is skipped.
    /// </summary>
    public static IReadOnlyList<OrphanAction> Plan(byte* region, nuint length)
    {
        var actions = new List<OrphanAction>();
        if (region == null || length < ConnectionMirrorLayout.HeaderSize || ((nuint)region & 3) != 0)
            return actions;
        var h = (ConnectionMirrorLayout.Header*)region;
        if (Volatile.Read(ref h->Magic) != ConnectionMirrorLayout.Magic || h->Version != ConnectionMirrorLayout.Version ||
            h->HeaderSize != ConnectionMirrorLayout.HeaderSize || h->RecordSize != ConnectionMirrorLayout.RecordSize)
            return actions;
        nuint fit = (length - ConnectionMirrorLayout.HeaderSize) / ConnectionMirrorLayout.RecordSize;
        nuint count = Math.Min((nuint)h->RecordCount, fit);
        var localMac = new MacAddress(h->LocalMac & 0xFFFF_FFFF_FFFFUL);
        var localAddress = new Ipv4Address(h->LocalAddress);
        for (nuint i = 0; i < count; i++)
        {
            if (!TryRead(ConnectionMirrorLayout.RecordAt(region, (int)i), out var copy, out bool older))
                continue;
            if (Decide(copy) is not { } decision)
                continue;
            bool timestamps = decision.Kind == OrphanKind.Fin && (copy.Flags & MirrorFlags.Timestamps) != 0;
            actions.Add(new OrphanAction((int)i, decision.Kind, decision.Reason, copy.State,
                localMac, new MacAddress(copy.RemoteMac & 0xFFFF_FFFF_FFFFUL), localAddress,
                new Ipv4Address(copy.RemoteAddress), new Ipv4Address(copy.NextHop), copy.LocalPort, copy.RemotePort,
                copy.SndNxt, copy.RcvNxt, copy.Window, timestamps, copy.TsVal, copy.TsRecent, older));
        }
        return actions;
    }

    /// <summary>A complete copy of a record: the one its control word names, read as a seqlock reader would, or
    /// failing its check the other one if it is exactly one generation older.</summary>
    private static bool TryRead(ConnectionMirrorLayout.Record* r, out ConnectionMirrorLayout.Copy copy, out bool older)
    {
        older = false;
        copy = default;
        ConnectionMirrorLayout.Copy c;
        for (int attempt = 0; attempt < ReadAttempts; attempt++)
        {
            uint generation = Volatile.Read(ref r->Control);
            if (generation == 0)
                return false;
            c = *ConnectionMirrorLayout.CopyOf(r, generation);
            if (Volatile.Read(ref r->Control) != generation)
                continue; // the writer lives and moved on: read again
            if (IsWhole(&c, generation))
            {
                copy = c;
                return true;
            }
            uint previous = ConnectionMirrorLayout.Previous(generation);
            c = *ConnectionMirrorLayout.CopyOf(r, previous);
            if (Volatile.Read(ref r->Control) != generation)
                continue;
            if (!IsWhole(&c, previous))
                return false; // a first copy's other one is zeroes, which fail the check
            copy = c;
            older = true;
            return true;
        }
        return false;
    }

    private static bool IsWhole(ConnectionMirrorLayout.Copy* c, uint generation) =>
        c->Generation == generation && c->Check == ConnectionMirrorLayout.CheckOf(c) &&
        c->State <= TcpState.TimeWait && c->RcvWndShift <= 14;

    /// <summary>What Linux does for one connection when its last owner closes it (tcp_close, or
    /// inet_csk_listen_stop for a child not yet accepted), limited to what can be sent without the dead
    /// process's buffers; null when nothing is sent.</summary>
    private static (OrphanKind Kind, OrphanReason Reason)? Decide(in ConnectionMirrorLayout.Copy c)
    {
        if ((c.Flags & MirrorFlags.Dead) != 0 || c.RemoteAddress == 0 || c.RemotePort == 0 || c.LocalPort == 0)
            return null;
        bool finOut = (c.Flags & MirrorFlags.FinSent) != 0;
        switch (c.State)
        {
            case TcpState.SynReceived or TcpState.Established or TcpState.CloseWait:
            case TcpState.FinWait1 or TcpState.LastAck when !finOut:
                break;
            case TcpState.FinWait1 or TcpState.FinWait2 or TcpState.Closing or TcpState.LastAck:
                // Our FIN is out; only unread data changes anything (Linux resets then, whatever the state).
                return (c.Flags & MirrorFlags.Unread) != 0 ? (OrphanKind.Reset, OrphanReason.Unread) : null;
            default:
                return null; // CLOSED, LISTEN, SYN_SENT (the peer has no state), TIME_WAIT
        }
        if ((c.Flags & MirrorFlags.NotAccepted) != 0)
            return (OrphanKind.Reset, OrphanReason.NotAccepted);
        if ((c.Flags & MirrorFlags.Unread) != 0)
            return (OrphanKind.Reset, OrphanReason.Unread);
        if ((c.Flags & MirrorFlags.Unsent) != 0)
            return (OrphanKind.Reset, OrphanReason.Unsent);
        return (OrphanKind.Fin, OrphanReason.Close);
    }

    /// <summary>
    /// Writes the Ethernet frame for <paramref name="a"/> into <paramref name="frame"/> (at least
    /// <see cref="MaxFrameLength"/> bytes) with both checksums, and returns its length; 0 if it does not fit or
    /// the next hop's MAC is unknown (<see cref="OrphanAction.NeedsNeighbour"/>: resolve it and pass an action
    /// with it set).
    /// </summary>
    public static int BuildFrame(in OrphanAction a, Span<byte> frame)
    {
        int optionBytes = a.Timestamps ? 12 : 0;
        int tcpLength = TcpSegment.MinHeaderLength + optionBytes;
        int length = EthernetFrame.HeaderLength + Ipv4Packet.MinHeaderLength + tcpLength;
        if (frame.Length < length || a.NeedsNeighbour)
            return 0;
        frame = frame[..length];
        new EthernetFrame(frame).WriteHeader(a.RemoteMac, a.LocalMac, EtherType.Ipv4);
        var ip = frame[EthernetFrame.HeaderLength..];
        // Linux sends TCP with DF and, DF set, an IP ID of 0 is as good as any (RFC 6864 §4.1).
        new Ipv4Packet(ip).WriteHeader(a.LocalAddress, a.RemoteAddress, IpProtocol.Tcp, tcpLength, 0, 64, dontFragment: true);
        var bytes = ip[Ipv4Packet.MinHeaderLength..];
        var tcp = new TcpSegment(bytes);
        var flags = a.Kind == OrphanKind.Fin ? TcpFlags.Fin | TcpFlags.Ack : TcpFlags.Rst | TcpFlags.Ack;
        // A RST's window means nothing; Linux's tcp_send_active_reset still sends the current one.
        tcp.WriteHeader(a.LocalPort, a.RemotePort, a.Seq, a.Ack, flags, a.Window, optionBytes);
        if (a.Timestamps)
        {
            var o = bytes[TcpSegment.MinHeaderLength..];
            o[0] = TcpSegment.OptionNop;
            o[1] = TcpSegment.OptionNop;
            o[2] = TcpSegment.OptionTimestamps;
            o[3] = 10;
            BinaryPrimitives.WriteUInt32BigEndian(o[4..], a.TsVal);
            BinaryPrimitives.WriteUInt32BigEndian(o[8..], a.TsEcr);
        }
        tcp.FillChecksum(a.LocalAddress, a.RemoteAddress, tcpLength);
        return length;
    }
}
