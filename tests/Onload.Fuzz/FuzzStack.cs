using System.Buffers.Binary;
using Onload.Stack;
using Onload.Stack.Wire;
using Onload.Vnic;
using Onload.Vnic.Sim;

namespace Onload.Fuzz;

/// <summary>
/// A stack on one end of the simulated link, with a UDP socket on port 7 and a TCP listener on port 80, and the
/// fuzzer's frames coming in at the other end. After an input, <see cref="Settle"/> reads what is queued, closes
/// every socket, lets every timer run out and checks that every packet buffer came back: a leak is a finding.
/// </summary>
internal sealed class FuzzStack : IDisposable
{
    public static readonly Ipv4Address PeerIp = Ipv4Address.Parse("10.2.0.1");
    public static readonly Ipv4Address StackIp = Ipv4Address.Parse("10.2.0.2");
    public const ushort UdpPort = 7;
    public const ushort TcpPort = 80;

    private readonly VirtualClock _clock = new();
    private readonly SimLink _link;
    private readonly int _udp;
    private readonly int _listener;
    private readonly List<int> _connections = [];
    private readonly byte[] _scratch = new byte[65536];

    public FuzzStack()
    {
        _link = new SimLink(1, _clock, buffers: 512, inFlight: 512);
        Stack = new NetStack(_link.B, new StackOptions
        {
            Address = Ipv4Cidr.Parse("10.2.0.2/24"),
            GratuitousArp = false,
            TcpConnections = 16,
            TcpSendBufferBytes = 256 << 10,
            TcpReceiveBufferBytes = 256 << 10,
            // Every connection ends within Settle's 200 s of virtual time: short MSL, few retries, a low RTO cap.
            TcpMslNs = 1_000_000_000,
            TcpRetries = 4,
            TcpSynAckRetries = 2,
            TcpMaxRtoNs = 4_000_000_000,
            TcpFinTimeoutNs = 5_000_000_000,
        }, _clock, new SeededRandom(1));
        _udp = Stack.UdpOpen();
        Check(Stack.UdpBind(_udp, new Ipv4Endpoint(default, UdpPort)), "UDP bind");
        _listener = Stack.TcpOpen();
        Check(Stack.TcpBind(_listener, new Ipv4Endpoint(default, TcpPort)), "TCP bind");
        Check(Stack.TcpListen(_listener, 8), "listen");
        // The peer asks for the stack's MAC; when the stack asks for the peer's, Advance answers.
        Inject(ArpFrame(request: true));
    }

    public NetStack Stack { get; }

    /// <summary>The peer's segments the stack sent back since the last call (Ethernet frames).</summary>
    public List<byte[]> Sent { get; } = [];

    public MacAddress PeerMac => _link.A.MacAddress;

    public MacAddress StackMac => _link.B.MacAddress;

    /// <summary>Delivers one frame (cut to the link's buffer) and lets the stack process it.</summary>
    public void Inject(ReadOnlySpan<byte> frame)
    {
        if (frame.Length == 0 || !_link.A.Buffers.TryAllocate(out int buffer))
            return;
        int n = Math.Min(frame.Length, _link.A.Buffers.BufferSize);
        frame[..n].CopyTo(_link.A.Buffers.Span(buffer));
        _link.A.Transmit([new PacketDescriptor(buffer, n)]);
        Advance(1_000_000);
    }

    /// <summary>Lets virtual time pass, polling, and keeps what the stack sent.</summary>
    public void Advance(long ns)
    {
        _clock.Advance(ns);
        Stack.Poll();
        Span<PacketDescriptor> batch = stackalloc PacketDescriptor[32];
        int got;
        bool asked = false;
        while ((got = _link.A.Receive(batch)) > 0)
        {
            for (int i = 0; i < got; i++)
            {
                var frame = _link.A.Buffers.Span(batch[i]).ToArray();
                asked |= frame.Length >= 42 && frame[12] == 0x08 && frame[13] == 0x06 && frame[21] == 1;
                Sent.Add(frame);
                _link.A.Buffers.Release(batch[i].Buffer);
            }
        }
        if (asked) // the stack asks for the peer's MAC: the peer answers, as a host would
            Inject(ArpFrame(request: false));
    }

    /// <summary>What an application would do between frames: take new connections, read, and answer; then every
    /// connection's sequence space must still make sense.</summary>
    public void Serve()
    {
        CheckConnections();
        while (Stack.TcpAccept(_listener, out _) is var c and >= 0)
            _connections.Add(c);
        while (Stack.UdpReceiveFrom(_udp, _scratch, out _) >= 0)
        {
        }
        foreach (int c in _connections)
        {
            while (Stack.TcpReceive(c, _scratch) > 0)
            {
            }
            Stack.TcpSend(c, _scratch.AsSpan(0, 100));
        }
    }

    /// <summary>What must hold of every TCP row whatever arrived: SND.UNA ≤ SND.NXT ≤ what was queued (plus SYN and
    /// FIN), the queued bytes within the send buffer, and the received, unread bytes within the receive ring.</summary>
    private void CheckConnections()
    {
        var table = Stack.TcpConnections;
        for (int c = 0; c < table.Capacity; c++)
        {
            if (!table.IsValid(c))
                continue;
            ref var t = ref table[c];
            int inFlight = (int)(t.SndNxt - t.SndUna);
            int held = (int)(t.RcvNxt - t.RcvRead);
            if (inFlight < 0 || inFlight > t.SndQueued + 2)
                throw new InvalidOperationException($"row {c} ({t.State}): {inFlight} bytes in flight with {t.SndQueued} queued");
            if (t.SndQueued < 0 || t.SndQueued > t.SndRingSize)
                throw new InvalidOperationException($"row {c} ({t.State}): {t.SndQueued} bytes queued in a {t.SndRingSize}-byte ring");
            if (held < 0 || held > t.RcvRingSize + 1)
                throw new InvalidOperationException($"row {c} ({t.State}): {held} bytes held in a {t.RcvRingSize}-byte ring");
        }
    }

