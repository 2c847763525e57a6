using BenchmarkDotNet.Attributes;
using Onload.Stack;
using Onload.Stack.Wire;
using Onload.Vnic;

namespace Onload.Perf.Stack;

/// <summary>
/// The stack's cost per frame, without a backend: a UDP datagram received and read, a datagram sent, a ping
/// answered. The memory diagnoser's "Allocated" column must read 0 B (bytes per operation).
/// </summary>
[MemoryDiagnoser]
public class StackBenchmarks
{
    private static readonly MacAddress PeerMac = MacAddress.Parse("02:00:00:00:00:01");
    private static readonly Ipv4Address PeerIp = Ipv4Address.Parse("10.3.0.1");
    private static readonly Ipv4Address StackIp = Ipv4Address.Parse("10.3.0.2");

    private ReplayVnic _vnic = null!;
    private NetStack _stack = null!;
    private byte[][] _udpFrame = null!;
    private byte[][] _echoFrame = null!;
    private byte[][] _fragments = null!;
    private readonly byte[] _bigPayload = new byte[8000];
    private readonly byte[] _bigReadBuffer = new byte[65536];
    private ushort _fragmentId;
    private readonly byte[] _payload = new byte[64];
    private readonly byte[] _readBuffer = new byte[2048];
    private int _socket;

    [GlobalSetup]
    public void Setup()
    {
        _vnic = new ReplayVnic(MacAddress.Parse("02:00:00:00:00:02"));
        _stack = new NetStack(_vnic, new StackOptions { Address = Ipv4Cidr.Parse("10.3.0.2/24"), GratuitousArp = false },
            new VirtualClock(), new SeededRandom(1));
        _socket = _stack.UdpOpen();
        _stack.UdpBind(_socket, new Ipv4Endpoint(Ipv4Address.Any, 7));
        // Resolve the peer once, with a reply to a request it never saw (an unsolicited reply is not learnt),
        // so: the stack asks, the peer answers.
        _stack.UdpSendTo(_socket, _payload, new Ipv4Endpoint(PeerIp, 9));
        _vnic.Arm([ArpReply()]);
        _stack.Poll();
        _udpFrame = [Frame(IpProtocol.Udp, UdpPayload(64))];
        _echoFrame = [Frame(IpProtocol.Icmp, EchoRequest(56))];
        _fragments = Fragments(UdpPayload(8000), 1480);
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _stack.Dispose();
        _vnic.Dispose();
    }

    [Benchmark(Description = "UDP 64 B: receive, demultiplex, read")]
    public int UdpReceive()
    {
        _vnic.Arm(_udpFrame);
        _stack.Poll();
        return _stack.UdpReceiveFrom(_socket, _readBuffer, out _);
    }

    [Benchmark(Description = "UDP 8000 B: 6 fragments in, reassembled, read")]
    public int UdpReceiveFragmented()
    {
        // A fresh identification each time, as a sender would use.
        _fragmentId++;
        foreach (var f in _fragments)
        {
            f[18] = (byte)(_fragmentId >> 8);
            f[19] = (byte)_fragmentId;
            f[24] = f[25] = 0;
            ushort c = Checksum.Compute(f.AsSpan(14, 20));
            f[24] = (byte)(c >> 8);
            f[25] = (byte)c;
        }
        _vnic.Arm(_fragments);
        _stack.Poll();
        return _stack.UdpReceiveFrom(_socket, _bigReadBuffer, out _);
    }

    [Benchmark(Description = "UDP 8000 B: sendto, fragmented into 6")]
    public int UdpSendFragmented() => _stack.UdpSendTo(_socket, _bigPayload, new Ipv4Endpoint(PeerIp, 9));

    [Benchmark(Description = "Parse: Ethernet + IPv4 + UDP validation of a 64 B datagram")]
    public DropReason Parse()
    {
        var frame = _udpFrame[0].AsSpan();
        var reason = Ipv4Packet.Validate(frame[EthernetFrame.HeaderLength..]);
        if (reason != DropReason.None)
            return reason;
        var ip = new Ipv4Packet(frame[EthernetFrame.HeaderLength..]);
        return UdpDatagram.Validate(ip.Payload, ip.Source, ip.Destination, checksumTrusted: false);
    }

