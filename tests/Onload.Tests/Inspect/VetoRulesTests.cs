using Onload.Vnic;
using Onload.Vnic.Inspect;
using static Onload.Tests.Inspect.InspectFrames;

namespace Onload.Tests.Inspect;

[TestFixture]
public sealed class VetoRulesTests
{
    private const FrameDirection Rx = FrameDirection.Receive;
    private const FrameDirection Tx = FrameDirection.Transmit;

    [Test]
    public void The_issue_example_parses_into_four_rules_in_order()
    {
        var rules = VetoRules.Parse("drop rx udp dport 7001; drop tx tcp sport 8080; drop any icmp; drop rx host 10.0.0.9");
        Assert.That(rules.Rules.Select(r => r.ToString()), Is.EqualTo(new[]
        {
            "drop rx udp dport 7001", "drop tx tcp sport 8080", "drop any icmp", "drop rx host 10.0.0.9",
        }));
        Assert.That(VetoRules.Parse(rules.ToString()).ToString(), Is.EqualTo(rules.ToString()), "ToString parses back to itself");
    }

    [Test]
    public void Clauses_come_in_any_order_and_any_case_and_empty_rules_are_ignored()
    {
        var rules = VetoRules.Parse("  ;DROP  Host 10.1.2.3 UDP RX port 53;;pass;  ");
        Assert.That(rules.Rules.Select(r => r.ToString()), Is.EqualTo(new[] { "drop rx udp port 53 host 10.1.2.3", "pass any" }));
        Assert.That(VetoRules.Parse("").Rules, Is.Empty);
    }

    [TestCase("drop rx udp dport 7001", Rx, "10.0.0.1", 5000, "10.0.0.2", 7001, ExpectedResult = FrameVerdict.Drop)]
    [TestCase("drop rx udp dport 7001", Tx, "10.0.0.1", 5000, "10.0.0.2", 7001, ExpectedResult = FrameVerdict.Pass)]
    [TestCase("drop rx udp dport 7001", Rx, "10.0.0.1", 7001, "10.0.0.2", 5000, ExpectedResult = FrameVerdict.Pass)]
    [TestCase("drop udp sport 7001", Tx, "10.0.0.1", 7001, "10.0.0.2", 5000, ExpectedResult = FrameVerdict.Drop)]
    [TestCase("drop port 7001", Rx, "10.0.0.1", 7001, "10.0.0.2", 5000, ExpectedResult = FrameVerdict.Drop)]
    [TestCase("drop port 7001", Rx, "10.0.0.1", 5000, "10.0.0.2", 7001, ExpectedResult = FrameVerdict.Drop)]
    [TestCase("drop tcp port 7001", Rx, "10.0.0.1", 5000, "10.0.0.2", 7001, ExpectedResult = FrameVerdict.Pass)]
    [TestCase("drop host 10.0.0.2", Rx, "10.0.0.1", 1, "10.0.0.2", 2, ExpectedResult = FrameVerdict.Drop)]
    [TestCase("drop host 10.0.0.2", Rx, "10.0.0.2", 1, "10.0.0.3", 2, ExpectedResult = FrameVerdict.Drop)]
    [TestCase("drop host 10.0.0.9", Rx, "10.0.0.1", 1, "10.0.0.2", 2, ExpectedResult = FrameVerdict.Pass)]
    [TestCase("drop ip", Tx, "10.0.0.1", 1, "10.0.0.2", 2, ExpectedResult = FrameVerdict.Drop)]
    [TestCase("drop icmp", Tx, "10.0.0.1", 1, "10.0.0.2", 2, ExpectedResult = FrameVerdict.Pass)]
    [TestCase("pass udp dport 53; drop udp", Rx, "10.0.0.1", 1, "10.0.0.2", 53, ExpectedResult = FrameVerdict.Pass)]
    [TestCase("pass udp dport 53; drop udp", Rx, "10.0.0.1", 1, "10.0.0.2", 54, ExpectedResult = FrameVerdict.Drop)]
    public FrameVerdict A_UDP_datagram_meets_the_first_rule_that_matches(string text, FrameDirection direction, string src, int sport, string dst, int dport) =>
        VetoRules.Parse(text).Inspect(direction, Udp(src, (ushort)sport, dst, (ushort)dport), 0);

