using System.Buffers.Binary;
using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Text;
using Onload.Stack;
using Onload.Stack.Wire;
using Onload.Tests.Interop;
using Onload.Tests.Netns;
using Onload.Vnic;
using Onload.Vnic.Shm;

namespace Onload.Tests.Vnic;

/// <summary>
/// The shared-memory backend: two endpoints in this process (or one in a child onload-echo) on a name unique to
/// the test. Needs no privileges.
/// </summary>
[TestFixture]
public sealed class ShmTests
{
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(5);
    private static readonly VnicOptions Small = new() { BufferCount = 256, RingSize = 64 };
    private static int _instance;

    private static string UniqueName() =>
        string.Create(CultureInfo.InvariantCulture, $"test-{Environment.ProcessId}-{Interlocked.Increment(ref _instance)}");

    /// <summary>A frame of <paramref name="length"/> bytes whose every byte follows from <paramref name="seq"/>.</summary>
    private static byte[] Frame(MacAddress dst, MacAddress src, int seq, int length)
    {
        var f = new byte[length];
        dst.Write(f.AsSpan(0, 6));
        src.Write(f.AsSpan(6, 6));
        BinaryPrimitives.WriteUInt16BigEndian(f.AsSpan(12), 0x88B5); // IEEE 802 local experimental EtherType
        if (length >= 18)
            BinaryPrimitives.WriteInt32BigEndian(f.AsSpan(14), seq);
        for (int i = 18; i < length; i++)
            f[i] = (byte)(seq * 31 + i * 7);
        return f;
    }

    /// <summary>Lengths from 14 to MTU + 14, the largest every 50th frame.</summary>
    private static int LengthFor(int seq, int mtu) => seq % 50 == 7 ? mtu + 14 : 14 + (seq * 997 % (mtu + 1));

    /// <summary>Sends frames <paramref name="first"/>.. in one batch; returns how many the ring took.</summary>
    private static int SendBatch(ShmVnic from, MacAddress to, int first, int count)
    {
        var batch = new PacketDescriptor[count];
        for (int i = 0; i < count; i++)
            batch[i] = TestFrames.InPool(from.Buffers, Frame(to, from.MacAddress, first + i, LengthFor(first + i, from.Mtu)));
        int accepted = from.Transmit(batch);
        for (int i = accepted; i < count; i++)
            from.Buffers.Release(batch[i].Buffer);
        return accepted;
    }

    private static void CheckFrames(List<byte[]> got, MacAddress dst, MacAddress src, int first, int mtu)
    {
        for (int i = 0; i < got.Count; i++)
        {
            var expected = Frame(dst, src, first + i, LengthFor(first + i, mtu));
            Assert.That(got[i], Is.EqualTo(expected), $"frame {first + i} ({expected.Length} bytes)");
        }
    }

