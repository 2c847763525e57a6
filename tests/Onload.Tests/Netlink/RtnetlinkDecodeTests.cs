using System.Buffers.Binary;
using Onload.Vnic;
using Onload.Vnic.Netlink;

namespace Onload.Tests.Netlink;

/// <summary>The decoder against messages built by hand, as the kernel lays them out; and against garbage.</summary>
public class RtnetlinkDecodeTests
{
    // uapi/linux/rtnetlink.h and friends, written out again here so a wrong value in the library shows.
    private const ushort RTM_NEWLINK = 16, RTM_NEWADDR = 20, RTM_NEWROUTE = 24, RTM_NEWNEIGH = 28;
    private const ushort IFLA_ADDRESS = 1, IFLA_IFNAME = 3, IFLA_MTU = 4;
    private const ushort IFA_ADDRESS = 1, IFA_LOCAL = 2;
    private const ushort RTA_DST = 1, RTA_OIF = 4, RTA_GATEWAY = 5, RTA_TABLE = 15;
    private const ushort NDA_DST = 1, NDA_LLADDR = 2;
    private const byte AF_INET = 2;

    /// <summary>A datagram holding one link, one address, one route and one neighbour.</summary>
    internal static byte[] SampleDatagram()
    {
        var buffer = new byte[1024];
        var w = new NetlinkWriter(buffer);

        w.BeginMessage(RTM_NEWLINK, 0, 1);
        var ifinfo = w.Reserve(16);
        BinaryPrimitives.WriteInt32LittleEndian(ifinfo[4..], 7);
        BinaryPrimitives.WriteUInt32LittleEndian(ifinfo[8..], 0x1 | 0x40); // IFF_UP | IFF_RUNNING
        w.Attribute(IFLA_IFNAME, "veth7\0"u8);
        w.AttributeUInt32(IFLA_MTU, 1400);
        w.Attribute(IFLA_ADDRESS, [0x02, 0x11, 0x22, 0x33, 0x44, 0x55]);
        w.EndMessage();

        w.BeginMessage(RTM_NEWADDR, 0, 1);
        var ifaddr = w.Reserve(8);
        ifaddr[0] = AF_INET;
        ifaddr[1] = 24;
        BinaryPrimitives.WriteInt32LittleEndian(ifaddr[4..], 7);
        w.AttributeIpv4(IFA_ADDRESS, 0x0A000001);
        w.AttributeIpv4(IFA_LOCAL, 0x0A000001);
        w.EndMessage();

        w.BeginMessage(RTM_NEWROUTE, 0, 1);
        var rtmsg = w.Reserve(12);
        rtmsg[0] = AF_INET;
        rtmsg[1] = 16;
        rtmsg[4] = 254;
        rtmsg[7] = 1;
        w.AttributeUInt32(RTA_TABLE, 254);
        w.AttributeIpv4(RTA_DST, 0xC0A80000);
        w.AttributeIpv4(RTA_GATEWAY, 0x0A000002);
        w.AttributeUInt32(RTA_OIF, 7);
        w.EndMessage();

        w.BeginMessage(RTM_NEWNEIGH, 0, 1);
        var ndmsg = w.Reserve(12);
        ndmsg[0] = AF_INET;
        BinaryPrimitives.WriteInt32LittleEndian(ndmsg[4..], 7);
        BinaryPrimitives.WriteUInt16LittleEndian(ndmsg[8..], 0x80); // NUD_PERMANENT
        w.AttributeIpv4(NDA_DST, 0x0A000002);
        w.Attribute(NDA_LLADDR, [0x02, 0, 0, 0, 0, 0x42]);
        w.EndMessage();

        return w.Written.ToArray();
    }

    [Test]
    public void A_datagram_of_each_kind_decodes_into_its_records()
    {
        var objects = new List<RtnetlinkObject>();
        int malformed = Rtnetlink.DecodeAll(SampleDatagram(), objects);

        Assert.That(malformed, Is.Zero);
        Assert.That(objects, Is.EqualTo(new RtnetlinkObject[]
        {
            new Link(7, "veth7", 0x41, 1400, MacAddress.Parse("02:11:22:33:44:55")),
            new Address(7, 0x0A000001, 24),
            new Route(0xC0A80000, 16, 0x0A000002, 7, 254, 1, 0),
            new Neighbour(7, 0x0A000002, MacAddress.Parse("02:00:00:00:00:42"), NeighbourState.Permanent),
        }));
    }

    [Test]
    public void A_length_past_the_datagram_drops_the_rest_and_counts_one()
    {
        var d = SampleDatagram();
        BinaryPrimitives.WriteUInt32LittleEndian(d, (uint)d.Length + 4);
        var objects = new List<RtnetlinkObject>();

        Assert.That(Rtnetlink.DecodeAll(d, objects), Is.EqualTo(1));
        Assert.That(objects, Is.Empty);
    }

    [Test]
    public void An_attribute_overrunning_its_message_skips_that_message_only()
    {
        var d = SampleDatagram();
        // The link's first attribute (IFLA_IFNAME) follows the 16-byte nlmsghdr and 16-byte ifinfomsg.
        BinaryPrimitives.WriteUInt16LittleEndian(d.AsSpan(32), 200);
        var objects = new List<RtnetlinkObject>();

        Assert.That(Rtnetlink.DecodeAll(d, objects), Is.EqualTo(1));
        Assert.That(objects.Select(o => o.GetType()), Is.EqualTo(new[] { typeof(Address), typeof(Route), typeof(Neighbour) }));
    }

    [Test]
    public void A_truncated_datagram_keeps_the_whole_messages_before_the_cut()
    {
        var d = SampleDatagram();
        var objects = new List<RtnetlinkObject>();
        int firstLength = BinaryPrimitives.ReadInt32LittleEndian(d);

        Assert.That(Rtnetlink.DecodeAll(d.AsSpan(0, firstLength + 10), objects), Is.EqualTo(1));
        Assert.That(objects.Single(), Is.TypeOf<Link>());
    }

    [Test]
    public void Random_and_mutated_datagrams_never_throw()
    {
        var random = new Random(6);
        var sample = SampleDatagram();
        var objects = new List<RtnetlinkObject>();
        var buffer = new byte[sample.Length + 64];
        for (int i = 0; i < 200_000; i++)
        {
            int length;
            if (i % 4 == 0)
            {
                // Pure noise, with a plausible first length now and then.
                length = random.Next(buffer.Length);
                random.NextBytes(buffer.AsSpan(0, length));
                if (length >= 4 && random.Next(2) == 0)
                    BinaryPrimitives.WriteUInt32LittleEndian(buffer, (uint)random.Next(length + 8));
            }
            else
            {
                // The sample with a few bytes changed, lengths bent, and maybe cut short.
                sample.CopyTo(buffer, 0);
                length = random.Next(2) == 0 ? sample.Length : random.Next(sample.Length + 1);
                for (int flips = random.Next(1, 5); flips > 0; flips--)
                {
                    int at = random.Next(sample.Length);
                    buffer[at] = random.Next(3) switch
                    {
                        0 => (byte)random.Next(256),
                        1 => (byte)(buffer[at] + random.Next(-4, 5)),
                        _ => 0xFF,
                    };
                }
            }
            objects.Clear();
            int malformed = Rtnetlink.DecodeAll(buffer.AsSpan(0, length), objects);
            Assert.That(malformed, Is.GreaterThanOrEqualTo(0));
            foreach (var o in objects)
                _ = o.ToString();
        }
    }
}
