using System.Net;
using System.Net.NetworkInformation;
using Onload.Stack;
using Onload.Stack.Wire;
using Onload.Vnic;
using Onload.Vnic.Sim;
using PD = PacketDotNet;

namespace Onload.Tests.Wire;

/// <summary>A stack on one end of a simulated link and raw frames, built independently with PacketDotNet, on the other.</summary>
public sealed class RawPeer : IDisposable
{
    public static readonly IPAddress PeerIp = IPAddress.Parse("10.2.0.1");
    public static readonly IPAddress StackIp = IPAddress.Parse("10.2.0.2");

    public RawPeer(ulong seed = 1, Func<StackOptions, StackOptions>? tweak = null)
    {
        Clock = new VirtualClock();
        Link = new SimLink(seed, Clock);
        var options = new StackOptions { Address = Ipv4Cidr.Parse("10.2.0.2/24"), GratuitousArp = false };
        Stack = new NetStack(Link.B, tweak is null ? options : tweak(options), Clock, new SeededRandom(seed));
        Stack.Trace = (tx, frame) => { if (tx) Sent.Add(frame.ToArray()); };
    }

    public VirtualClock Clock { get; }
    public SimLink Link { get; }
    public NetStack Stack { get; }
    public List<byte[]> Sent { get; } = [];

    public PhysicalAddress PeerMac => new(Bytes(Link.A.MacAddress));
    public PhysicalAddress StackMac => new(Bytes(Link.B.MacAddress));

    private static byte[] Bytes(MacAddress m)
    {
        var b = new byte[6];
        m.Write(b);
        return b;
    }

    /// <summary>Sends raw bytes from the peer and lets the stack process them.</summary>
    public void Inject(byte[] frame, long advanceNs = 1_000_000)
    {
        Assert.That(Link.A.Buffers.TryAllocate(out int buffer), Is.True);
        frame.CopyTo(Link.A.Buffers.Span(buffer));
        Link.A.Transmit([new PacketDescriptor(buffer, frame.Length)]);
        Clock.Advance(advanceNs);
        Stack.Poll();
    }

    /// <summary>Frames that came back to the peer (after letting <paramref name="advanceNs"/> of virtual time pass,
    /// enough for the link's delay; the stack is not polled).</summary>
    public List<byte[]> Received(long advanceNs = 1_000_000)
    {
        Clock.Advance(advanceNs);
        var got = new List<byte[]>();
        Span<PacketDescriptor> batch = stackalloc PacketDescriptor[32];
        int n;
        while ((n = Link.A.Receive(batch)) > 0)
            for (int i = 0; i < n; i++)
            {
                got.Add(Link.A.Buffers.Span(batch[i]).ToArray());
                Link.A.Buffers.Release(batch[i].Buffer);
            }
        return got;
    }

    public byte[] UdpFrame(ushort srcPort, ushort dstPort, byte[] payload)
    {
        var udp = new PD.UdpPacket(srcPort, dstPort) { PayloadData = payload };
        var ip = new PD.IPv4Packet(PeerIp, StackIp) { PayloadPacket = udp, TimeToLive = 64 };
        udp.UpdateUdpChecksum();
        ip.UpdateIPChecksum();
        var eth = new PD.EthernetPacket(PeerMac, StackMac, PD.EthernetType.IPv4) { PayloadPacket = ip };
        return eth.Bytes;
    }

    /// <summary>Splits an IPv4 frame into fragment frames of <paramref name="dataPerFragment"/> payload bytes
    /// (a multiple of 8, except for the last), like a router would (RFC 791 §3.2).</summary>
    public static List<byte[]> Fragment(byte[] frame, int dataPerFragment)
    {
        var ip = frame.AsSpan(14, 20).ToArray();
        var data = frame.AsSpan(34).ToArray();
        var fragments = new List<byte[]>();
        for (int offset = 0; offset < data.Length; offset += dataPerFragment)
        {
            int len = Math.Min(dataPerFragment, data.Length - offset);
            bool last = offset + len == data.Length;
            fragments.Add(FragmentFrame(frame, ip, data.AsSpan(offset, len), offset, more: !last));
        }
        return fragments;
    }

