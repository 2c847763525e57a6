using System.Runtime.InteropServices;
using Onload.Stack;
using Onload.Stack.Tcp;
using Onload.Stack.Wire;
using Onload.Tests.Sim;
using Onload.Vnic;
using Onload.Vnic.Sim;

namespace Onload.Tests.Tcp;

/// <summary>A mirror region in native memory, as a driverlink client would map it from a memfd.</summary>
internal sealed unsafe class MirrorRegion : IDisposable
{
    public MirrorRegion(int connections)
    {
        Length = ConnectionMirror.RegionSize(connections);
        Pointer = (byte*)NativeMemory.AlignedAlloc(Length, 64);
        new Span<byte>(Pointer, (int)Length).Fill(0xA5); // whatever the memory held before
        Mirror = new ConnectionMirror(Pointer, Length, connections);
    }

    public byte* Pointer { get; }
    public nuint Length { get; }
    public ConnectionMirror Mirror { get; }

    /// <summary>The region's bytes as they are now: what the daemon finds after the client died.</summary>
    public byte[] Snapshot() => new Span<byte>(Pointer, (int)Length).ToArray();

    /// <summary><see cref="OrphanCloser.Plan"/> over a copy of exactly the snapshot's length.</summary>
    public static IReadOnlyList<OrphanAction> Plan(byte[] snapshot)
    {
        var p = (byte*)NativeMemory.AlignedAlloc((nuint)snapshot.Length, 64);
        try
        {
            snapshot.CopyTo(new Span<byte>(p, snapshot.Length));
            return OrphanCloser.Plan(p, (nuint)snapshot.Length);
        }
        finally
        {
            NativeMemory.AlignedFree(p);
        }
    }

    public void Dispose() => NativeMemory.AlignedFree(Pointer);
}

/// <summary>The connection mirror and the closer's plan, checked against the stacks' real connections.</summary>
[TestFixture]
public unsafe class ConnectionMirrorTests
{
    private const long Ms = 1_000_000;
    private const int Connections = 32;

    /// <summary>What Linux's tcp_close would send for a connection, from the stack's own fields: the reference the
    /// plan is checked against.</summary>
    private static (OrphanKind, OrphanReason)? Expected(in TcpConnection t)
    {
        if (!t.InUse || t.Dead)
            return null;
        bool unread = t.Readable > 0;
        bool unsent = (int)(t.SndUna + (uint)t.SndQueued - t.SndNxt) > 0;
        switch (t.State)
        {
            case TcpState.SynReceived or TcpState.Established or TcpState.CloseWait:
            case TcpState.FinWait1 or TcpState.LastAck when !t.FinSent:
                if (t.Listener >= 0)
                    return (OrphanKind.Reset, OrphanReason.NotAccepted);
                if (unread)
                    return (OrphanKind.Reset, OrphanReason.Unread);
                if (unsent)
                    return (OrphanKind.Reset, OrphanReason.Unsent);
                return (OrphanKind.Fin, OrphanReason.Close);
            case TcpState.FinWait1 or TcpState.FinWait2 or TcpState.Closing or TcpState.LastAck:
                return unread ? (OrphanKind.Reset, OrphanReason.Unread) : null;
            default:
                return null;
        }
    }

