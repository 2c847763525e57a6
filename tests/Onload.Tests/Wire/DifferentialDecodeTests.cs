using System.Buffers.Binary;
using System.Net;
using Onload.Stack;
using Onload.Stack.Wire;
using Onload.Vnic;
using PD = PacketDotNet;

namespace Onload.Tests.Wire;

/// <summary>
/// A differential check of the receive path: frames mutated in their headers (checksums then made right, so most
/// get past them) go to the stack, and every one it accepts must read the same in PacketDotNet, an independent
/// decoder: a datagram delivered with the sender, ports and payload PacketDotNet sees in a valid IPv4/UDP packet, a
/// SYN answered only when PacketDotNet sees a valid TCP SYN to the listener's port.
/// </summary>
[TestFixture]
[Category("hostile")]
public class DifferentialDecodeTests
{
    private const ushort UdpPort = 9;
    private const ushort TcpPort = 80;

    /// <summary>Flips 1–4 bytes of the IPv4 and transport headers (or sometimes the payload), sometimes cuts or pads
    /// the frame, and three times in four makes the IPv4 and transport checksums right again (computed here from
    /// RFC 1071, not by the stack's code).</summary>
    private static byte[] Mutate(byte[] seed, SeededRandom random)
    {
        var f = (byte[])seed.Clone();
        int headers = Math.Min(f.Length, 14 + 20 + 20);
        int flips = 1 + random.Next(4);
        for (int k = 0; k < flips; k++)
        {
            int at = random.Next(8) == 0 ? random.Next(f.Length) : 14 + random.Next(headers - 14);
            f[at] = random.Next(2) == 0 ? (byte)random.NextUInt64() : (byte)(f[at] ^ (1 << random.Next(8)));
        }
        if (random.Next(8) == 0)
            f = f[..Math.Max(14, f.Length - random.Next(16))];
        else if (random.Next(8) == 0)
            f = [.. f, .. new byte[random.Next(16)]]; // Ethernet padding past the IP total length
        if (random.Next(4) != 0)
            FixChecksums(f);
        return f;
    }

    private static ushort OnesComplement(ReadOnlySpan<byte> data, uint sum = 0)
    {
        for (int i = 0; i + 1 < data.Length; i += 2)
            sum += BinaryPrimitives.ReadUInt16BigEndian(data[i..]);
        if (data.Length % 2 == 1)
            sum += (uint)data[^1] << 8;
        while (sum > 0xffff)
            sum = (sum & 0xffff) + (sum >> 16);
        return (ushort)~sum;
    }

    private static void FixChecksums(byte[] f)
    {
        if (f.Length < 34)
            return;
        var ip = f.AsSpan(14);
        int ihl = (ip[0] & 0xf) * 4;
        if (ihl < 20 || ihl > ip.Length)
            return;
        ip[10] = ip[11] = 0;
        BinaryPrimitives.WriteUInt16BigEndian(ip[10..], OnesComplement(ip[..ihl]));
        int total = Math.Min(BinaryPrimitives.ReadUInt16BigEndian(ip[2..]), ip.Length);
        if (total <= ihl)
            return;
        var l4 = ip[ihl..total];
        int field = ip[9] switch { 17 => 6, 6 => 16, _ => -1 };
        if (field < 0 || l4.Length < field + 2)
            return;
        l4[field] = l4[field + 1] = 0;
        uint pseudo = (uint)(BinaryPrimitives.ReadUInt16BigEndian(ip[12..]) + BinaryPrimitives.ReadUInt16BigEndian(ip[14..]) +
            BinaryPrimitives.ReadUInt16BigEndian(ip[16..]) + BinaryPrimitives.ReadUInt16BigEndian(ip[18..]) + ip[9] + l4.Length);
        ushort c = OnesComplement(l4, pseudo);
        BinaryPrimitives.WriteUInt16BigEndian(l4[field..], ip[9] == 17 && c == 0 ? (ushort)0xffff : c);
    }

    private static bool UdpChecksumHolds(byte[] f, int ihl, ReadOnlySpan<byte> datagram)
    {
        var ip = f.AsSpan(14);
        uint pseudo = (uint)(BinaryPrimitives.ReadUInt16BigEndian(ip[12..]) + BinaryPrimitives.ReadUInt16BigEndian(ip[14..]) +
            BinaryPrimitives.ReadUInt16BigEndian(ip[16..]) + BinaryPrimitives.ReadUInt16BigEndian(ip[18..]) + 17 + datagram.Length);
        return OnesComplement(datagram, pseudo) == 0;
    }