    /// <summary>One fragment frame with the given payload, offset (bytes) and MF flag.</summary>
    public static byte[] FragmentFrame(byte[] template, byte[] ipHeader, ReadOnlySpan<byte> data, int offset, bool more)
    {
        var f = new byte[34 + data.Length];
        template.AsSpan(0, 14).CopyTo(f);
        ipHeader.CopyTo(f, 14);
        data.CopyTo(f.AsSpan(34));
        int total = 20 + data.Length;
        f[16] = (byte)(total >> 8);
        f[17] = (byte)total;
        int word = (more ? 0x2000 : 0) | (offset / 8);
        f[20] = (byte)(word >> 8);
        f[21] = (byte)word;
        f[24] = f[25] = 0;
        ushort c = Checksum.Compute(f.AsSpan(14, 20));
        f[24] = (byte)(c >> 8);
        f[25] = (byte)c;
        return f;
    }

    /// <summary>An Ethernet + IPv4 + TCP frame from the peer, checksums by PacketDotNet. <paramref name="options"/>
    /// must be padded to a multiple of 4 bytes.</summary>
    public byte[] TcpFrame(ushort srcPort, ushort dstPort, uint seq, uint ack, TcpFlags flags, ushort window,
        byte[]? options = null, byte[]? payload = null)
    {
        options ??= [];
        payload ??= [];
        Assert.That(options.Length % 4, Is.Zero, "TCP options are padded to 32-bit words");
        int headerLength = 20 + options.Length;
        var b = new byte[headerLength + payload.Length];
        System.Buffers.Binary.BinaryPrimitives.WriteUInt16BigEndian(b.AsSpan(0), srcPort);
        System.Buffers.Binary.BinaryPrimitives.WriteUInt16BigEndian(b.AsSpan(2), dstPort);
        System.Buffers.Binary.BinaryPrimitives.WriteUInt32BigEndian(b.AsSpan(4), seq);
        System.Buffers.Binary.BinaryPrimitives.WriteUInt32BigEndian(b.AsSpan(8), ack);
        b[12] = (byte)(headerLength / 4 << 4);
        b[13] = (byte)flags;
        System.Buffers.Binary.BinaryPrimitives.WriteUInt16BigEndian(b.AsSpan(14), window);
        options.CopyTo(b, 20);
        payload.CopyTo(b, headerLength);
        var tcp = new PD.TcpPacket(new PacketDotNet.Utils.ByteArraySegment(b));
        var ip = new PD.IPv4Packet(PeerIp, StackIp) { PayloadPacket = tcp, TimeToLive = 64 };
        tcp.UpdateTcpChecksum();
        ip.UpdateCalculatedValues();
        ip.UpdateIPChecksum();
        var eth = new PD.EthernetPacket(PeerMac, StackMac, PD.EthernetType.IPv4) { PayloadPacket = ip };
        return eth.Bytes;
    }

    public byte[] EchoRequestFrame(ushort id, ushort seq, byte[] data)
    {
        var icmp = new byte[8 + data.Length];
        icmp[0] = 8;
        icmp[4] = (byte)(id >> 8);
        icmp[5] = (byte)id;
        icmp[6] = (byte)(seq >> 8);
        icmp[7] = (byte)seq;
        data.CopyTo(icmp, 8);
        ushort c = Checksum.Compute(icmp);
        icmp[2] = (byte)(c >> 8);
        icmp[3] = (byte)c;
        var ip = new PD.IPv4Packet(PeerIp, StackIp) { Protocol = PD.ProtocolType.Icmp, TimeToLive = 64, PayloadData = icmp };
        ip.UpdateCalculatedValues();
        ip.UpdateIPChecksum();
        var eth = new PD.EthernetPacket(PeerMac, StackMac, PD.EthernetType.IPv4) { PayloadPacket = ip };
        return eth.Bytes;
    }

    public byte[] ArpFrame(PD.ArpOperation op, IPAddress target, PhysicalAddress? to = null, IPAddress? sender = null)
    {
        var arp = new PD.ArpPacket(op, PhysicalAddress.Parse("00-00-00-00-00-00"), target, PeerMac, sender ?? PeerIp);
        var eth = new PD.EthernetPacket(PeerMac, to ?? PhysicalAddress.Parse("FF-FF-FF-FF-FF-FF"), PD.EthernetType.Arp) { PayloadPacket = arp };
        return eth.Bytes;
    }

    public void Dispose()
    {
        Stack.Dispose();
        Link.Dispose();
    }
}