    /// <summary>Checks the plan from a snapshot of <paramref name="stack"/>'s mirror against its connections now;
    /// returns how many actions it held.</summary>
    private static int CheckPlan(NetStack stack, MirrorRegion region, MacAddress peerMac, string when)
    {
        var actions = MirrorRegion.Plan(region.Snapshot()).ToDictionary(a => a.Row);
        var table = stack.TcpConnections;
        var frame = new byte[OrphanCloser.MaxFrameLength];
        for (int c = 0; c < table.Capacity; c++)
        {
            var t = table[c];
            var expected = Expected(t);
            string what = $"{when}, row {c} ({t.State}, unread {t.Readable}, queued {t.SndQueued})";
            if (expected is not { } e)
            {
                Assert.That(actions.ContainsKey(c), Is.False, what + ": no action");
                continue;
            }
            Assert.That(actions.TryGetValue(c, out var a), Is.True, what + ": an action");
            Assert.Multiple(() =>
            {
                Assert.That((a.Kind, a.Reason), Is.EqualTo(e), what);
                Assert.That(a.State, Is.EqualTo(t.State), what);
                Assert.That(a.Seq, Is.EqualTo(t.SndNxt), what + ": SND.NXT");
                Assert.That(a.Ack, Is.EqualTo(t.RcvNxt), what + ": RCV.NXT");
                Assert.That(a.LocalPort, Is.EqualTo(t.LocalPort), what);
                Assert.That(a.RemotePort, Is.EqualTo(t.RemotePort), what);
                Assert.That(a.RemoteAddress, Is.EqualTo(t.RemoteAddress), what);
                Assert.That(a.LocalAddress, Is.EqualTo(stack.Address), what);
                Assert.That(a.LocalMac, Is.EqualTo(stack.MacAddress), what);
                Assert.That(a.RemoteMac, Is.EqualTo(peerMac), what + ": next hop's MAC");
                Assert.That(a.Window, Is.EqualTo(Seq.Gt(t.RcvAdv, t.RcvNxt) ? (ushort)Math.Min((long)(t.RcvAdv - t.RcvNxt) >> t.RcvWndShift, 65535) : 0), what + ": window (0 once data went past the edge)");
                Assert.That(a.Timestamps, Is.EqualTo(t.Timestamps && a.Kind == OrphanKind.Fin), what);
                if (a.Timestamps)
                    Assert.That(a.TsEcr, Is.EqualTo(t.TsRecent), what + ": TS.Recent");
                Assert.That(a.FromOlderCopy, Is.False, what);
            });
            int n = OrphanCloser.BuildFrame(a, frame);
            Assert.That(n, Is.GreaterThan(0), what + ": a frame");
            CheckFrame(frame.AsSpan(0, n), a);
        }
        return actions.Count;
    }

    /// <summary>The frame parses and validates as the stack's own input would take it.</summary>
    private static void CheckFrame(Span<byte> frame, in OrphanAction a)
    {
        var eth = new EthernetFrame(frame);
        Assert.That(eth.Destination, Is.EqualTo(a.RemoteMac));
        Assert.That(eth.Source, Is.EqualTo(a.LocalMac));
        Assert.That(Ipv4Packet.Validate(eth.Payload), Is.EqualTo(DropReason.None));
        var ip = new Ipv4Packet(eth.Payload);
        Assert.That(TcpSegment.Validate(ip.Payload, ip.Source, ip.Destination, checksumTrusted: false), Is.EqualTo(DropReason.None));
        var tcp = new TcpSegment(ip.Payload);
        Assert.That(tcp.SequenceNumber, Is.EqualTo(a.Seq));
        Assert.That(tcp.AcknowledgmentNumber, Is.EqualTo(a.Ack));
        Assert.That(tcp.Flags, Is.EqualTo(a.Kind == OrphanKind.Fin ? TcpFlags.Fin | TcpFlags.Ack : TcpFlags.Rst | TcpFlags.Ack));
        Assert.That(tcp.TryParseOptions(out var options), Is.True);
        Assert.That(options.HasTimestamps, Is.EqualTo(a.Timestamps));
        if (a.Timestamps)
            Assert.That((options.TsVal, options.TsEcr), Is.EqualTo((a.TsVal, a.TsEcr)));
    }

