using System.Buffers.Binary;
using Onload.Stack;
using Onload.Stack.Tcp;
using Onload.Stack.Wire;
using Onload.Tests.Wire;
using PD = PacketDotNet;

namespace Onload.Tests.Tcp;

/// <summary>
/// The packet-level script kit shared by the TCP script tests: one stack listening on port 80, a raw peer that
/// hand-builds segments (PacketDotNet computes their checksums), and a decoder for the exact segments the stack sends.
/// </summary>
internal static class TcpScript
{
    internal const long Ms = 1_000_000;
    internal const ushort Port = 80;
    internal const ushort PeerPort = 40000;
    internal const uint PeerIsn = 1000;
    internal const TcpFlags Ack = TcpFlags.Ack;

    /// <summary>A segment the stack sent, decoded from the raw frame.</summary>
    internal sealed record Seg(ushort SrcPort, ushort DstPort, uint Seq, uint AckNo, TcpFlags Flags, ushort Window,
        int Mss, int WScale, bool SackOk, uint? TsVal, uint? TsEcr, byte[] Payload, int OptionBytes, SackBlock[] Sack);

    /// <summary>One SACK block [Start, End) as it appears on the wire (RFC 2018 §3).</summary>
    internal readonly record struct SackBlock(uint Start, uint End);

    internal static Seg Decode(byte[] frame)
    {
        Assert.That(BinaryPrimitives.ReadUInt16BigEndian(frame.AsSpan(12)), Is.EqualTo(0x0800), "IPv4");
        int ihl = (frame[14] & 0xf) * 4;
        Assert.That(frame[23], Is.EqualTo(6), "TCP");
        int total = BinaryPrimitives.ReadUInt16BigEndian(frame.AsSpan(16));
        var t = frame.AsSpan(14 + ihl, total - ihl);
        // Independent check of the checksum the stack wrote.
        var parsed = PD.Packet.ParsePacket(PD.LinkLayers.Ethernet, frame).Extract<PD.TcpPacket>();
        Assert.That(parsed.ValidTcpChecksum, Is.True, "TCP checksum");
        int hl = (t[12] >> 4) * 4;
        int mss = -1, ws = -1;
        bool sack = false;
        uint? tsv = null, tse = null;
        var blocks = new List<SackBlock>();
        var o = t[20..hl];
        for (int i = 0; i < o.Length;)
        {
            byte kind = o[i];
            if (kind == 0)
                break;
            if (kind == 1)
            {
                i++;
                continue;
            }
            int len = o[i + 1];
            switch (kind)
            {
                case 2: mss = BinaryPrimitives.ReadUInt16BigEndian(o[(i + 2)..]); break;
                case 3: ws = o[i + 2]; break;
                case 4: sack = true; break;
                case 5:
                    for (int b = i + 2; b + 8 <= i + len; b += 8)
                        blocks.Add(new SackBlock(BinaryPrimitives.ReadUInt32BigEndian(o[b..]), BinaryPrimitives.ReadUInt32BigEndian(o[(b + 4)..])));
                    break;
                case 8:
                    tsv = BinaryPrimitives.ReadUInt32BigEndian(o[(i + 2)..]);
                    tse = BinaryPrimitives.ReadUInt32BigEndian(o[(i + 6)..]);
                    break;
            }
            i += len;
        }
        return new Seg(BinaryPrimitives.ReadUInt16BigEndian(t), BinaryPrimitives.ReadUInt16BigEndian(t[2..]),
            BinaryPrimitives.ReadUInt32BigEndian(t[4..]), BinaryPrimitives.ReadUInt32BigEndian(t[8..]), (TcpFlags)t[13],
            BinaryPrimitives.ReadUInt16BigEndian(t[14..]), mss, ws, sack, tsv, tse, t[hl..].ToArray(), hl - 20, blocks.ToArray());
    }

    internal static bool IsArpRequest(byte[] f) => f.Length >= 42 && f[12] == 0x08 && f[13] == 0x06 && f[21] == 1;

    internal static bool IsTcp(byte[] f) => f.Length > 34 && f[12] == 0x08 && f[13] == 0 && f[23] == 6;

    /// <summary>The TCP segments among what the peer received.</summary>
    internal static List<Seg> TcpSegments(List<byte[]> frames) => frames.Where(IsTcp).Select(Decode).ToList();