    /// <summary>Reads and closes everything, runs every timer out, and checks that every buffer came back.</summary>
    public void Settle()
    {
        Serve();
        foreach (int c in _connections)
            Stack.TcpClose(c);
        _connections.Clear();
        Stack.TcpClose(_listener);
        Stack.UdpClose(_udp);
        // Past reassembly's 30 s, ARP's probes, TIME_WAIT (2 MSL = 2 s here) and the longest RTO backoff.
        for (int i = 0; i < 40; i++)
            Advance(5_000_000_000);
        var pool = _link.B.Buffers;
        if (pool.Available != pool.Count)
            throw new InvalidOperationException($"{pool.Count - pool.Available} packet buffers not returned after the stack settled");
        if (Stack.TcpConnections.Open != 0)
        {
            var states = Enumerable.Range(0, Stack.TcpConnections.Capacity).Where(Stack.TcpConnections.IsValid)
                .Select(c => Describe(Stack.TcpConnections[c]));
            throw new InvalidOperationException(
                $"{Stack.TcpConnections.Open} TCP rows still in use after every socket closed: {string.Join(", ", states)}");
        }
    }

    private static string Describe(in Onload.Stack.Tcp.TcpConnection t) =>
        $"{t.State} (SND.WND {t.SndWnd}, queued {t.SndQueued}, in flight {t.SndNxt - t.SndUna}, sent records {t.SentCount}, " +
        $"FIN queued {t.FinQueued} sent {t.FinSent}, orphaned {t.Orphaned}, backoff {t.Backoff}, probes {t.ProbesOut})";

    /// <summary>An Ethernet frame from the peer to the stack around an IPv4 packet whose addresses and header
    /// checksum are set here (the fuzzer rarely finds a valid checksum; the parser's own checks get their inputs
    /// from the frame target).</summary>
    public byte[] Ipv4Frame(ReadOnlySpan<byte> packet)
    {
        var frame = new byte[14 + packet.Length];
        StackMac.Write(frame);
        PeerMac.Write(frame.AsSpan(6));
        BinaryPrimitives.WriteUInt16BigEndian(frame.AsSpan(12), 0x0800);
        packet.CopyTo(frame.AsSpan(14));
        var ip = frame.AsSpan(14);
        if (ip.Length >= 20)
        {
            int ihl = Math.Clamp((ip[0] & 0xf) * 4, 20, ip.Length);
            PeerIp.Write(ip[12..]);
            StackIp.Write(ip[16..]);
            ip[10] = ip[11] = 0;
            BinaryPrimitives.WriteUInt16BigEndian(ip[10..], Checksum.Compute(ip[..ihl]));
        }
        return frame;
    }

    /// <summary>An IPv4 frame carrying <paramref name="segment"/> as TCP from <paramref name="peerPort"/> to the
    /// listener's port, its checksum made right.</summary>
    public byte[] TcpFrame(ReadOnlySpan<byte> segment, ushort peerPort)
    {
        var packet = new byte[20 + segment.Length];
        packet[0] = 0x45;
        BinaryPrimitives.WriteUInt16BigEndian(packet.AsSpan(2), (ushort)packet.Length);
        packet[6] = 0x40; // DF
        packet[8] = 64;
        packet[9] = 6;
        segment.CopyTo(packet.AsSpan(20));
        var tcp = packet.AsSpan(20);
        if (tcp.Length >= 20)
        {
            BinaryPrimitives.WriteUInt16BigEndian(tcp, peerPort);
            BinaryPrimitives.WriteUInt16BigEndian(tcp[2..], TcpPort);
            tcp[16] = tcp[17] = 0;
            BinaryPrimitives.WriteUInt16BigEndian(tcp[16..], Checksum.ComputeWithPseudoHeader(PeerIp, StackIp, 6, tcp));
        }
        return Ipv4Frame(packet);
    }

    /// <summary>The peer's ARP request for the stack's address, or its reply to the stack's request.</summary>
    private byte[] ArpFrame(bool request)
    {
        var f = new byte[42];
        (request ? MacAddress.Broadcast : StackMac).Write(f);
        PeerMac.Write(f.AsSpan(6));
        BinaryPrimitives.WriteUInt16BigEndian(f.AsSpan(12), 0x0806);
        BinaryPrimitives.WriteUInt16BigEndian(f.AsSpan(14), 1);
        BinaryPrimitives.WriteUInt16BigEndian(f.AsSpan(16), 0x0800);
        f[18] = 6;
        f[19] = 4;
        BinaryPrimitives.WriteUInt16BigEndian(f.AsSpan(20), (ushort)(request ? 1 : 2));
        PeerMac.Write(f.AsSpan(22));
        PeerIp.Write(f.AsSpan(28));
        if (!request)
            StackMac.Write(f.AsSpan(32));
        StackIp.Write(f.AsSpan(38));
        return f;
    }

    private static void Check(int rc, string what)
    {
        if (rc < 0)
            throw new InvalidOperationException($"{what}: {rc}");
    }

    public void Dispose()
    {
        Stack.Dispose();
        _link.Dispose();
    }
}