    [TestCase(1UL)]
    [TestCase(2UL)]
    [TestCase(3UL)]
    [TestCase(4UL)]
    public void Plan_matches_the_stacks_connections_at_random_points_of_lossy_transfers(ulong seed)
    {
        using var ra = new MirrorRegion(Connections);
        using var rb = new MirrorRegion(Connections);
        var faults = new LinkFaults { Loss = 0.05, Reorder = 0.05, Duplicate = 0.02, MinDelayNs = 20_000, MaxDelayNs = 500_000 };
        using var pair = new SimPair(seed, faults, faults, o => o with
        {
            TcpConnections = Connections,
            ConnectionMirror = o.Address == SimPair.AddressA ? ra.Mirror : rb.Mirror,
        });
        var r = new SeededRandom(seed);
        int l = pair.B.TcpOpen();
        pair.B.TcpBind(l, new(Ipv4Address.Any, 80));
        pair.B.TcpListen(l, 16);
        var clients = new List<int>();
        var servers = new List<int>();
        var data = new byte[20_000];
        var buf = new byte[65536];
        int checks = 0, actions = 0;
        for (int step = 0; step < 3000; step++)
        {
            // The applications act at random: connect, send, read or not, shut down, close.
            NetStack s = r.NextDouble() < 0.5 ? pair.A : pair.B;
            var sockets = s == pair.A ? clients : servers;
            double dice = r.NextDouble();
            if (s == pair.A && dice < 0.02 && clients.Count < 12)
            {
                int c = pair.A.TcpOpen();
                pair.A.TcpConnect(c, new(SimPair.AddressB.Address, 80));
                clients.Add(c);
            }
            else if (s == pair.B && dice < 0.1)
            {
                int a = pair.B.TcpAccept(l, out _);
                if (a >= 0)
                    servers.Add(a);
            }
            else if (sockets.Count > 0)
            {
                int i = (int)(r.NextUInt64() % (ulong)sockets.Count);
                int c = sockets[i];
                if (dice < 0.45)
                    s.TcpSend(c, data.AsSpan(0, 1 + (int)(r.NextUInt64() % (ulong)data.Length)));
                else if (dice < 0.75)
                    s.TcpReceive(c, buf.AsSpan(0, 1 + (int)(r.NextUInt64() % (ulong)buf.Length)));
                else if (dice < 0.78)
                    s.TcpShutdown(c, read: false, write: true);
                else if (dice < 0.80)
                {
                    s.TcpClose(c);
                    sockets.RemoveAt(i);
                }
            }
            pair.RunFor((long)(r.NextUInt64() % (ulong)(3 * Ms)));
            if (r.NextDouble() < 0.2)
            {
                actions += CheckPlan(pair.A, ra, pair.Link.B.MacAddress, $"seed {seed} step {step}, A");
                actions += CheckPlan(pair.B, rb, pair.Link.A.MacAddress, $"seed {seed} step {step}, B");
                checks++;
            }
        }
        TestContext.Out.WriteLine($"{checks} checks, {actions} actions planned");
        Assert.That(actions, Is.GreaterThan(100), "the run produced connections to close");
    }

    /// <summary>One connection with data the application has not read, one idle, one with unsent data.</summary>
    [Test]
    public void Unread_data_resets_an_idle_connection_fins_and_unsent_data_resets()
    {
        using var ra = new MirrorRegion(Connections);
        using var pair = new SimPair(7, tweak: o => o with
        {
            TcpConnections = Connections,
            ConnectionMirror = o.Address == SimPair.AddressA ? ra.Mirror : null,
        });
        var (idle, idleServer) = SimTcpTests.Connect(pair);
        int unread = pair.A.TcpOpen();
        pair.A.TcpConnect(unread, new(SimPair.AddressB.Address, 80));
        int unsent = pair.A.TcpOpen();
        pair.A.TcpConnect(unsent, new(SimPair.AddressB.Address, 80));
        pair.RunFor(10 * Ms);
        int l = 0;
        int unreadServer = pair.B.TcpAccept(l, out _);
        Assert.That(unreadServer, Is.GreaterThanOrEqualTo(0));
        pair.B.TcpSend(unreadServer, new byte[100]);
        Assert.That(pair.B.TcpAccept(l, out _), Is.GreaterThanOrEqualTo(0));
        // B never reads this one: its window closes and A's send buffer keeps what it cannot send.
        var chunk = new byte[65536];
        for (int i = 0; i < 100 && pair.A.TcpConnections[unsent].SndQueued <= (int)(pair.A.TcpConnections[unsent].SndNxt - pair.A.TcpConnections[unsent].SndUna); i++)
        {
            pair.A.TcpSend(unsent, chunk);
            pair.RunFor(5 * Ms);
        }

        var plan = MirrorRegion.Plan(ra.Snapshot()).ToDictionary(a => a.Row);
        Assert.That(plan[idle].Kind, Is.EqualTo(OrphanKind.Fin));
        Assert.That((plan[unread].Kind, plan[unread].Reason), Is.EqualTo((OrphanKind.Reset, OrphanReason.Unread)));
        Assert.That((plan[unsent].Kind, plan[unsent].Reason), Is.EqualTo((OrphanKind.Reset, OrphanReason.Unsent)));
        Assert.That(plan[idle].Seq, Is.EqualTo(pair.A.TcpConnections[idle].SndNxt));
        Assert.That(idleServer, Is.GreaterThanOrEqualTo(0));
    }

