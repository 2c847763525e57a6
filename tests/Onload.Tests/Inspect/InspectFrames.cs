using System.Net;
using System.Net.NetworkInformation;
using PacketDotNet;
using Onload.Vnic;

namespace Onload.Tests.Inspect;

/// <summary>Frames for the inspection tests, built with PacketDotNet so they owe nothing to the code under test.</summary>
internal static class InspectFrames
{
    public static readonly PhysicalAddress MacA = PhysicalAddress.Parse("02-00-00-00-00-0A");
    public static readonly PhysicalAddress MacB = PhysicalAddress.Parse("02-00-00-00-00-0B");

    public static byte[] Udp(string src, ushort sport, string dst, ushort dport, byte[]? payload = null)
    {
        var udp = new UdpPacket(sport, dport) { PayloadData = payload ?? [1, 2, 3, 4] };
        return Ip(src, dst, udp);
    }

    public static byte[] TcpSyn(string src, ushort sport, string dst, ushort dport)
    {
        var tcp = new TcpPacket(sport, dport) { Synchronize = true, SequenceNumber = 1000, WindowSize = 65535 };
        return Ip(src, dst, tcp);
    }

    /// <summary>An ICMP echo request (type 8), by hand: PacketDotNet has no constructor for one.</summary>
    public static byte[] IcmpEcho(string src, string dst)
    {
        var ip = new IPv4Packet(IPAddress.Parse(src), IPAddress.Parse(dst))
        {
            Protocol = PacketDotNet.ProtocolType.Icmp,
            PayloadData = [8, 0, 0, 0, 0x12, 0x34, 0, 1],
        };
        return Ethernet(ip);
    }

    public static byte[] Arp(string sender, string target)
    {
        var arp = new ArpPacket(ArpOperation.Request, PhysicalAddress.Parse("00-00-00-00-00-00"), IPAddress.Parse(target), MacA, IPAddress.Parse(sender));
        var eth = new EthernetPacket(MacA, PhysicalAddress.Parse("FF-FF-FF-FF-FF-FF"), EthernetType.Arp) { PayloadPacket = arp };
        return eth.Bytes;
    }

    private static byte[] Ip(string src, string dst, TransportPacket l4)
    {
        var ip = new IPv4Packet(IPAddress.Parse(src), IPAddress.Parse(dst)) { PayloadPacket = l4 };
        l4.UpdateCalculatedValues();
        ip.UpdateCalculatedValues();
        return Ethernet(ip);
    }

    private static byte[] Ethernet(IPv4Packet ip)
    {
        ip.UpdateCalculatedValues();
        var eth = new EthernetPacket(MacA, MacB, EthernetType.IPv4) { PayloadPacket = ip };
        return eth.Bytes;
    }

    /// <summary>Copies <paramref name="bytes"/> into a buffer newly taken from <paramref name="pool"/>.</summary>
    public static PacketDescriptor InPool(BufferPool pool, byte[] bytes)
    {
        if (!pool.TryAllocate(out int buffer))
            throw new InvalidOperationException("pool empty");
        bytes.CopyTo(pool.Span(buffer));
        return new PacketDescriptor(buffer, bytes.Length);
    }

    /// <summary>Receives everything waiting on <paramref name="vnic"/>, copies it out and releases the buffers.</summary>
    public static List<byte[]> Drain(IVnic vnic)
    {
        var into = new List<byte[]>();
        var batch = new PacketDescriptor[32];
        int n;
        while ((n = vnic.Receive(batch)) > 0)
            for (int i = 0; i < n; i++)
            {
                into.Add(vnic.Buffers.Span(batch[i]).ToArray());
                vnic.Buffers.Release(batch[i].Buffer);
            }
        return into;
    }

    /// <summary>The UDP destination port of a frame, read with PacketDotNet; -1 when it carries no UDP.</summary>
    public static int UdpDestinationPort(byte[] frame) =>
        Packet.ParsePacket(LinkLayers.Ethernet, frame).Extract<UdpPacket>() is { } udp ? udp.DestinationPort : -1;
}