    [Test]
    public void Protocol_clauses_tell_tcp_udp_icmp_arp_and_ip_apart()
    {
        byte[] tcp = TcpSyn("10.0.0.1", 1, "10.0.0.2", 2);
        byte[] udp = Udp("10.0.0.1", 1, "10.0.0.2", 2);
        byte[] icmp = IcmpEcho("10.0.0.1", "10.0.0.2");
        byte[] arp = Arp("10.0.0.1", "10.0.0.2");
        string Dropped(string rule) => string.Join(",", new[] { ("tcp", tcp), ("udp", udp), ("icmp", icmp), ("arp", arp) }
            .Where(f => VetoRules.Parse(rule).Inspect(Rx, f.Item2, 0) == FrameVerdict.Drop).Select(f => f.Item1));
        Assert.Multiple(() =>
        {
            Assert.That(Dropped("drop tcp"), Is.EqualTo("tcp"));
            Assert.That(Dropped("drop udp"), Is.EqualTo("udp"));
            Assert.That(Dropped("drop any icmp"), Is.EqualTo("icmp"));
            Assert.That(Dropped("drop arp"), Is.EqualTo("arp"));
            Assert.That(Dropped("drop ip"), Is.EqualTo("tcp,udp,icmp"));
            Assert.That(Dropped("drop rx"), Is.EqualTo("tcp,udp,icmp,arp"));
            Assert.That(Dropped("drop port 2"), Is.EqualTo("tcp,udp"));
            Assert.That(Dropped("drop host 10.0.0.2"), Is.EqualTo("tcp,udp,icmp,arp"), "an ARP's target address counts");
        });
    }

    [Test]
    public void Each_rule_counts_the_frames_it_decided()
    {
        var rules = VetoRules.Parse("pass udp dport 53; drop udp; drop any icmp");
        foreach (int port in new[] { 53, 53, 54 })
            rules.Inspect(Rx, Udp("10.0.0.1", 1, "10.0.0.2", (ushort)port), 0);
        rules.Inspect(Tx, TcpSyn("10.0.0.1", 1, "10.0.0.2", 2), 0);
        Assert.That(rules.Rules.Select(r => r.Hits), Is.EqualTo(new long[] { 2, 1, 0 }));
        Assert.That(rules.Dropped, Is.EqualTo(1));
    }

    [TestCase("block rx", "block", 0)]
    [TestCase("drop rx udp dprt 7001", "dprt", 12)]
    [TestCase("drop rx; drop tx tx", "tx", 17)]
    [TestCase("drop udp tcp", "tcp", 9)]
    [TestCase("drop udp dport 70000", "70000", 15)]
    [TestCase("drop udp dport -1", "-1", 15)]
    [TestCase("drop udp dport x", "x", 15)]
    [TestCase("drop udp dport 1 dport 2", "dport", 17)]
    [TestCase("drop host 10.0.0", "10.0.0", 10)]
    [TestCase("drop host 10.0.0.256", "10.0.0.256", 10)]
    [TestCase("drop host 1.2.3.4.5", "1.2.3.4.5", 10)]
    [TestCase("drop icmp port 7", "port", 10)]
    [TestCase("drop arp sport 7", "sport", 9)]
    [TestCase("drop udp dport;", "dport", 9)]
    [TestCase("drop host", "host", 5)]
    [TestCase("rx drop", "rx", 0)]
    public void Malformed_rules_are_refused_naming_the_token_and_its_position(string text, string token, int position)
    {
        var e = Assert.Throws<FormatException>(() => VetoRules.Parse(text))!;
        Assert.That(e.Message, Does.Contain($"'{token}'"));
        Assert.That(e.Message, Does.Contain($"position {position}"));
    }

    [Test]
    public void Hostile_and_short_frames_never_throw_they_just_match_less()
    {
        var rules = VetoRules.Parse("pass tx; drop rx udp dport 7001; drop tcp sport 80; drop host 10.0.0.9; drop arp host 1.2.3.4; drop icmp");
        var random = new Random(6);
        var frame = new byte[128];
        for (int i = 0; i < 100_000; i++)
        {
            random.NextBytes(frame);
            // Half the time make it look like IPv4 or ARP, so the parsing goes deeper than the EtherType.
            if ((i & 1) == 0)
            {
                frame[12] = 0x08;
                frame[13] = (byte)((i & 2) == 0 ? 0x00 : 0x06);
                frame[14] = (byte)(0x40 | (frame[14] & 0x0f));
            }
            int length = random.Next(frame.Length + 1);
            Assert.DoesNotThrow(() => rules.Inspect(Rx, frame.AsSpan(0, length), 0));
        }

        // Every truncation of a real datagram: the port clause stops matching once the ports are cut off.
        byte[] udp = Udp("10.0.0.1", 5000, "10.0.0.2", 7001);
        var one = VetoRules.Parse("drop rx udp dport 7001");
        for (int length = 0; length <= udp.Length; length++)
        {
            var verdict = one.Inspect(Rx, udp.AsSpan(0, length), 0);
            Assert.That(verdict, Is.EqualTo(length >= 14 + 20 + 4 ? FrameVerdict.Drop : FrameVerdict.Pass), $"length {length}");
        }
    }

    [Test]
    public void A_later_fragment_has_no_ports_to_match()
    {
        byte[] udp = Udp("10.0.0.1", 5000, "10.0.0.2", 7001);
        udp[14 + 6] = 0x00;
        udp[14 + 7] = 0x10; // fragment offset 16 (x 8 bytes): the bytes where ports would be are data
        Assert.That(VetoRules.Parse("drop udp dport 7001").Inspect(Rx, udp, 0), Is.EqualTo(FrameVerdict.Pass));
        Assert.That(VetoRules.Parse("drop udp host 10.0.0.2").Inspect(Rx, udp, 0), Is.EqualTo(FrameVerdict.Drop));
    }
}