    /// <summary>
    /// The writer dies at every byte of an update: while the control word is not flipped the plan reads the
    /// complete old copy; once flipped, the new one; and if the new copy is scribbled on afterwards, the old one,
    /// flagged as such.
    /// </summary>
    [Test]
    public void A_writer_dying_mid_update_leaves_a_complete_copy_for_the_reader()
    {
        using var ra = new MirrorRegion(Connections);
        using var pair = new SimPair(9, tweak: o => o with
        {
            TcpConnections = Connections,
            ConnectionMirror = o.Address == SimPair.AddressA ? ra.Mirror : null,
        });
        var (c, _) = SimTcpTests.Connect(pair);
        pair.RunFor(100 * Ms);
        var before = ra.Snapshot();
        var old = MirrorRegion.Plan(before).Single(a => a.Row == c);
        Assert.That(old.Seq, Is.EqualTo(pair.A.TcpConnections[c].SndNxt));

        // The update a dying writer was making: SND.NXT moved by 1000 bytes.
        int record = (int)(ConnectionMirrorLayout.HeaderSize + (nuint)c * ConnectionMirrorLayout.RecordSize);
        uint generation = BitConverter.ToUInt32(before, record);
        uint next = ConnectionMirrorLayout.Next(generation);
        int activeAt = record + ((generation & 1) == 0 ? 8 : 64);
        int spareAt = record + ((next & 1) == 0 ? 8 : 64);
        var update = new byte[56];
        Array.Copy(before, activeAt, update, 0, 56);
        fixed (byte* u = update)
        {
            var copy = (ConnectionMirrorLayout.Copy*)u;
            copy->Generation = next;
            copy->SndNxt += 1000;
            copy->Check = ConnectionMirrorLayout.CheckOf(copy);
        }
        for (int written = 0; written <= 56; written++)
        {
            var died = (byte[])before.Clone();
            Array.Copy(update, 0, died, spareAt, written);
            var a = MirrorRegion.Plan(died).Single(x => x.Row == c);
            Assert.That((a.Seq, a.FromOlderCopy), Is.EqualTo((old.Seq, false)), $"died after {written} bytes of the copy");
        }
        var flipped = (byte[])before.Clone();
        Array.Copy(update, 0, flipped, spareAt, 56);
        BitConverter.TryWriteBytes(flipped.AsSpan(record), next);
        Assert.That(MirrorRegion.Plan(flipped).Single(x => x.Row == c).Seq, Is.EqualTo(old.Seq + 1000), "published");

        for (int at = 0; at < 52; at++)
        {
            var scribbled = (byte[])flipped.Clone();
            scribbled[spareAt + at] ^= 0x5A;
            var a = MirrorRegion.Plan(scribbled).SingleOrDefault(x => x.Row == c);
            Assert.That((a.Seq, a.FromOlderCopy), Is.EqualTo((old.Seq, true)), $"new copy scribbled at byte {at}");
        }
        var both = (byte[])flipped.Clone();
        both[spareAt + 24] ^= 1;
        both[activeAt + 24] ^= 1;
        Assert.That(MirrorRegion.Plan(both).Any(x => x.Row == c), Is.False, "both copies damaged: the record is skipped");
    }