    [Test]
    public void Two_endpoints_exchange_frames_both_ways_intact_in_order_in_batches()
    {
        string name = UniqueName();
        using var a = ShmVnic.Open(name, Small);
        Assert.That(a.IsListener, Is.True, "the first opener listens");
        Assert.That(a.PeerConnected, Is.False);
        using var b = (ShmVnic)VnicFactory.Open("shm:" + name, Small);

        Assert.Multiple(() =>
        {
            Assert.That(a.PeerConnected && b.PeerConnected, Is.True);
            Assert.That(b.IsListener, Is.False);
            Assert.That(a.Spec, Is.EqualTo("shm:" + name));
            Assert.That(a.Mtu, Is.EqualTo(ShmVnic.DefaultMtu).And.EqualTo(b.Mtu));
            Assert.That(a.Buffers.BufferSize, Is.GreaterThanOrEqualTo(a.Mtu + 14));
            Assert.That(a.MacAddress, Is.Not.EqualTo(b.MacAddress));
            Assert.That(a.MacAddress.IsGroup || b.MacAddress.IsGroup, Is.False);
            Assert.That((a.MacAddress.Value >> 40) & 2, Is.EqualTo(2), "locally administered");
            Assert.That(a.PeerMacAddress, Is.EqualTo(b.MacAddress));
            Assert.That(b.PeerMacAddress, Is.EqualTo(a.MacAddress));
            Assert.That(a.PeerProcessId, Is.EqualTo(Environment.ProcessId));
            Assert.That(a.RxRing, Is.Not.EqualTo(b.RxRing));
            Assert.That(a.WaitHandle, Is.GreaterThanOrEqualTo(0));
        });

        // 2000 frames each way, 1 to 32 per batch, lengths from 14 to the MTU + 14, both directions interleaved.
        const int Total = 2000;
        var atA = new List<byte[]>();
        var atB = new List<byte[]>();
        int sentA = 0, sentB = 0;
        var clock = Stopwatch.StartNew();
        while ((atA.Count < Total || atB.Count < Total) && clock.Elapsed < TimeSpan.FromSeconds(30))
        {
            if (sentA < Total)
                sentA += SendBatch(a, b.MacAddress, sentA, Math.Min(Total - sentA, 1 + sentA % 32));
            if (sentB < Total)
                sentB += SendBatch(b, a.MacAddress, 100_000 + sentB, Math.Min(Total - sentB, 1 + sentB % 29));
            TestFrames.Drain(b, atB);
            TestFrames.Drain(a, atA);
        }
        Assert.That(atB, Has.Count.EqualTo(Total));
        Assert.That(atA, Has.Count.EqualTo(Total));
        CheckFrames(atB, b.MacAddress, a.MacAddress, 0, a.Mtu);
        CheckFrames(atA, a.MacAddress, b.MacAddress, 100_000, b.Mtu);
        Assert.Multiple(() =>
        {
            Assert.That(atB.Max(f => f.Length), Is.EqualTo(a.Mtu + 14), "an MTU-sized frame passed");
            Assert.That(a.Counters.TxFrames, Is.EqualTo(Total));
            Assert.That(b.Counters.RxFrames, Is.EqualTo(Total));
            Assert.That(b.Counters.RxBytes, Is.EqualTo(a.Counters.TxBytes));
            Assert.That(a.Counters.TxErrors + b.Counters.RxDropTooLong + b.Counters.RxDropNoBuffer, Is.Zero);
            Assert.That(a.Buffers.Available, Is.EqualTo(a.Buffers.Count), "every buffer went back to its pool");
            Assert.That(b.Buffers.Available, Is.EqualTo(b.Buffers.Count));
            Assert.That(a.DoorbellsRung + b.DoorbellsRung, Is.Zero, "nobody declared sleep");
        });
    }

    [Test]
    public void A_sender_and_a_receiver_on_two_threads_see_every_frame_in_order()
    {
        string name = UniqueName();
        using var a = ShmVnic.Open(name, Small);
        using var b = ShmVnic.Open(name, Small);
        const int Total = 100_000;
        var mac = b.MacAddress;
        using var sender = Task.Run(() =>
        {
            Span<PacketDescriptor> batch = stackalloc PacketDescriptor[16];
            int seq = 0;
            while (seq < Total)
            {
                int k = Math.Min(16, Total - seq);
                for (int i = 0; i < k; i++)
                {
                    a.Buffers.TryAllocate(out int buf);
                    var f = a.Buffers.Span(buf);
                    int length = 64 + (seq + i) % 1400;
                    mac.Write(f);
                    BinaryPrimitives.WriteInt32BigEndian(f[14..], seq + i);
                    f[length - 1] = (byte)(seq + i);
                    batch[i] = new PacketDescriptor(buf, length);
                }
                int accepted = a.Transmit(batch[..k]);
                for (int i = accepted; i < k; i++)
                    a.Buffers.Release(batch[i].Buffer);
                seq += accepted;
            }
        });

        var rx = new PacketDescriptor[32];
        int expected = 0;
        var clock = Stopwatch.StartNew();
        while (expected < Total && clock.Elapsed < TimeSpan.FromSeconds(30))
        {
            int n = b.Receive(rx);
            for (int i = 0; i < n; i++)
            {
                var f = b.Buffers.Span(rx[i]);
                int seq = BinaryPrimitives.ReadInt32BigEndian(f[14..]);
                if (seq != expected || f.Length != 64 + seq % 1400 || f[^1] != (byte)seq)
                    Assert.Fail($"frame {expected}: got sequence {seq}, {f.Length} bytes, last byte {f[^1]}");
                expected++;
                b.Buffers.Release(rx[i].Buffer);
            }
        }
        Assert.That(sender.Wait(Deadline), Is.True);
        Assert.That(expected, Is.EqualTo(Total));
        Assert.That(a.Counters.TxDropRingFull, Is.GreaterThanOrEqualTo(0));
    }

