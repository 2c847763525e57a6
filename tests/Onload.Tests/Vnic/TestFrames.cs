using System.Buffers.Binary;
using System.Net;
using Onload.Vnic;

namespace Onload.Tests.Vnic;

/// <summary>
/// Frames for the backend tests, built and read by hand at fixed offsets so they depend on nothing from the
/// stack: Ethernet + ARP for IPv4 (RFC 826; 42 bytes, unpadded: veth and tap carry short frames), a check for
/// ICMP echo requests, and draining a VNIC into byte arrays.
/// </summary>
internal static class TestFrames
{
    public const int Length = 42;
    public const ushort EtherTypeArp = 0x0806;
    public const ushort EtherTypeIpv4 = 0x0800;
    public const ushort Request = 1;
    public const ushort Reply = 2;

    /// <summary>Writes an ARP frame into <paramref name="frame"/>; returns its length.</summary>
    public static int Write(Span<byte> frame, MacAddress ethDst, MacAddress ethSrc, ushort operation,
        MacAddress senderMac, IPAddress senderIp, MacAddress targetMac, IPAddress targetIp)
    {
        ethDst.Write(frame[0..6]);
        ethSrc.Write(frame[6..12]);
        BinaryPrimitives.WriteUInt16BigEndian(frame[12..], EtherTypeArp);
        BinaryPrimitives.WriteUInt16BigEndian(frame[14..], 1);      // htype: Ethernet
        BinaryPrimitives.WriteUInt16BigEndian(frame[16..], 0x0800); // ptype: IPv4
        frame[18] = 6;                                              // hlen
        frame[19] = 4;                                              // plen
        BinaryPrimitives.WriteUInt16BigEndian(frame[20..], operation);
        senderMac.Write(frame[22..28]);
        senderIp.TryWriteBytes(frame[28..32], out _);
        targetMac.Write(frame[32..38]);
        targetIp.TryWriteBytes(frame[38..42], out _);
        return Length;
    }

    public static ushort EtherType(ReadOnlySpan<byte> frame) => BinaryPrimitives.ReadUInt16BigEndian(frame[12..]);
    public static MacAddress EthDst(ReadOnlySpan<byte> frame) => MacAddress.Read(frame[0..6]);
    public static MacAddress EthSrc(ReadOnlySpan<byte> frame) => MacAddress.Read(frame[6..12]);

    public static bool IsArp(ReadOnlySpan<byte> frame) => frame.Length >= Length && EtherType(frame) == EtherTypeArp;
    public static ushort Operation(ReadOnlySpan<byte> frame) => BinaryPrimitives.ReadUInt16BigEndian(frame[20..]);
    public static MacAddress SenderMac(ReadOnlySpan<byte> frame) => MacAddress.Read(frame[22..28]);
    public static IPAddress SenderIp(ReadOnlySpan<byte> frame) => new(frame[28..32]);
    public static MacAddress TargetMac(ReadOnlySpan<byte> frame) => MacAddress.Read(frame[32..38]);
    public static IPAddress TargetIp(ReadOnlySpan<byte> frame) => new(frame[38..42]);

    /// <summary>An IPv4 ICMP echo request (type 8) addressed to <paramref name="to"/>.</summary>
    public static bool IsIcmpEchoRequestTo(ReadOnlySpan<byte> frame, IPAddress to)
    {
        if (frame.Length < 14 + 20 + 8 || EtherType(frame) != EtherTypeIpv4)
            return false;
        int ihl = (frame[14] & 0x0f) * 4;
        return frame[14 + 9] == 1 && new IPAddress(frame[30..34]).Equals(to) && frame.Length > 14 + ihl && frame[14 + ihl] == 8;
    }

    /// <summary>Builds a frame in a newly allocated pool buffer, ready to Transmit.</summary>
    public static PacketDescriptor InPool(BufferPool pool, byte[] bytes)
    {
        if (!pool.TryAllocate(out int buffer))
            throw new InvalidOperationException("pool empty");
        bytes.CopyTo(pool.Span(buffer));
        return new PacketDescriptor(buffer, bytes.Length);
    }

    public static byte[] Build(MacAddress ethDst, MacAddress ethSrc, ushort operation,
        MacAddress senderMac, IPAddress senderIp, MacAddress targetMac, IPAddress targetIp)
    {
        var b = new byte[Length];
        Write(b, ethDst, ethSrc, operation, senderMac, senderIp, targetMac, targetIp);
        return b;
    }

    /// <summary>Receives whatever is waiting, appends copies to <paramref name="into"/>, releases the buffers;
    /// returns how many frames came.</summary>
    public static int Drain(IVnic vnic, List<byte[]> into)
    {
        Span<PacketDescriptor> batch = stackalloc PacketDescriptor[32];
        int total = 0;
        int n;
        while ((n = vnic.Receive(batch)) > 0)
        {
            for (int i = 0; i < n; i++)
            {
                into.Add(vnic.Buffers.Span(batch[i]).ToArray());
                vnic.Buffers.Release(batch[i].Buffer);
            }
            total += n;
        }
        return total;
    }

    /// <summary>Sends ARP requests for <paramref name="theirs"/> from the VNIC until the reply comes (resending now and
    /// then, in case the first went out before the link was ready); returns the reply.</summary>
    public static byte[] ArpExchange(IVnic vnic, System.Net.IPAddress ours, System.Net.IPAddress theirs, TimeSpan deadline)
    {
        var request = Build(MacAddress.Broadcast, vnic.MacAddress, Request, vnic.MacAddress, ours, MacAddress.Zero, theirs);
        var received = new List<byte[]>();
        byte[]? reply = null;
        var lastSend = DateTime.MinValue;
        Onload.Tests.Netns.Poll.Until(() =>
        {
            if (DateTime.UtcNow - lastSend > TimeSpan.FromMilliseconds(500))
            {
                Assert.That(vnic.Transmit([InPool(vnic.Buffers, request)]), Is.EqualTo(1));
                lastSend = DateTime.UtcNow;
            }
            Drain(vnic, received);
            reply = received.Find(f => IsArp(f) && Operation(f) == Reply);
            return reply is not null;
        }, deadline, $"the ARP reply for {theirs}");
        return reply!;
    }
}
