using System.Buffers.Binary;
using System.Diagnostics;
using PacketDotNet;
using Onload.Vnic;
using Onload.Vnic.Inspect;
using static Onload.Tests.Inspect.InspectFrames;

namespace Onload.Tests.Inspect;

[TestFixture]
public sealed class PcapWriterTests
{
    // 1,735,787,045.123456789 s after the epoch: early January 2025.
    private const long WallStartNs = 1_735_787_045_123_456_789;
    private string _dir = null!;

    [SetUp]
    public void Directory_() => _dir = Directory.CreateTempSubdirectory("onload-pcap-").FullName;

    [TearDown]
    public void Remove() => Directory.Delete(_dir, recursive: true);

    [Test]
    public void The_file_is_classic_pcap_read_by_hand_header_and_records_with_wall_clock_microseconds()
    {
        var clock = new VirtualClock();
        clock.Advance(5_000_000_000); // a monotonic clock is not at zero when the capture starts
        var stream = new MemoryStream();
        byte[] first = Udp("10.0.0.1", 1234, "10.0.0.2", 7, [0xde, 0xad]);
        byte[] second = TcpSyn("10.0.0.2", 80, "10.0.0.1", 40000);
        using (var w = new PcapWriter(stream, ownsStream: false, clock: clock, wallClockAtStartNs: WallStartNs))
        {
            w.Inspect(FrameDirection.Receive, first, clock.NowNanoseconds + 1_500);
            w.Inspect(FrameDirection.Transmit, second, clock.NowNanoseconds + 2_000_000_000);
        }
        byte[] f = stream.ToArray();

        Assert.Multiple(() =>
        {
            Assert.That(BinaryPrimitives.ReadUInt32LittleEndian(f), Is.EqualTo(0xa1b2c3d4u), "magic, microseconds");
            Assert.That(BinaryPrimitives.ReadUInt16LittleEndian(f.AsSpan(4)), Is.EqualTo(2));
            Assert.That(BinaryPrimitives.ReadUInt16LittleEndian(f.AsSpan(6)), Is.EqualTo(4));
            Assert.That(BinaryPrimitives.ReadUInt32LittleEndian(f.AsSpan(16)), Is.EqualTo(65535u), "snaplen");
            Assert.That(BinaryPrimitives.ReadUInt32LittleEndian(f.AsSpan(20)), Is.EqualTo(1u), "LINKTYPE_ETHERNET");

            int r = 24;
            Assert.That(BinaryPrimitives.ReadUInt32LittleEndian(f.AsSpan(r)), Is.EqualTo(1_735_787_045u));
            Assert.That(BinaryPrimitives.ReadUInt32LittleEndian(f.AsSpan(r + 4)), Is.EqualTo(123_458u), "123,456,789 ns + 1,500 ns, cut to µs");
            Assert.That(BinaryPrimitives.ReadUInt32LittleEndian(f.AsSpan(r + 8)), Is.EqualTo((uint)first.Length));
            Assert.That(BinaryPrimitives.ReadUInt32LittleEndian(f.AsSpan(r + 12)), Is.EqualTo((uint)first.Length));
            Assert.That(f.AsSpan(r + 16, first.Length).ToArray(), Is.EqualTo(first));

            r += 16 + first.Length;
            Assert.That(BinaryPrimitives.ReadUInt32LittleEndian(f.AsSpan(r)), Is.EqualTo(1_735_787_047u));
            Assert.That(BinaryPrimitives.ReadUInt32LittleEndian(f.AsSpan(r + 4)), Is.EqualTo(123_456u));
            Assert.That(f.AsSpan(r + 16).ToArray(), Is.EqualTo(second));
        });

        var udp = Packet.ParsePacket(LinkLayers.Ethernet, f.AsSpan(24 + 16, first.Length).ToArray()).Extract<UdpPacket>();
        Assert.That((udp.SourcePort, udp.DestinationPort, udp.PayloadData), Is.EqualTo((1234, 7, new byte[] { 0xde, 0xad })));
    }