    [Test]
    public void Frames_over_mtu_plus_14_or_under_an_ethernet_header_are_dropped_and_counted()
    {
        string name = UniqueName();
        using var a = ShmVnic.Open(name, Small);
        using var b = ShmVnic.Open(name, Small);
        var max = Frame(b.MacAddress, a.MacAddress, 1, a.Mtu + 14);
        var over = Frame(b.MacAddress, a.MacAddress, 2, a.Mtu + 15);
        var runt = new byte[13];
        int accepted = a.Transmit([TestFrames.InPool(a.Buffers, over), TestFrames.InPool(a.Buffers, runt), TestFrames.InPool(a.Buffers, max)]);
        Assert.That(accepted, Is.EqualTo(3), "all taken: two dropped as errors, one sent");
        var got = new List<byte[]>();
        TestFrames.Drain(b, got);
        Assert.Multiple(() =>
        {
            Assert.That(got, Has.Count.EqualTo(1));
            Assert.That(got[0], Is.EqualTo(max));
            Assert.That(a.Counters.TxErrors, Is.EqualTo(2));
            Assert.That(a.Counters.TxFrames, Is.EqualTo(1));
            Assert.That(a.Buffers.Available, Is.EqualTo(a.Buffers.Count));
        });
    }

    [Test]
    public void A_full_ring_stops_the_batch_and_leaves_the_rest_with_the_caller()
    {
        string name = UniqueName();
        using var a = ShmVnic.Open(name, Small with { RingSize = 8 });
        using var b = ShmVnic.Open(name, Small with { RingSize = 64 }); // a joiner takes the creator's geometry
        Assert.That(b.RingSlots, Is.EqualTo(8));
        Assert.That(SendBatch(a, b.MacAddress, 0, 10), Is.EqualTo(8));
        Assert.That(a.Counters.TxDropRingFull, Is.EqualTo(2));
        var got = new List<byte[]>();
        TestFrames.Drain(b, got);
        Assert.That(got, Has.Count.EqualTo(8));
        CheckFrames(got, b.MacAddress, a.MacAddress, 0, a.Mtu);
        Assert.That(SendBatch(a, b.MacAddress, 8, 8), Is.EqualTo(8), "room again once read");
    }

    [Test]
    public void Buffer_size_option_is_honoured_when_it_holds_a_jumbo_frame()
    {
        string name = UniqueName();
        using var a = ShmVnic.Open(name, Small with { BufferSize = 10_240 });
        using var b = ShmVnic.Open(name, Small with { BufferSize = 2048 });
        Assert.That(a.Buffers.BufferSize, Is.EqualTo(10_240));
        Assert.That(b.Buffers.BufferSize, Is.EqualTo(9216), "too small for MTU + 14: the backend chooses");
    }