    /// <summary>The script's assertion: exactly one segment came back, with these fields (null: not checked).</summary>
    internal static Seg Expect(List<Seg> got, TcpFlags flags, uint? seq = null, uint? ack = null, int? length = null,
        ushort? window = null, string? why = null)
    {
        Assert.That(got, Has.Count.EqualTo(1), why ?? $"one segment expected ({flags})");
        var s = got[0];
        Assert.That(s.Flags, Is.EqualTo(flags), why);
        if (seq is { } q)
            Assert.That(s.Seq, Is.EqualTo(q), why ?? "seq");
        if (ack is { } a)
            Assert.That(s.AckNo, Is.EqualTo(a), why ?? "ack");
        if (length is { } l)
            Assert.That(s.Payload, Has.Length.EqualTo(l), why ?? "length");
        if (window is { } w)
            Assert.That(s.Window, Is.EqualTo(w), why ?? "window");
        return s;
    }

    // Options as Linux orders them on a SYN: MSS, SACK-permitted, timestamps, NOP, window scale.
    internal static byte[] SynOptions(ushort mss, bool sackOk, (uint Val, uint Ecr)? ts, int wscale)
    {
        var o = new List<byte> { 2, 4, (byte)(mss >> 8), (byte)mss };
        o.AddRange(sackOk ? [4, 2] : [1, 1]);
        if (ts is { } t)
            o.AddRange([8, 10, .. BE(t.Val), .. BE(t.Ecr)]);
        if (wscale >= 0)
            o.AddRange([1, 3, 3, (byte)wscale]);
        while (o.Count % 4 != 0)
            o.Add(0);
        return o.ToArray();
    }

    internal static byte[] TsOption(uint val, uint ecr) => [1, 1, 8, 10, .. BE(val), .. BE(ecr)];

    /// <summary>NOP, NOP, SACK with these blocks (RFC 2018 §3).</summary>
    internal static byte[] SackOption(params SackBlock[] blocks)
    {
        var o = new List<byte> { 1, 1, 5, (byte)(2 + 8 * blocks.Length) };
        foreach (var b in blocks)
            o.AddRange([.. BE(b.Start), .. BE(b.End)]);
        return o.ToArray();
    }

    internal static byte[] BE(uint v)
    {
        var b = new byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(b, v);
        return b;
    }

    /// <summary>One connection in a script: the raw peer's view of both sequence spaces.</summary>
    internal sealed class Conn : IDisposable
    {
        public required RawPeer Peer;
        public int Listener;
        public int Socket;
        public uint PeerSeq;   // the peer's next sequence number (the stack's RCV.NXT)
        public uint StackSeq;  // the stack's SND.NXT as the peer sees it
        public bool Ts;
        public uint PeerTs = 100;
        public uint StackTs;
        public ushort Window = 1000; // × 2^7

        public NetStack Stack => Peer.Stack;

        /// <summary>The peer's options: timestamps when negotiated (echoing the stack's newest), then SACK blocks.</summary>
        public byte[] Options(SackBlock[]? sack = null) =>
            [.. Ts ? TsOption(++PeerTs, StackTs) : [], .. sack is { Length: > 0 } ? SackOption(sack) : []];

        public List<Seg> Send(TcpFlags flags, uint? seq = null, uint? ack = null, byte[]? payload = null, byte[]? options = null,
            ushort? window = null, SackBlock[]? sack = null)
        {
            Peer.Inject(Peer.TcpFrame(PeerPort, Port, seq ?? PeerSeq, ack ?? StackSeq, flags, window ?? Window,
                options ?? Options(sack), payload));
            return Received();
        }

        /// <summary>The segments that reached the peer; it remembers the newest timestamp to echo.</summary>
        public List<Seg> Received(long advanceNs = Ms)
        {
            var got = TcpSegments(ReceivedAnsweringArp(Peer, advanceNs));
            foreach (var s in got.Where(s => s.TsVal is not null))
                StackTs = s.TsVal!.Value;
            return got;
        }

        public void Dispose() => Peer.Dispose();
    }