    [Test]
    public void Every_datagram_the_stack_delivers_from_mutated_frames_reads_the_same_in_PacketDotNet()
    {
        using var peer = new RawPeer();
        int s = peer.Stack.UdpOpen();
        peer.Stack.UdpBind(s, new Ipv4Endpoint(Ipv4Address.Any, UdpPort));
        var random = new SeededRandom(2026);
        var seeds = new[] { 0, 1, 100, 1472 }.Select(n => peer.UdpFrame(40000, UdpPort, Enumerable.Range(0, n).Select(i => (byte)i).ToArray())).ToArray();
        var buf = new byte[2048];
        int delivered = 0;
        for (int i = 0; i < 20_000; i++)
        {
            var f = Mutate(seeds[i % seeds.Length], random);
            peer.Inject(f);
            int n;
            while ((n = peer.Stack.UdpReceiveFrom(s, buf, out var from)) >= 0)
            {
                delivered++;
                var packet = PD.Packet.ParsePacket(PD.LinkLayers.Ethernet, f);
                var ip = packet.Extract<PD.IPv4Packet>();
                var udp = packet.Extract<PD.UdpPacket>();
                string frame = Convert.ToHexString(f);
                Assert.That(ip, Is.Not.Null, frame);
                Assert.That(udp, Is.Not.Null, frame);
                Assert.That(ip.ValidIPChecksum, Is.True, $"IPv4 header checksum: {frame}");
                Assert.That(ip.FragmentOffset == 0 && (ip.FragmentFlags & 1) == 0, Is.True, $"not a fragment: {frame}");
                Assert.That(ip.DestinationAddress, Is.EqualTo(RawPeer.StackIp), frame);
                Assert.That(new IPAddress(BinaryPrimitives.ReverseEndianness(from.Address.Value)), Is.EqualTo(ip.SourceAddress), frame);
                Assert.That((from.Port, udp.DestinationPort), Is.EqualTo((udp.SourcePort, UdpPort)), frame);
                // RFC 768: the datagram is what the UDP length says, whatever padding follows; its checksum (checked
                // here, as PacketDotNet's own check throws on some payloads) covers exactly that.
                int ihl = (f[14] & 0xf) * 4;
                var datagram = f.AsSpan(14 + ihl, udp.Length);
                Assert.That(udp.Checksum == 0 || UdpChecksumHolds(f, ihl, datagram), Is.True, $"UDP checksum: {frame}");
                Assert.That(buf[..n], Is.EqualTo(datagram[8..].ToArray()), $"payload: {frame}");
            }
            peer.Received();
        }
        TestContext.Out.WriteLine($"{delivered} of 20,000 mutated frames delivered, each read the same by PacketDotNet");
        Assert.That(delivered, Is.GreaterThan(1000), "enough mutations got through for the comparison to mean something");
    }

    [Test]
    public void Every_syn_the_stack_answers_from_mutated_frames_is_a_valid_syn_to_the_listener_in_PacketDotNet()
    {
        using var peer = new RawPeer(tweak: o => o with { TcpSynAckRetries = 0 }); // no SYN-ACK of an earlier round again
        int l = peer.Stack.TcpOpen();
        peer.Stack.TcpBind(l, new Ipv4Endpoint(Ipv4Address.Any, TcpPort));
        peer.Stack.TcpListen(l, 1024);
        var random = new SeededRandom(2027);
        byte[] options = [2, 4, 0x05, 0xb4, 4, 2, 1, 3, 3, 7];
        int answered = 0;
        for (int i = 0; i < 10_000; i++)
        {
            var seed = peer.TcpFrame((ushort)(20000 + i), TcpPort, (uint)i * 7919, 0, TcpFlags.Syn, 65535, [.. options, 0, 0], null);
            var f = Mutate(seed, random);
            peer.Inject(f);
            int ihl = f.Length > 14 ? (f[14] & 0xf) * 4 : 0;
            bool hasPorts = ihl >= 20 && f.Length >= 14 + ihl + 8;
            ushort sourcePort = hasPorts ? BinaryPrimitives.ReadUInt16BigEndian(f.AsSpan(14 + ihl)) : (ushort)0;
            uint sequence = hasPorts ? BinaryPrimitives.ReadUInt32BigEndian(f.AsSpan(14 + ihl + 4)) : 0;
            foreach (var reply in Tcp.TcpScript.ReceivedAnsweringArp(peer, 1_000_000))
            {
                var answer = PD.Packet.ParsePacket(PD.LinkLayers.Ethernet, reply).Extract<PD.TcpPacket>();
                // A SYN-ACK to this frame's port and sequence number: the stack took this frame as a SYN.
                if (answer is not { Synchronize: true, Acknowledgment: true } || !hasPorts ||
                    answer.DestinationPort != sourcePort || answer.AcknowledgmentNumber != sequence + 1)
                    continue;
                answered++;
                var packet = PD.Packet.ParsePacket(PD.LinkLayers.Ethernet, f);
                var ip = packet.Extract<PD.IPv4Packet>();
                var tcp = packet.Extract<PD.TcpPacket>();
                string frame = Convert.ToHexString(f);
                Assert.That(ip is not null && tcp is not null, Is.True, frame);
                Assert.That(ip!.ValidIPChecksum && tcp!.ValidTcpChecksum, Is.True, $"checksums: {frame}");
                Assert.That(tcp!.Synchronize && !tcp.Acknowledgment && !tcp.Reset && !tcp.Finished, Is.True, $"a plain SYN: {frame}");
                Assert.That(tcp!.DestinationPort, Is.EqualTo(TcpPort), frame);
                Assert.That((answer.DestinationPort, answer.AcknowledgmentNumber), Is.EqualTo((tcp.SourcePort, tcp.SequenceNumber + 1)),
                    $"the SYN-ACK answers that SYN: {frame}");
            }
            while (peer.Stack.TcpAccept(l, out _) is var c and >= 0)
                peer.Stack.TcpClose(c);
        }
        TestContext.Out.WriteLine($"{answered} of 10,000 mutated SYNs answered, each a valid SYN in PacketDotNet");
        Assert.That(answered, Is.GreaterThan(1000), "enough mutations got through for the comparison to mean something");
    }
}