    [Test]
    public void A_declared_sleeper_is_woken_by_the_doorbell_and_a_busy_poller_costs_no_write()
    {
        string name = UniqueName();
        using var a = ShmVnic.Open(name, Small);
        using var b = ShmVnic.Open(name, Small);

        // Busy polling: b never declares sleep, so a never writes b's eventfd.
        var got = new List<byte[]>();
        for (int i = 0; i < 50; i++)
        {
            Assert.That(SendBatch(a, b.MacAddress, i * 4, 4), Is.EqualTo(4));
            TestFrames.Drain(b, got);
        }
        Assert.Multiple(() =>
        {
            Assert.That(got, Has.Count.EqualTo(200));
            Assert.That(a.DoorbellsRung, Is.Zero);
            Assert.That(LinuxNative.PollReadable(b.WaitHandle, 0), Is.False);
        });

        // b declares sleep: the next batch rings once, and b's eventfd polls readable.
        Assert.That(b.PrepareToSleep(), Is.True, "nothing waiting: b may sleep");
        Assert.That(LinuxNative.PollReadable(b.WaitHandle, 0), Is.False);
        Assert.That(SendBatch(a, b.MacAddress, 1000, 3), Is.EqualTo(3));
        Assert.That(a.DoorbellsRung, Is.EqualTo(1));
        Assert.That(LinuxNative.PollReadable(b.WaitHandle, (int)Deadline.TotalMilliseconds), Is.True, "the doorbell woke b");
        Assert.That(SendBatch(a, b.MacAddress, 1003, 3), Is.EqualTo(3));
        Assert.That(a.DoorbellsRung, Is.EqualTo(1), "one ring per declared sleep");

        // Receiving clears the eventfd and the declaration.
        got.Clear();
        TestFrames.Drain(b, got);
        Assert.That(got, Has.Count.EqualTo(6));
        Assert.That(LinuxNative.PollReadable(b.WaitHandle, 0), Is.False, "Receive read the eventfd");
        Assert.That(SendBatch(a, b.MacAddress, 1006, 1), Is.EqualTo(1));
        Assert.That(a.DoorbellsRung, Is.EqualTo(1), "b is polling again: no ring");

        // Frames already waiting: PrepareToSleep says do not sleep and withdraws the declaration at once, so a send
        // before b's next Receive rings no doorbell.
        Assert.That(b.PrepareToSleep(), Is.False);
        Assert.That(b.DeclaredSleep, Is.False, "declaration withdrawn");
        Assert.That(SendBatch(a, b.MacAddress, 1007, 1), Is.EqualTo(1));
        Assert.That(a.DoorbellsRung, Is.EqualTo(1), "b is not going to sleep: no ring");
        Assert.That(LinuxNative.PollReadable(b.WaitHandle, 0), Is.False);
        TestFrames.Drain(b, got);

        // VnicWait arms the doorbell itself; a sender on another thread wakes it well before the timeout.
        var clock = Stopwatch.StartNew();
        using var sender = Task.Run(() =>
        {
            // Send only once b has declared its sleep, so the doorbell must ring (no guess at how long that takes).
            Poll.Until(() => b.DeclaredSleep, Deadline, "b to declare it will sleep");
            SendBatch(a, b.MacAddress, 2000, 1);
        });
        bool woke = VnicWait.Wait(b, 10_000);
        clock.Stop();
        bool senderDone = sender.Wait(Deadline);
        Assert.Multiple(() =>
        {
            Assert.That(senderDone, Is.True);
            Assert.That(woke, Is.True);
            Assert.That(clock.Elapsed, Is.LessThan(TimeSpan.FromSeconds(5)));
            Assert.That(a.DoorbellsRung, Is.EqualTo(2));
        });
        got.Clear();
        TestFrames.Drain(b, got);
        Assert.That(got, Has.Count.EqualTo(1));
    }

    [Test]
    public void A_third_opener_gets_a_clear_error()
    {
        string name = UniqueName();
        using var a = ShmVnic.Open(name, Small);
        using var b = ShmVnic.Open(name, Small);
        var e = Assert.Throws<IOException>(() => ShmVnic.Open(name, Small))!;
        Assert.That(e.Message, Does.StartWith($"shm:{name} already has two endpoints"));
        Assert.That(e.HResult, Is.EqualTo(98), "EADDRINUSE");
        Assert.That(a.PeerConnected && b.PeerConnected, Is.True, "the pair is undisturbed");
        Assert.That(SendBatch(a, b.MacAddress, 0, 1), Is.EqualTo(1));
        var got = new List<byte[]>();
        TestFrames.Drain(b, got);
        Assert.That(got, Has.Count.EqualTo(1));
    }

    [TestCase("")]
    [TestCase("a/b")]
    [TestCase("with space")]
    public void Bad_names_are_refused(string name)
    {
        var e = Assert.Throws<ArgumentException>(() => ShmVnic.Open(name, Small))!;
        Assert.That(e.Message, Does.StartWith("shm:" + name + ": "));
    }

    [Test]
    public void Names_longer_than_sun_path_allows_are_refused_and_the_longest_works()
    {
        string longest = UniqueName() + new string('x', ShmVnic.MaxNameLength);
        longest = longest[..ShmVnic.MaxNameLength];
        using (var v = ShmVnic.Open(longest, Small))
            Assert.That(v.IsListener, Is.True);
        var e = Assert.Throws<ArgumentException>(() => ShmVnic.Open(longest + "y", Small))!;
        Assert.That(e.Message, Does.Contain("sun_path"));
    }

