using Onload.Stack.Wire;
using Onload.Vnic;

namespace Onload.Tests.Wire;

[TestFixture]
public class ChecksumTests
{
    [Test]
    public void Rfc1071_worked_example()
    {
        // RFC 1071 §3: the sum of 00 01 f2 03 f4 f5 f6 f7 is ddf2, so the checksum is its complement.
        byte[] data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        Assert.That(Checksum.FoldToUInt16(Checksum.Add(0, data)), Is.EqualTo(0xddf2));
        Assert.That(Checksum.Compute(data), Is.EqualTo(unchecked((ushort)~0xddf2)));
    }

    [Test]
    public void Matches_a_word_by_word_reference_at_every_length_up_to_3000()
    {
        var random = new SeededRandom(7);
        var data = new byte[3000];
        for (int i = 0; i < data.Length; i++)
            data[i] = (byte)random.NextUInt64();
        for (int length = 0; length <= data.Length; length++)
        {
            uint reference = 0;
            for (int i = 0; i < length; i += 2)
                reference += (uint)(data[i] << 8 | (i + 1 < length ? data[i + 1] : 0));
            while (reference >> 16 != 0)
                reference = (reference & 0xFFFF) + (reference >> 16);
            Assert.That(Checksum.Compute(data.AsSpan(0, length)), Is.EqualTo((ushort)~reference), $"length {length}");
        }
    }

    [Test]
    public void Odd_lengths_pad_with_a_zero_byte()
    {
        byte[] odd = [0x12, 0x34, 0x56];
        byte[] even = [0x12, 0x34, 0x56, 0x00];
        Assert.That(Checksum.Compute(odd), Is.EqualTo(Checksum.Compute(even)));
    }

    [Test]
    public void Incremental_update_matches_a_full_recompute()
    {
        var random = new SeededRandom(99);
        for (int trial = 0; trial < 1000; trial++)
        {
            var data = new byte[2 + 2 * random.Next(50)];
            for (int i = 0; i < data.Length; i++)
                data[i] = (byte)random.NextUInt64();
            ushort before = Checksum.Compute(data);
            int w = 2 * random.Next(data.Length / 2);
            ushort oldWord = (ushort)(data[w] << 8 | data[w + 1]);
            ushort newWord = (ushort)random.NextUInt64();
            data[w] = (byte)(newWord >> 8);
            data[w + 1] = (byte)newWord;
            ushort full = Checksum.Compute(data);
            ushort incremental = Checksum.Update(before, oldWord, newWord);
            // RFC 1624 §3: +0 and -0 are the same one's-complement value; a verifier accepts either.
            Assert.That(incremental == full || (incremental ^ full) == 0xFFFF && (full is 0 or 0xFFFF), Is.True,
                $"trial {trial}: full {full:x4}, incremental {incremental:x4}");
        }
    }

    [Test]
    public void Printer_renders_tcpdump_style_lines_and_survives_garbage()
    {
        using var peer = new RawPeer();
        Assert.That(PacketPrinter.Format(peer.UdpFrame(40000, 7, new byte[5])), Is.EqualTo("IP 10.2.0.1.40000 > 10.2.0.2.7: UDP, length 5"));
        Assert.That(PacketPrinter.Format(peer.EchoRequestFrame(3, 4, new byte[56])), Is.EqualTo("IP 10.2.0.1 > 10.2.0.2: ICMP echo request, id 3, seq 4, length 64"));
        Assert.That(PacketPrinter.Format(peer.ArpFrame(PacketDotNet.ArpOperation.Request, RawPeer.StackIp)), Is.EqualTo("ARP, Request who-has 10.2.0.2 tell 10.2.0.1, length 28"));
        Assert.That(PacketPrinter.Format(new byte[3]), Does.Contain("truncated"));
        Assert.That(PacketPrinter.Format(new byte[40]), Is.Not.Empty);
    }
}
