using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;
using Onload.Driverlink;

namespace Onload.Tests.Driverlink;

[TestFixture]
public partial class TransportTests
{
    [LibraryImport("libc", EntryPoint = "memfd_create", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int MemfdCreate(string name, uint flags);

    [LibraryImport("libc", EntryPoint = "getuid")]
    private static partial uint GetUid();

    private const uint MFD_CLOEXEC = 1;

    [Test]
    public void A_memfd_passed_with_a_message_arrives_open_with_its_content()
    {
        var (a, b) = DriverlinkSocket.CreatePair();
        using var _a = a;
        using var _b = b;
        int memfd = MemfdCreate("driverlink-test", MFD_CLOEXEC);
        Assert.That(memfd, Is.GreaterThanOrEqualTo(0), $"memfd_create: errno {Marshal.GetLastPInvokeError()}");
        using (var mine = new SafeFileHandle(memfd, ownsHandle: true))
        {
            RandomAccess.Write(mine, "ring memory"u8, 0);
            var reply = AttachReply.Success(3, 1500, Onload.Vnic.MacAddress.Parse("02:00:00:00:00:03"), [], VnicMode.Exclusive) with { RequestId = 42 };
            Assert.That(a.Send(reply, [memfd]), Is.EqualTo(0));
        } // the sender's copy is closed: what arrives is the kernel's duplicate

        Span<int> fds = stackalloc int[4];
        var result = b.Receive(fds, out var message);

        Assert.That(result.Status, Is.EqualTo(ReceiveStatus.Ok));
        Assert.That(result.DescriptorCount, Is.EqualTo(1));
        Assert.That(message, Is.InstanceOf<AttachReply>().With.Property(nameof(Message.RequestId)).EqualTo(42u));
        using var received = new SafeFileHandle(fds[0], ownsHandle: true);
        var content = new byte[32];
        int n = RandomAccess.Read(received, content, 0);
        Assert.That(content[..n], Is.EqualTo("ring memory"u8.ToArray()));
    }

    [Test]
    public void Several_descriptors_arrive_in_order_and_the_extra_ones_are_reported_when_the_span_is_short()
    {
        var (a, b) = DriverlinkSocket.CreatePair();
        using var _a = a;
        using var _b = b;
        int[] memfds = [MemfdCreate("one", MFD_CLOEXEC), MemfdCreate("two", MFD_CLOEXEC), MemfdCreate("three", MFD_CLOEXEC)];
        var handles = memfds.Select(fd => new SafeFileHandle(fd, ownsHandle: true)).ToArray();
        try
        {
            for (int i = 0; i < 3; i++)
                RandomAccess.Write(handles[i], [(byte)('1' + i)], 0);
            Assert.That(a.Send(new SuspendEvent(1), memfds), Is.EqualTo(0));
            Assert.That(a.Send(new ResumeEvent(1), memfds), Is.EqualTo(0));

            Span<int> three = stackalloc int[3];
            var all = b.Receive(three, out var first);
            Assert.That((all.Status, all.DescriptorCount, first), Is.EqualTo((ReceiveStatus.Ok, 3, (Message)new SuspendEvent(1))));
            for (int i = 0; i < 3; i++)
            {
                using var h = new SafeFileHandle(three[i], ownsHandle: true);
                var one = new byte[1];
                RandomAccess.Read(h, one, 0);
                Assert.That(one[0], Is.EqualTo((byte)('1' + i)));
            }

            Span<int> two = stackalloc int[2];
            var cut = b.Receive(two, out _);
            Assert.That(cut.Status, Is.EqualTo(ReceiveStatus.DescriptorsTruncated));
            for (int i = 0; i < cut.DescriptorCount; i++)
                new SafeFileHandle(two[i], ownsHandle: true).Dispose();
        }
        finally
        {
            foreach (var h in handles)
                h.Dispose();
        }
    }

    [Test]
    public void A_malformed_record_is_reported_with_its_error_and_the_connection_stays_usable()
    {
        var (a, b) = DriverlinkSocket.CreatePair();
        using var _a = a;
        using var _b = b;
        byte[] bad = new Detach(1).ToArray();
        bad[0] = (byte)'X';
        Assert.That(a.Send(bad), Is.EqualTo(0));
        Assert.That(a.Send(new byte[MessageHeader.MaxMessageLength + 100]), Is.EqualTo(0));
        Assert.That(a.Send(new Detach(2)), Is.EqualTo(0));

        var r1 = b.Receive(default, out var m1);
        var r2 = b.Receive(default, out var m2);
        var r3 = b.Receive(default, out var m3);

        Assert.That((r1.Status, r1.DecodeError, m1), Is.EqualTo((ReceiveStatus.Malformed, DecodeError.BadMagic, (Message?)null)));
        Assert.That((r2.Status, r2.DecodeError, m2), Is.EqualTo((ReceiveStatus.Malformed, DecodeError.Oversized, (Message?)null)));
        Assert.That((r3.Status, m3), Is.EqualTo((ReceiveStatus.Ok, (Message?)new Detach(2))));
    }

    [Test]
    public void A_closed_peer_reads_as_peer_closed_and_an_empty_socket_as_would_block()
    {
        var (a, b) = DriverlinkSocket.CreatePair();
        using var _b = b;
        Assert.That(b.Receive(default, out _, dontWait: true).Status, Is.EqualTo(ReceiveStatus.WouldBlock));
        a.Dispose();
        Assert.That(b.Receive(default, out _).Status, Is.EqualTo(ReceiveStatus.PeerClosed));
        Assert.That(b.Send(new Detach(1)), Is.EqualTo(32), "EPIPE, and no SIGPIPE");
    }

    [Test]
    public void A_client_connects_to_an_abstract_name_and_each_side_sees_the_others_credentials()
    {
        string name = $"onload-test-{Environment.ProcessId}-{Guid.NewGuid():N}";
        using var listener = DriverlinkSocket.Listen(name);
        using var client = DriverlinkSocket.Connect(name);
        using var server = listener.Accept();

        Assert.That(client.Send(new Hello(PeerRole.Client, "test")), Is.EqualTo(0));
        var got = server.Receive(default, out var hello);
        Assert.That((got.Status, hello), Is.EqualTo((ReceiveStatus.Ok, (Message?)new Hello(PeerRole.Client, "test"))));

        var seenByServer = server.PeerCredentials();
        var seenByClient = client.PeerCredentials();
        Assert.That(seenByServer.Pid, Is.EqualTo(Environment.ProcessId));
        Assert.That(seenByServer.Uid, Is.EqualTo(GetUid()));
        Assert.That(seenByClient.Pid, Is.EqualTo(Environment.ProcessId));
    }

    [Test]
    public void Connecting_where_nobody_listens_is_refused_with_econnrefused()
    {
        var e = Assert.Throws<DriverlinkSocketException>(() => DriverlinkSocket.Connect($"onload-test-nobody-{Guid.NewGuid():N}"));
        Assert.That(e!.Errno, Is.EqualTo(111));
    }

    [Test]
    public void A_second_listener_on_the_same_name_is_refused_with_eaddrinuse()
    {
        string name = $"onload-test-{Guid.NewGuid():N}";
        using var first = DriverlinkSocket.Listen(name);
        var e = Assert.Throws<DriverlinkSocketException>(() => DriverlinkSocket.Listen(name));
        Assert.That(e!.Errno, Is.EqualTo(98));
    }
}