    [Test]
    public void Dispose_is_idempotent_and_the_peer_sees_it_as_a_disconnect()
    {
        string name = UniqueName();
        using var a = ShmVnic.Open(name, Small);
        var b = ShmVnic.Open(name, Small);
        Assert.That(a.PrepareToSleep(), Is.False, "the monitor poked a when b joined: poll once more");
        Assert.That(TestFrames.Drain(a, []), Is.Zero);
        Assert.That(a.PrepareToSleep(), Is.True);
        b.Dispose();
        b.Dispose();
        Assert.That(b.WaitHandle, Is.EqualTo(-1));
        Assert.Throws<ObjectDisposedException>(() => b.Receive(new PacketDescriptor[1]));
        Poll.Until(() => !a.PeerConnected, Deadline, "a to see b gone");
        Assert.That(LinuxNative.PollReadable(a.WaitHandle, (int)Deadline.TotalMilliseconds), Is.True, "the monitor woke the sleeper");
        Assert.That(a.PeerProcessId, Is.Zero);
        Assert.That(a.IsListener, Is.True);
    }

    [Test]
    public void Without_a_peer_transmit_drops_and_counts_and_a_new_peer_gets_fresh_rings()
    {
        string name = UniqueName();
        using var a = ShmVnic.Open(name, Small);
        Assert.That(SendBatch(a, MacAddress.Broadcast, 0, 5), Is.EqualTo(5), "no peer yet: accepted and dropped");
        Assert.That(a.TxDropPeerGone, Is.EqualTo(5));

        var b = ShmVnic.Open(name, Small);
        // In flight when b goes: 3 frames a sent that b has not read, 2 that b sent and a has not read.
        Assert.That(SendBatch(a, b.MacAddress, 10, 3), Is.EqualTo(3));
        Assert.That(SendBatch(b, a.MacAddress, 20, 2), Is.EqualTo(2));
        b.Dispose();
        Poll.Until(() => !a.PeerConnected, Deadline, "a to see b gone");

        Assert.That(SendBatch(a, MacAddress.Broadcast, 30, 4), Is.EqualTo(4), "Transmit neither blocks nor throws");
        Assert.That(a.TxDropPeerGone, Is.EqualTo(9));
        Assert.That(a.Buffers.Available, Is.EqualTo(a.Buffers.Count));
        var got = new List<byte[]>();
        TestFrames.Drain(a, got);
        Assert.That(got, Is.Empty, "frames from the dead peer are discarded");
        Assert.That(a.RxDiscardedOnPeerLoss, Is.EqualTo(2));

        using var c = ShmVnic.Open(name, Small);
        Assert.That(a.PeerConnected && c.PeerConnected, Is.True);
        Assert.That(a.Joins, Is.EqualTo(2));
        Assert.That(a.TxDiscardedOnPeerLoss, Is.EqualTo(3));
        TestFrames.Drain(c, got);
        Assert.That(got, Is.Empty, "c does not see what was meant for b");

        Assert.That(SendBatch(a, c.MacAddress, 100, 20), Is.EqualTo(20));
        Assert.That(SendBatch(c, a.MacAddress, 200, 20), Is.EqualTo(20));
        TestFrames.Drain(c, got);
        CheckFrames(got, c.MacAddress, a.MacAddress, 100, a.Mtu);
        Assert.That(got, Has.Count.EqualTo(20));
        got.Clear();
        TestFrames.Drain(a, got);
        Assert.That(got, Has.Count.EqualTo(20));
        CheckFrames(got, a.MacAddress, c.MacAddress, 200, a.Mtu);
    }

