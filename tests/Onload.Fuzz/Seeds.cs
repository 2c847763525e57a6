using System.Buffers.Binary;
using Onload.Tests.Driverlink;

namespace Onload.Fuzz;

/// <summary>
/// Seeds from a real capture (pcap, Ethernet): every frame for the frame target; each fragmented datagram's
/// fragments for reassembly; each TCP connection's client-to-server segments for the listener, and the same after
/// the handshake, numbered from the connection's start, for the established target. The driverlink target's seeds
/// are one encoded message of every kind.
/// </summary>
internal static class Seeds
{
    public static int Write(string pcap, string directory)
    {
        var frames = ReadPcap(File.ReadAllBytes(pcap));
        int Save(string target, IEnumerable<byte[]> inputs)
        {
            string dir = Path.Combine(directory, target);
            Directory.CreateDirectory(dir);
            int n = 0;
            foreach (var input in inputs.DistinctBy(Convert.ToHexString).Take(200))
                File.WriteAllBytes(Path.Combine(dir, $"seed-{n++:D3}"), input);
            Console.WriteLine($"{target}: {n} seeds");
            return n;
        }
        var ipv4 = frames.Where(f => f.Length >= 34 && BinaryPrimitives.ReadUInt16BigEndian(f.AsSpan(12)) == 0x0800)
            .Select(f => f[14..]).ToList();
        var fragmented = ipv4.Where(p => (BinaryPrimitives.ReadUInt16BigEndian(p.AsSpan(6)) & 0x3fff) != 0)
            .GroupBy(p => (BinaryPrimitives.ReadUInt32BigEndian(p.AsSpan(12)), BinaryPrimitives.ReadUInt16BigEndian(p.AsSpan(4))))
            .Select(g => Inputs.Records(g));
        var connections = ipv4.Where(p => p[9] == 6 && p.Length >= (p[0] & 0xf) * 4 + 20)
            .Select(p => p[((p[0] & 0xf) * 4)..])
            .GroupBy(t => BinaryPrimitives.ReadUInt32BigEndian(t)) // source and destination port: one direction
            .Where(g => (g.First()[13] & 0x12) == 0x02)              // opened by a SYN: the client's side
            .ToList();
        int seeds = Save("frame", frames);
        seeds += Save("reassembly", fragmented);
        seeds += Save("tcp-listen", connections.Select(g => Inputs.Records(g)));
        seeds += Save("tcp-established", connections.Select(g => Inputs.Records(Relative(g.ToList()))));
        seeds += Save("driverlink", SampleMessages.All.Select(m =>
        {
            var b = new byte[64 * 1024];
            return b[..m.Encode(b)];
        }));
        return seeds > 0 ? 0 : 1;
    }

    /// <summary>A client's segments after its SYN, sequence numbers from its ISN + 1 and acknowledgments from the
    /// server's (the first ACK's acknowledgment number).</summary>
    private static IEnumerable<byte[]> Relative(List<byte[]> segments)
    {
        uint isn = BinaryPrimitives.ReadUInt32BigEndian(segments[0].AsSpan(4));
        uint serverIsn = segments.Skip(1).Select(s => BinaryPrimitives.ReadUInt32BigEndian(s.AsSpan(8))).FirstOrDefault() - 1;
        foreach (var s in segments.Skip(2)) // the SYN and the handshake's ACK: the target makes its own
        {
            var r = (byte[])s.Clone();
            BinaryPrimitives.WriteUInt32BigEndian(r.AsSpan(4), BinaryPrimitives.ReadUInt32BigEndian(s.AsSpan(4)) - isn - 1);
            BinaryPrimitives.WriteUInt32BigEndian(r.AsSpan(8), BinaryPrimitives.ReadUInt32BigEndian(s.AsSpan(8)) - serverIsn - 1);
            yield return r;
        }
    }

    private static List<byte[]> ReadPcap(byte[] file)
    {
        uint magic = BinaryPrimitives.ReadUInt32LittleEndian(file);
        if (magic is not (0xa1b2c3d4 or 0xa1b23c4d) || BinaryPrimitives.ReadUInt32LittleEndian(file.AsSpan(20)) != 1)
            throw new InvalidDataException("not a little-endian Ethernet pcap");
        var frames = new List<byte[]>();
        for (int at = 24; at + 16 <= file.Length;)
        {
            int captured = (int)BinaryPrimitives.ReadUInt32LittleEndian(file.AsSpan(at + 8));
            if (at + 16 + captured > file.Length)
                break;
            frames.Add(file.AsSpan(at + 16, captured).ToArray());
            at += 16 + captured;
        }
        return frames;
    }
}