    [Benchmark(Description = "Emit: Ethernet + IPv4 + UDP headers with checksums, 64 B")]
    public ushort Emit()
    {
        var frame = _readBuffer.AsSpan(0, 42 + 64);
        new EthernetFrame(frame).WriteHeader(PeerMac, PeerMac, EtherType.Ipv4);
        new UdpDatagram(frame[34..]).Write(7, 9, 64, StackIp, PeerIp);
        var ip = new Ipv4Packet(frame[14..]);
        ip.WriteHeader(StackIp, PeerIp, IpProtocol.Udp, 8 + 64, 1, 64, true);
        return ip.HeaderChecksum;
    }

    [Benchmark(Description = "UDP 64 B: sendto to a resolved neighbour")]
    public int UdpSend() => _stack.UdpSendTo(_socket, _payload, new Ipv4Endpoint(PeerIp, 9));

    [Benchmark(Description = "ICMP echo: request in, reply out (in place)")]
    public int EchoReply()
    {
        _vnic.Arm(_echoFrame);
        return _stack.Poll();
    }

    private static byte[] ArpReply()
    {
        var f = new byte[EthernetFrame.HeaderLength + ArpPacket.Length];
        new EthernetFrame(f).WriteHeader(MacAddress.Parse("02:00:00:00:00:02"), PeerMac, EtherType.Arp);
        new ArpPacket(f.AsSpan(EthernetFrame.HeaderLength)).Write(ArpOperation.Reply, PeerMac, PeerIp,
            MacAddress.Parse("02:00:00:00:00:02"), StackIp);
        return f;
    }

    private static byte[] UdpPayload(int length)
    {
        var udp = new byte[UdpDatagram.HeaderLength + length];
        new UdpDatagram(udp).Write(40000, 7, length, PeerIp, StackIp);
        return udp;
    }

    private static byte[] EchoRequest(int length)
    {
        var icmp = new byte[IcmpPacket.HeaderLength + length];
        var p = new IcmpPacket(icmp) { Type = IcmpType.EchoRequest, Identifier = 1, SequenceNumber = 1 };
        p.FillChecksum();
        return icmp;
    }

    /// <summary>An IPv4 datagram cut into fragment frames of <paramref name="perFragment"/> payload bytes.</summary>
    private static byte[][] Fragments(byte[] payload, int perFragment)
    {
        var frames = new List<byte[]>();
        for (int offset = 0; offset < payload.Length; offset += perFragment)
        {
            int length = Math.Min(perFragment, payload.Length - offset);
            var f = Frame(IpProtocol.Udp, payload.AsSpan(offset, length).ToArray());
            bool more = offset + length < payload.Length;
            var ip = new Ipv4Packet(f.AsSpan(EthernetFrame.HeaderLength));
            ip.WriteHeader(PeerIp, StackIp, IpProtocol.Udp, length, 1, 64,
                (ushort)((more ? Ipv4Packet.FlagMoreFragments : 0) | offset / 8), 0, 0);
            frames.Add(f);
        }
        return [.. frames];
    }

    private static byte[] Frame(byte protocol, byte[] payload)
    {
        var f = new byte[EthernetFrame.HeaderLength + Ipv4Packet.MinHeaderLength + payload.Length];
        new EthernetFrame(f).WriteHeader(MacAddress.Parse("02:00:00:00:00:02"), PeerMac, EtherType.Ipv4);
        new Ipv4Packet(f.AsSpan(EthernetFrame.HeaderLength)).WriteHeader(PeerIp, StackIp, protocol, payload.Length, 1, 64, false);
        payload.CopyTo(f, EthernetFrame.HeaderLength + Ipv4Packet.MinHeaderLength);
        return f;
    }
}