    [Test]
    public void When_the_creator_goes_the_joiner_takes_the_name_and_a_newcomer_joins_it()
    {
        string name = UniqueName();
        var a = ShmVnic.Open(name, Small);
        using var b = ShmVnic.Open(name, Small);
        a.Dispose();
        Poll.Until(() => !b.PeerConnected, Deadline, "b to see a gone");
        Poll.Until(() => b.IsListener, Deadline, "b to take the name");

        using var c = ShmVnic.Open(name, Small);
        Assert.That(c.IsListener, Is.False);
        Assert.That(b.PeerConnected && c.PeerConnected, Is.True);
        Assert.That(c.RxRing, Is.EqualTo(1 - b.RxRing));
        Assert.That(SendBatch(b, c.MacAddress, 0, 10), Is.EqualTo(10));
        Assert.That(SendBatch(c, b.MacAddress, 50, 10), Is.EqualTo(10));
        var atC = new List<byte[]>();
        var atB = new List<byte[]>();
        TestFrames.Drain(c, atC);
        TestFrames.Drain(b, atB);
        CheckFrames(atC, c.MacAddress, b.MacAddress, 0, b.Mtu);
        CheckFrames(atB, b.MacAddress, c.MacAddress, 50, b.Mtu);
        Assert.That(atC.Count + atB.Count, Is.EqualTo(20));
    }

    [Test]
    public void A_chosen_mac_is_used_and_a_clash_with_the_peer_is_refused()
    {
        string name = UniqueName();
        var mac = MacAddress.Parse("02:00:00:00:5e:01");
        using var a = ShmVnic.Open(name, Small with { MacAddress = mac });
        Assert.That(a.MacAddress, Is.EqualTo(mac));
        var e = Assert.Throws<ArgumentException>(() => ShmVnic.Open(name, Small with { MacAddress = mac }))!;
        Assert.That(e.Message, Does.Contain("other endpoint's"));
        Poll.Until(() => !a.PeerConnected, Deadline, "a stays alone");
        using var b = ShmVnic.Open(name, Small);
        Assert.That(b.PeerConnected, Is.True, "a still accepts after the refused joiner");
    }

    [Test]
    public void Two_stacks_exchange_an_8000_byte_udp_datagram_unfragmented()
    {
        string name = UniqueName();
        using var va = ShmVnic.Open(name, Small);
        using var vb = ShmVnic.Open(name, Small);
        using var a = new NetStack(va, new StackOptions { Address = Ipv4Cidr.Parse("10.77.0.1/24") });
        using var b = new NetStack(vb, new StackOptions { Address = Ipv4Cidr.Parse("10.77.0.2/24") });
        var ipv4FramesAtB = new List<int>();
        b.Trace = (tx, frame) =>
        {
            if (!tx && TestFrames.EtherType(frame) == TestFrames.EtherTypeIpv4)
                ipv4FramesAtB.Add(frame.Length);
        };
        int sa = a.UdpOpen();
        int sb = b.UdpOpen();
        Assert.That(b.UdpBind(sb, new Ipv4Endpoint(Ipv4Address.Any, 7000)), Is.Zero);
        var payload = new byte[8000];
        new Random(8000).NextBytes(payload);
        Assert.That(a.UdpSendTo(sa, payload, new Ipv4Endpoint(Ipv4Address.Parse("10.77.0.2"), 7000)), Is.EqualTo(8000));
        var buf = new byte[9000];
        int n = -1;
        Poll.Until(() =>
        {
            a.Poll();
            b.Poll();
            n = b.UdpReceiveFrom(sb, buf, out _);
            return n >= 0;
        }, Deadline, "the datagram at b");
        Assert.That(buf.AsSpan(0, n).SequenceEqual(payload), Is.True);
        Assert.That(ipv4FramesAtB, Is.EqualTo(new[] { 14 + 20 + 8 + 8000 }), "one frame, not fragments");
    }

    // ---------------------------------------------------------------------------------------------------------
    // The peer as a separate process (dist/bin/onload-echo), killed with SIGKILL.