    /// <summary>A stack listening on port 80 that already knows the peer's MAC (from the peer's ARP request).</summary>
    internal static RawPeer Listening(out int listener, Func<StackOptions, StackOptions>? tweak = null)
    {
        var peer = new RawPeer(tweak: tweak);
        peer.Inject(peer.ArpFrame(PD.ArpOperation.Request, RawPeer.StackIp));
        Assert.That(peer.Received().Count(f => f[12] == 0x08 && f[13] == 0x06), Is.EqualTo(1), "ARP reply");
        listener = peer.Stack.TcpOpen();
        Assert.That(peer.Stack.TcpBind(listener, new Ipv4Endpoint(Ipv4Address.Any, Port)), Is.Zero);
        Assert.That(peer.Stack.TcpListen(listener, 16), Is.Zero);
        return peer;
    }

    /// <summary>Passive open from the peer's SYN (MSS 1460, SACK-permitted if <paramref name="sack"/>, window scale 7, timestamps if
    /// <paramref name="timestamps"/>) to an accepted, established connection. The final ACK reaches the stack
    /// <paramref name="rttNs"/> after its SYN-ACK left (at least 2 ms), the stack's first RTT sample.</summary>
    internal static Conn Establish(bool timestamps = true, Func<StackOptions, StackOptions>? tweak = null, bool sack = true,
        long rttNs = 2 * Ms)
    {
        var peer = Listening(out int l, tweak);
        var c = new Conn { Peer = peer, Listener = l, Ts = timestamps, PeerSeq = PeerIsn };
        long synAckAt = peer.Clock.NowNanoseconds + Ms; // the SYN is processed after the link's 1 ms
        var synAck = Expect(c.Send(TcpFlags.Syn, ack: 0, options: SynOptions(1460, sack, timestamps ? (c.PeerTs, 0) : null, 7)),
            TcpFlags.Syn | Ack, ack: PeerIsn + 1);
        c.PeerSeq = PeerIsn + 1;
        c.StackSeq = synAck.Seq + 1;
        peer.Clock.AdvanceTo(Math.Max(peer.Clock.NowNanoseconds, synAckAt + rttNs - Ms));
        Assert.That(c.Send(Ack), Is.Empty, "the final ACK of the handshake needs no answer");
        c.Socket = peer.Stack.TcpAccept(l, out var remote);
        Assert.That(c.Socket, Is.GreaterThanOrEqualTo(0), "accepted");
        Assert.That(remote, Is.EqualTo(new Ipv4Endpoint(Ipv4Address.Parse("10.2.0.1"), PeerPort)));
        Assert.That(peer.Stack.TcpStateOf(c.Socket), Is.EqualTo(TcpState.Established));
        return c;
    }


    /// <summary>The frames that reached the peer after <paramref name="advanceNs"/>. When the neighbour entry went
    /// stale the stack asks again, holding what it sends meanwhile: the peer answers at once and collects the rest.</summary>
    internal static List<byte[]> ReceivedAnsweringArp(RawPeer peer, long advanceNs)
    {
        var frames = peer.Received(advanceNs);
        if (frames.Any(IsArpRequest))
        {
            var reply = new PD.ArpPacket(PD.ArpOperation.Response, peer.StackMac, RawPeer.StackIp, peer.PeerMac, RawPeer.PeerIp);
            peer.Inject(new PD.EthernetPacket(peer.PeerMac, peer.StackMac, PD.EthernetType.Arp) { PayloadPacket = reply }.Bytes, advanceNs: 1_000);
            frames.AddRange(peer.Received(advanceNs: 1_000));
        }
        return frames;
    }

    /// <summary>Steps the clock by 1 ms ticks for <paramref name="durationNs"/>, polling, and records when each TCP
    /// segment left.</summary>
    internal static List<(long At, Seg Seg)> Run(RawPeer peer, long durationNs)
    {
        var log = new List<(long, Seg)>();
        long end = peer.Clock.NowNanoseconds + durationNs;
        while (peer.Clock.NowNanoseconds < end)
        {
            peer.Clock.Advance(Ms);
            peer.Stack.Poll();
            long at = peer.Clock.NowNanoseconds;
            var frames = ReceivedAnsweringArp(peer, 1_000);
            foreach (var s in TcpSegments(frames))
                log.Add((at, s));
        }
        return log;
    }
}
