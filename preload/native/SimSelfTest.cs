using System.Buffers.Binary;
using Onload.Stack;
using Onload.Stack.Wire;
using Onload.Vnic;
using Onload.Vnic.Sim;

namespace Onload.Native;

/// <summary>Two stacks over a lossy simulated link exchanging UDP both ways, checked byte for byte.</summary>
internal static class SimSelfTest
{
    private const int EIO = 5;

    public static int Run(ulong seed, int datagrams)
    {
        var faults = new LinkFaults { Loss = 0.05, Reorder = 0.05, Corrupt = 0.05, MinDelayNs = 5_000, MaxDelayNs = 50_000 };
        var clock = new VirtualClock();
        using var link = new SimLink(seed, clock, faults, faults);
        using var a = new NetStack(link.A, new StackOptions { Address = Ipv4Cidr.Parse("10.9.0.1/24") }, clock, new SeededRandom(seed + 1));
        using var b = new NetStack(link.B, new StackOptions { Address = Ipv4Cidr.Parse("10.9.0.2/24") }, clock, new SeededRandom(seed + 2));
        int sa = a.UdpOpen();
        int sb = b.UdpOpen();
        a.UdpBind(sa, new Ipv4Endpoint(Ipv4Address.Any, 1000));
        b.UdpBind(sb, new Ipv4Endpoint(Ipv4Address.Any, 2000));
        Span<byte> payload = stackalloc byte[256];
        Span<byte> got = stackalloc byte[2048];
        int intact = 0;
        for (int i = 0; i < datagrams; i++)
        {
            Fill(payload, i);
            a.UdpSendTo(sa, payload, new Ipv4Endpoint(b.Address, 2000));
            b.UdpSendTo(sb, payload, new Ipv4Endpoint(a.Address, 1000));
            for (int step = 0; step < 100; step++)
            {
                clock.Advance(1_000);
                a.Poll();
                b.Poll();
            }
            foreach (var (stack, socket) in new[] { (a, sa), (b, sb) })
            {
                int n;
                while ((n = stack.UdpReceiveFrom(socket, got, out _)) >= 0)
                {
                    int seq = BinaryPrimitives.ReadInt32LittleEndian(got);
                    Fill(payload, seq);
                    if (n != payload.Length || !got[..n].SequenceEqual(payload))
                        return -EIO;
                    intact++;
                }
            }
        }
        return intact;
    }

    private static void Fill(Span<byte> p, int seq)
    {
        BinaryPrimitives.WriteInt32LittleEndian(p, seq);
        for (int i = 4; i < p.Length; i++)
            p[i] = (byte)(seq * 13 + i);
    }
}