    [Test]
    public void Kill_9_of_the_peer_process_is_noticed_and_a_new_one_joins()
    {
        string echo = Dist.Bin("onload-echo");
        string name = UniqueName();
        int n = Environment.ProcessId % 250 + 1;
        var echoIp = IPAddress.Parse(string.Create(CultureInfo.InvariantCulture, $"10.79.{n}.2"));
        var ourIp = IPAddress.Parse(string.Create(CultureInfo.InvariantCulture, $"10.79.{n}.1"));

        using var first = EchoProcess.Start(echo, "shm:" + name, $"{echoIp}/24");
        using var vnic = ShmVnic.Open(name, Small);
        Assert.That(vnic.IsListener, Is.False, "onload-echo created the region");
        Assert.That(vnic.PeerConnected, Is.True);
        Assert.That(vnic.PeerProcessId, Is.EqualTo(first.Pid));
        ArpExchange(vnic, ourIp, echoIp);

        first.KillHard();
        Poll.Until(() => !vnic.PeerConnected, Deadline, "the ShmVnic to see onload-echo killed");
        Poll.Until(() => vnic.IsListener, Deadline, "the survivor to take the name");
        long before = vnic.TxDropPeerGone;
        var request = TestFrames.Build(MacAddress.Broadcast, vnic.MacAddress, TestFrames.Request,
            vnic.MacAddress, ourIp, MacAddress.Zero, echoIp);
        Assert.That(vnic.Transmit([TestFrames.InPool(vnic.Buffers, request)]), Is.EqualTo(1));
        Assert.That(vnic.TxDropPeerGone, Is.EqualTo(before + 1));

        using var second = EchoProcess.Start(echo, "shm:" + name, $"{echoIp}/24");
        Poll.Until(() => vnic.PeerConnected, Deadline, "the new onload-echo to join");
        Assert.That(vnic.PeerProcessId, Is.EqualTo(second.Pid));
        Assert.That(vnic.Joins, Is.EqualTo(1));
        ArpExchange(vnic, ourIp, echoIp);
    }

    /// <summary>Asks for <paramref name="theirs"/> by ARP until the reply comes.</summary>
    private static void ArpExchange(ShmVnic vnic, IPAddress ours, IPAddress theirs)
    {
        var reply = TestFrames.ArpExchange(vnic, ours, theirs, Deadline);
        Assert.Multiple(() =>
        {
            Assert.That(TestFrames.EthDst(reply!), Is.EqualTo(vnic.MacAddress));
            Assert.That(TestFrames.SenderIp(reply!), Is.EqualTo(theirs));
            Assert.That(TestFrames.SenderMac(reply!), Is.EqualTo(vnic.PeerMacAddress));
            Assert.That(TestFrames.TargetIp(reply!), Is.EqualTo(ours));
        });
    }

    /// <summary>onload-echo as a child process, started directly (no namespace), stdout and stderr collected.</summary>
    private sealed class EchoProcess : IDisposable
    {
        private readonly Process _process;
        private readonly StringBuilder _output = new();

        private EchoProcess(Process process) => _process = process;

        public int Pid => _process.Id;

        public static EchoProcess Start(string program, string spec, string cidr)
        {
            var psi = new ProcessStartInfo(program)
            {
                RedirectStandardOutput = true,
                RedirectStandardError = true,
                UseShellExecute = false,
            };
            foreach (var arg in new[] { "--vnic", spec, "--addr", cidr, "--udp", "7" })
                psi.ArgumentList.Add(arg);
            var p = new EchoProcess(Process.Start(psi)!);
            p._process.OutputDataReceived += (_, e) => p.Append(e.Data);
            p._process.ErrorDataReceived += (_, e) => p.Append(e.Data);
            p._process.BeginOutputReadLine();
            p._process.BeginErrorReadLine();
            if (!Poll.TryUntil(() => p.Output.Contains("ready", StringComparison.Ordinal) || p._process.HasExited, Deadline)
                || !p.Output.Contains("ready", StringComparison.Ordinal))
            {
                string text = p.Output;
                p.Dispose();
                Assert.Fail($"onload-echo on {spec} did not get ready; it said:\n{text}");
            }
            return p;
        }

        private void Append(string? line)
        {
            if (line is null)
                return;
            lock (_output)
                _output.AppendLine(line);
        }

        public string Output
        {
            get
            {
                lock (_output)
                    return _output.ToString();
            }
        }

        /// <summary>SIGKILL (Process.Kill sends it on Linux), then waits for the exit.</summary>
        public void KillHard()
        {
            _process.Kill();
            _process.WaitForExit(5000);
        }

        public void Dispose()
        {
            try
            {
                if (!_process.HasExited)
                    KillHard();
            }
            catch (InvalidOperationException)
            {
            }
            if (TestContext.CurrentContext.Result.Outcome.Status == NUnit.Framework.Interfaces.TestStatus.Failed)
                TestContext.Out.WriteLine($"onload-echo (pid {_process.Id}) said:\n{Output}");
            _process.Dispose();
        }
    }
}
