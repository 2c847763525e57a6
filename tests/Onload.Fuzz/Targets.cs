using System.Buffers.Binary;
using Onload.Driverlink;

namespace Onload.Fuzz;

/// <summary>
/// The fuzzing targets. Each takes one input and throws when the stack does something it must not: an exception
/// out of a receive path, a packet buffer not returned, a TCP row left behind, a decoded message that does not
/// encode back to the same bytes. Inputs with several packets are records: a 2-byte big-endian length, then that
/// many bytes.
/// </summary>
internal static class Targets
{
    public static readonly string[] Names = ["frame", "reassembly", "tcp-listen", "tcp-established", "driverlink"];

    public static void Run(string target, ReadOnlySpan<byte> input)
    {
        switch (target)
        {
            case "frame": Frame(input); break;
            case "reassembly": Reassembly(input); break;
            case "tcp-listen": TcpListen(input); break;
            case "tcp-established": TcpEstablished(input); break;
            case "driverlink": Driverlink(input); break;
            default: throw new ArgumentException($"no target '{target}' (targets: {string.Join(", ", Names)})");
        }
    }

    /// <summary>The record after <paramref name="at"/>, or false at the end.</summary>
    public static bool NextRecord(ReadOnlySpan<byte> input, ref int at, out ReadOnlySpan<byte> record)
    {
        record = default;
        if (at + 2 > input.Length)
            return false;
        int n = Math.Min(BinaryPrimitives.ReadUInt16BigEndian(input[at..]), input.Length - at - 2);
        record = input.Slice(at + 2, n);
        at += 2 + n;
        return true;
    }

    /// <summary>One Ethernet frame, whatever it holds, into a stack with a UDP socket and a TCP listener.</summary>
    private static void Frame(ReadOnlySpan<byte> input)
    {
        using var s = new FuzzStack();
        s.Inject(input);
        s.Settle();
    }

    /// <summary>IPv4 packets (fragments, mostly) from the peer: reassembly's overlaps, limits and timeouts.</summary>
    private static void Reassembly(ReadOnlySpan<byte> input)
    {
        using var s = new FuzzStack();
        for (int at = 0; NextRecord(input, ref at, out var packet);)
            s.Inject(s.Ipv4Frame(packet));
        s.Settle();
    }

    /// <summary>TCP segments to the listener from the peer port each record's first two bytes name: SYNs, ACKs
    /// completing handshakes, RSTs and data; the application accepts, reads and answers between them.</summary>
    private static void TcpListen(ReadOnlySpan<byte> input)
    {
        using var s = new FuzzStack();
        for (int at = 0; NextRecord(input, ref at, out var segment);)
        {
            ushort peerPort = segment.Length >= 2 ? BinaryPrimitives.ReadUInt16BigEndian(segment) : (ushort)40000;
            s.Inject(s.TcpFrame(segment, peerPort));
            s.Serve();
        }
        s.Settle();
    }

    /// <summary>
    /// A connection established by a well-formed handshake, then the input's segments on it: their sequence and
    /// acknowledgment numbers are taken relative to the connection's (0 is RCV.NXT and SND.UNA at the start), so
    /// the fuzzer works inside the windows; the application reads and sends between them.
    /// </summary>
    private static void TcpEstablished(ReadOnlySpan<byte> input)
    {
        using var s = new FuzzStack();
        const ushort PeerPort = 40000;
        const uint PeerIsn = 1_000_000;
        var syn = new byte[40];
        BinaryPrimitives.WriteUInt32BigEndian(syn.AsSpan(4), PeerIsn);
        syn[12] = 10 << 4;
        syn[13] = 0x02; // SYN
        BinaryPrimitives.WriteUInt16BigEndian(syn.AsSpan(14), 65535);
        // MSS 1460, SACK permitted, timestamps, window scale 7.
        byte[] options = [2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7];
        options.CopyTo(syn.AsSpan(20));
        s.Sent.Clear();
        s.Inject(s.TcpFrame(syn, PeerPort));
        s.Advance(2_000_000); // the link's delay, and an ARP exchange if the stack asks
        uint stackIsn = 0;
        foreach (var f in s.Sent)
            if (f.Length >= 54 && f[23] == 6 && (f[47] & 0x12) == 0x12)
                stackIsn = BinaryPrimitives.ReadUInt32BigEndian(f.AsSpan(38));
        if (stackIsn == 0)
            throw new InvalidOperationException($"the handshake's SYN-ACK did not come ({s.Sent.Count} frames: " +
                string.Join(", ", s.Sent.Select(f => Convert.ToHexString(f.AsSpan(0, Math.Min(f.Length, 60))))) + "; " + string.Join(" ", s.Stack.Counters.Snapshot().Where(c => c.Value != 0).Select(c => $"{c.Key} {c.Value}")) + ")");
        var ack = new byte[20];
        BinaryPrimitives.WriteUInt32BigEndian(ack.AsSpan(4), PeerIsn + 1);
        BinaryPrimitives.WriteUInt32BigEndian(ack.AsSpan(8), stackIsn + 1);
        ack[12] = 5 << 4;
        ack[13] = 0x10;
        BinaryPrimitives.WriteUInt16BigEndian(ack.AsSpan(14), 1024);
        s.Inject(s.TcpFrame(ack, PeerPort));
        s.Serve();

        var segment = new byte[65535];
        for (int at = 0; NextRecord(input, ref at, out var record);)
        {
            record.CopyTo(segment);
            var seg = segment.AsSpan(0, record.Length);
            if (seg.Length >= 12)
            {
                BinaryPrimitives.WriteUInt32BigEndian(seg[4..], BinaryPrimitives.ReadUInt32BigEndian(seg[4..]) + PeerIsn + 1);
                BinaryPrimitives.WriteUInt32BigEndian(seg[8..], BinaryPrimitives.ReadUInt32BigEndian(seg[8..]) + stackIsn + 1);
            }
            s.Inject(s.TcpFrame(seg, PeerPort));
            s.Serve();
        }
        s.Settle();
    }

    /// <summary>A driverlink message as the daemon or a client receives it: decoded or refused, never thrown on,
    /// and what decodes encodes back to the same bytes (the codec is strict: one encoding per message).</summary>
    private static void Driverlink(ReadOnlySpan<byte> input)
    {
        if (!Message.TryDecode(input, out var message, out _))
            return;
        var again = new byte[Math.Max(input.Length, 64 * 1024)];
        int n = message.Encode(again);
        if (!again.AsSpan(0, n).SequenceEqual(input))
            throw new InvalidOperationException($"a decoded {message.Kind} encodes to other bytes ({n} against {input.Length})");
    }
}