    [Test]
    public void Nanosecond_files_carry_the_other_magic_and_every_nanosecond()
    {
        var clock = new VirtualClock();
        var stream = new MemoryStream();
        using (var w = new PcapWriter(stream, false, new PcapWriterOptions { Nanosecond = true }, clock, WallStartNs))
            w.Inspect(FrameDirection.Receive, Udp("10.0.0.1", 1, "10.0.0.2", 2), 7);
        stream.Position = 0;
        using var reader = new PcapReader(stream, ownsStream: false);
        Assert.That(BinaryPrimitives.ReadUInt32LittleEndian(stream.GetBuffer()), Is.EqualTo(0xa1b23c4du));
        Assert.That(reader.Nanosecond, Is.True);
        Assert.That(reader.ReadAll().Single().TimestampNs, Is.EqualTo(WallStartNs + 7));
    }

    [Test]
    public void The_snap_length_cuts_the_bytes_kept_but_not_the_original_length()
    {
        var stream = new MemoryStream();
        byte[] frame = Udp("10.0.0.1", 1, "10.0.0.2", 2, new byte[1000]);
        using (var w = new PcapWriter(stream, false, new PcapWriterOptions { SnapLength = 64 }, new VirtualClock(), WallStartNs))
            w.Inspect(FrameDirection.Transmit, frame, 0);
        stream.Position = 0;
        using var reader = new PcapReader(stream, false);
        var record = reader.ReadAll().Single();
        Assert.That(reader.SnapLength, Is.EqualTo(64));
        Assert.That(record.OriginalLength, Is.EqualTo(frame.Length));
        Assert.That(record.Data, Is.EqualTo(frame[..64]));
    }

    [Test]
    public void The_count_limit_stops_the_capture_and_the_frames_still_pass()
    {
        var stream = new MemoryStream();
        using (var w = new PcapWriter(stream, false, new PcapWriterOptions { MaxFrames = 3 }, new VirtualClock(), WallStartNs))
        {
            for (ushort i = 0; i < 10; i++)
                Assert.That(w.Inspect(FrameDirection.Receive, Udp("10.0.0.1", 1, "10.0.0.2", i), 0), Is.EqualTo(FrameVerdict.Pass));
            Assert.That(w.LimitReached, Is.True);
            Assert.That(w.FramesNotWritten, Is.EqualTo(7));
        }
        stream.Position = 0;
        using var reader = new PcapReader(stream, false);
        Assert.That(reader.ReadAll().Select(r => UdpDestinationPort(r.Data)), Is.EqualTo(new[] { 0, 1, 2 }));
    }

    [Test]
    public void A_program_killed_before_Dispose_leaves_a_file_readable_up_to_the_last_flush()
    {
        string path = Path.Combine(_dir, "killed.pcap");
        var clock = new VirtualClock();
        var w = new PcapWriter(path, new PcapWriterOptions { FlushFrames = 4, FlushIntervalMs = 1000 }, clock);
        Assert.That(PcapReader.ReadFile(path), Is.Empty, "the header is on disk from the start");
        for (ushort i = 0; i < 6; i++)
            w.Inspect(FrameDirection.Receive, Udp("10.0.0.1", 1, "10.0.0.2", i), clock.NowNanoseconds);
        Assert.That(PcapReader.ReadFile(path).Select(r => UdpDestinationPort(r.Data)), Is.EqualTo(new[] { 0, 1, 2, 3 }),
            "flushed after 4 frames; the other 2 wait in the buffer");

        clock.Advance(1_000_000_000);
        w.Inspect(FrameDirection.Receive, Udp("10.0.0.1", 1, "10.0.0.2", 6), clock.NowNanoseconds);
        Assert.That(PcapReader.ReadFile(path), Has.Count.EqualTo(7), "flushed once a second had passed");
        w.Dispose();
    }