    [Test]
    public void Plan_survives_a_hundred_thousand_random_regions_without_reading_past_them()
    {
        using var ra = new MirrorRegion(8);
        using var pair = new SimPair(11, tweak: o => o with
        {
            TcpConnections = 8,
            ConnectionMirror = o.Address == SimPair.AddressA ? ra.Mirror : null,
        });
        SimTcpTests.Connect(pair);
        var real = ra.Snapshot();
        using var guarded = new GuardedBuffer(64 * 1024);
        var r = new SeededRandom(12345);
        Span<byte> frame = stackalloc byte[OrphanCloser.MaxFrameLength];
        long planned = 0;
        for (int i = 0; i < 100_000; i++)
        {
            int kind = i % 4;
            int length = kind switch
            {
                0 => (int)(r.NextUInt64() % 2048),
                1 => real.Length,
                _ => (int)(r.NextUInt64() % (ulong)(real.Length + 256)),
            };
            if (r.NextDouble() < 0.9)
                length &= ~3; // mostly aligned, so most regions get past the first check
            var region = guarded.At(length);
            switch (kind)
            {
                case 0: // noise
                    Fill(r, region);
                    break;
                case 1: // the real region, scribbled on here and there
                    real.CopyTo(region);
                    for (int k = (int)(r.NextUInt64() % 16); k >= 0; k--)
                        region[(int)(r.NextUInt64() % (ulong)length)] = (byte)r.NextUInt64();
                    break;
                default: // a valid header over noise, truncated, or with a lying record count
                    Fill(r, region);
                    real.AsSpan(0, Math.Min(length, (int)ConnectionMirrorLayout.HeaderSize)).CopyTo(region);
                    if (length >= 12 && r.NextDouble() < 0.5)
                        BitConverter.TryWriteBytes(region[8..], (uint)r.NextUInt64());
                    break;
            }
            fixed (byte* p = region)
            {
                foreach (var a in OrphanCloser.Plan(p, (nuint)length))
                {
                    OrphanCloser.BuildFrame(a, frame);
                    planned++;
                }
            }
        }
        TestContext.Out.WriteLine($"{planned} actions planned from random regions");
    }

    private static void Fill(SeededRandom r, Span<byte> bytes)
    {
        for (int i = 0; i < bytes.Length; i++)
            bytes[i] = (byte)r.NextUInt64();
    }

    [Test]
    public void Plan_refuses_a_region_without_the_header()
    {
        var zeros = new byte[4096];
        Assert.That(MirrorRegion.Plan(zeros), Is.Empty);
        Assert.That(OrphanCloser.Plan(null, 4096), Is.Empty);
    }
}

/// <summary>Memory followed by a page that faults on any access: a buffer placed at its end is read past at once.</summary>
internal sealed unsafe partial class GuardedBuffer : IDisposable
{
    private readonly byte* _base;
    private readonly nuint _size;
    private readonly int _usable;

    public GuardedBuffer(int usable)
    {
        int page = Environment.SystemPageSize;
        _usable = (usable + page - 1) / page * page;
        _size = (nuint)(_usable + page);
        _base = (byte*)Mmap(null, _size, 3 /* PROT_READ|PROT_WRITE */, 0x22 /* MAP_PRIVATE|MAP_ANONYMOUS */, -1, 0);
        if (_base == (byte*)-1)
            throw new InvalidOperationException("mmap failed");
        if (Mprotect(_base + _usable, (nuint)page, 0) != 0)
            throw new InvalidOperationException("mprotect failed");
    }

    /// <summary><paramref name="length"/> bytes that end where the guard page begins.</summary>
    public Span<byte> At(int length) => new(_base + _usable - length, length);

    public void Dispose() => Munmap(_base, _size);

    [LibraryImport("libc", EntryPoint = "mmap")]
    private static partial void* Mmap(void* addr, nuint length, int prot, int flags, int fd, nint offset);

    [LibraryImport("libc", EntryPoint = "mprotect")]
    private static partial int Mprotect(void* addr, nuint length, int prot);

    [LibraryImport("libc", EntryPoint = "munmap")]
    private static partial int Munmap(void* addr, nuint length);
}