    [Test]
    public void The_reader_takes_a_big_endian_file_and_refuses_what_is_not_pcap()
    {
        byte[] frame = Udp("10.0.0.1", 1, "10.0.0.2", 2);
        var big = new MemoryStream();
        Span<byte> h = stackalloc byte[24 + 16];
        BinaryPrimitives.WriteUInt32BigEndian(h, 0xa1b2c3d4);
        BinaryPrimitives.WriteUInt16BigEndian(h[4..], 2);
        BinaryPrimitives.WriteUInt16BigEndian(h[6..], 4);
        BinaryPrimitives.WriteUInt32BigEndian(h[16..], 1500);
        BinaryPrimitives.WriteUInt32BigEndian(h[20..], 1);
        BinaryPrimitives.WriteUInt32BigEndian(h[24..], 10);
        BinaryPrimitives.WriteUInt32BigEndian(h[28..], 20);
        BinaryPrimitives.WriteUInt32BigEndian(h[32..], (uint)frame.Length);
        BinaryPrimitives.WriteUInt32BigEndian(h[36..], (uint)frame.Length);
        big.Write(h);
        big.Write(frame);
        big.Position = 0;
        using (var reader = new PcapReader(big, false))
        {
            Assert.That((reader.SnapLength, reader.LinkType, reader.VersionMajor), Is.EqualTo((1500, 1u, (ushort)2)));
            Assert.That(reader.ReadAll().Single(), Is.EqualTo(new PcapRecord(10_000_020_000, frame.Length, frame)).Using<PcapRecord>(
                (a, b) => a.TimestampNs == b.TimestampNs && a.OriginalLength == b.OriginalLength && a.Data.SequenceEqual(b.Data)));
        }
        Assert.Throws<InvalidDataException>(() => _ = new PcapReader(new MemoryStream(new byte[24]), false));
        Assert.Throws<InvalidDataException>(() => _ = new PcapReader(new MemoryStream(new byte[10]), false));
    }

    [Test]
    public void Tshark_and_tcpdump_read_the_file()
    {
        string path = Path.Combine(_dir, "tools.pcap");
        using (var w = new PcapWriter(path, clock: new VirtualClock()))
        {
            w.Inspect(FrameDirection.Receive, Udp("10.0.0.1", 5555, "10.0.0.2", 5001), 0);
            w.Inspect(FrameDirection.Transmit, IcmpEcho("10.0.0.2", "10.0.0.1"), 1000);
            w.Inspect(FrameDirection.Transmit, Arp("10.0.0.2", "10.0.0.1"), 2000);
        }
        string fields = Run("tshark", "-r", path, "-T", "fields", "-e", "ip.src", "-e", "ip.dst", "-e", "udp.dstport", "-e", "icmp.type", "-e", "arp.dst.proto_ipv4");
        Assert.That(fields.Split('\n', StringSplitOptions.RemoveEmptyEntries), Is.EqualTo(new[]
        {
            "10.0.0.1\t10.0.0.2\t5001\t\t",
            "10.0.0.2\t10.0.0.1\t\t8\t",
            "\t\t\t\t10.0.0.1",
        }));
        string dump = Run("tcpdump", "-nn", "-r", path);
        Assert.That(dump, Does.Contain("10.0.0.1.5555 > 10.0.0.2.5001: UDP"));
        Assert.That(dump, Does.Contain("ICMP echo request"));
    }

    private static string Run(string tool, params string[] args)
    {
        string? exe = new[] { "/usr/bin", "/usr/sbin", "/bin", "/sbin" }.Select(d => Path.Combine(d, tool)).FirstOrDefault(File.Exists);
        if (exe is null)
            Assert.Ignore($"{tool} is not installed ('make deps' installs it)");
        var psi = new ProcessStartInfo(exe!) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (string a in args)
            psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        string stdout = p.StandardOutput.ReadToEnd();
        string stderr = p.StandardError.ReadToEnd();
        p.WaitForExit();
        Assert.That(p.ExitCode, Is.Zero, $"{tool}: {stderr}");
        return stdout;
    }
}
