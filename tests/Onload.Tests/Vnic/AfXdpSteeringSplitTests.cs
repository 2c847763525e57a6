using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Text.RegularExpressions;
using NUnit.Framework;
using Onload.Tests.Netns;
using Onload.Vnic;
using Onload.Vnic.AfXdp;
using Onload.Vnic.Native;
using static Onload.Tests.Vnic.AfXdpFilterModeTests;

namespace Onload.Tests.Vnic;

using Netns = Onload.Tests.Netns.Netns;

/// <summary>
/// The af_xdp backend cut in two, as onload-driverd and its clients use it: an <see cref="XdpFilterSteering"/> owns
/// the interface's filter-mode program, maps and link (and may pin them, so that a restarted owner adopts them), and
/// a VNIC opened with <see cref="AfXdpVnic.OpenOnSocket"/> owns only a socket that the steering's owner made and
/// puts in its XSKMAP. Both halves live in this process here; the client's half runs without capabilities.
/// </summary>
[TestFixture]
[Category("netns")]
[NonParallelizable]
public sealed partial class AfXdpSteeringSplitTests
{
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(10);
    private const ushort UdpPort = 9500;

    private static VnicOptions Options() => new() { BufferCount = 256, RingSize = 64 };

    [Test]
    public void A_client_without_capabilities_binds_the_owners_socket_and_gets_the_filtered_flow_until_ClearSocket_which_drops_it()
    {
        Netns.RequireRoot();
        using var pair = KernelHoldsTheAddress();
        uint ours = HostOrder(pair.StackAddress);
        using var steering = pair.Stack.Run(() => XdpFilterSteering.AttachOrAdopt(pair.StackIf, maxFilters: 16));
        Assert.Multiple(() =>
        {
            Assert.That(steering.Adopted, Is.False);
            Assert.That(steering.InterfaceName, Is.EqualTo(pair.StackIf));
            Assert.That(steering.MaxFilters, Is.EqualTo(16));
            Assert.That(XdpProgramIds(pair.Stack, pair.StackIf), Has.Count.EqualTo(1), "the program is attached");
        });

        // The owner's part: the socket (CAP_NET_RAW). The client's: UMEM, rings and bind, on a thread that has no
        // capability in effect — it can neither create a socket nor a map, and needs neither.
        int xsk = pair.Stack.Run(AfXdpVnic.CreateSocket);
        var (vnic, mapCreate, socketError) = pair.Stack.Run(() =>
        {
            ThreadCapabilities.DropAllEffective();
            int map = Bpf.MapCreate(Bpf.BPF_MAP_TYPE_XSKMAP, 4, 4, 1, "olt_probe");
            if (map >= 0)
                Libc.Close(map);
            int refused = 0;
            try
            {
                Libc.Close(AfXdpVnic.CreateSocket());
            }
            catch (IOException e)
            {
                refused = e.HResult;
            }
            return (AfXdpVnic.OpenOnSocket(pair.StackIf, xsk, Options()), map, refused);
        });
        using var _ = vnic;
        Assert.Multiple(() =>
        {
            Assert.That(mapCreate, Is.EqualTo(-1), "-EPERM: no XSKMAP without CAP_NET_ADMIN: EPERM (the capabilities are gone)");
            Assert.That(socketError, Is.EqualTo(1), "no AF_XDP socket without CAP_NET_RAW: EPERM");
            Assert.That(vnic.WaitHandle, Is.EqualTo(xsk), "the VNIC runs on the socket it was given");
            Assert.That(vnic.AddFilter(ProtocolType.Udp, ours, UdpPort), Is.EqualTo(-95), "filters are the owner's: EOPNOTSUPP");
        });

        // The kernel (5.10 on) takes even an unbound socket into an XSKMAP, which is why the owner waits for the
        // client's bind; anything but an AF_XDP socket it refuses.
        int unbound = pair.Stack.Run(AfXdpVnic.CreateSocket);
        try
        {
            Assert.That(steering.SetSocket(0, unbound), Is.Zero, "an unbound AF_XDP socket is not refused");
        }
        finally
        {
            Libc.Close(unbound);
        }
        using (var udp = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp))
            Assert.That(steering.SetSocket(0, (int)udp.Handle), Is.EqualTo(-95), "a UDP socket: EOPNOTSUPP");

        Assert.That(steering.AddFilter(ProtocolType.Udp, ours, UdpPort), Is.Zero);
        Assert.That(steering.FilterCount, Is.EqualTo(1));
        Assert.That(steering.SetSocket(0, vnic.WaitHandle), Is.Zero);
        using var osSocket = pair.Start(pair.StackNs, "socat", "-u", $"UDP4-RECV:{UdpPort}", "STDOUT");
        Poll.Until(() => pair.Stack.Exec("ss -uln").Contains($":{UdpPort}", StringComparison.Ordinal), Deadline, "the kernel's socket listening");
        ExpectOnSocket(pair, vnic, "to-the-client");
        Assert.That(osSocket.Stdout, Is.Empty, "the kernel's socket on the port heard nothing while the socket was in the map");

        // Out of the XSKMAP, the filter still matches and its frames are dropped: not handed to the kernel, whose
        // socket on the port would reset a connection that a client waiting to reattach still holds.
        Assert.That(steering.ClearSocket(0), Is.Zero);
        for (int i = 0; i < 5; i++)
            SendUdp(pair, pair.StackAddress, UdpPort, "after-clear");
        // Removing the filter gives the flow back to the kernel; the datagrams sent before it went nowhere.
        Assert.That(steering.RemoveFilter(ProtocolType.Udp, ours, UdpPort), Is.Zero);
        Poll.Until(() =>
        {
            SendUdp(pair, pair.StackAddress, UdpPort, "after-remove");
            return osSocket.Stdout.Contains("after-remove", StringComparison.Ordinal);
        }, Deadline, "the kernel's socket to hear a datagram once the filter is gone");
        Assert.That(osSocket.Stdout, Does.Not.Contain("after-clear"), "a filtered flow with no socket in the map is dropped, not passed");
        var received = new List<byte[]>();
        TestFrames.Drain(vnic, received);
        Assert.That(received.Where(f => IsTo(f, ProtocolType.Udp, UdpPort)).Select(UdpPayload),
            Has.None.EqualTo("after-clear\n").And.None.EqualTo("after-remove\n"));

        steering.Dispose();
        Assert.That(XdpProgramIds(pair.Stack, pair.StackIf), Is.Empty, "Dispose detaches");
        Assert.That(steering.SetSocket(0, vnic.WaitHandle), Is.EqualTo(-9), "EBADF once disposed");
    }

    [Test]
    public void A_restarted_owner_adopts_the_pinned_program_and_its_filters_without_detaching_it()
    {
        Netns.RequireRoot();
        using var pair = KernelHoldsTheAddress();
        uint ours = HostOrder(pair.StackAddress);
        string root = $"{BpfFs.MountPoint}/{pair.StackNs}";
        string pins = $"{root}/{pair.StackIf}";
        XdpFilterSteering? first = null;
        XdpFilterSteering? second = null;
        try
        {
            first = pair.Stack.Run(() => XdpFilterSteering.AttachOrAdopt(pair.StackIf, maxFilters: 16, pins));
            Assert.That(first.Adopted, Is.False, "nothing pinned yet: attached anew");
            Assert.That(Directory.GetFiles(pins).Select(Path.GetFileName), Is.EquivalentTo(new[] { "link", "xsks", "filters" }));
            var ids = XdpProgramIds(pair.Stack, pair.StackIf);
            Assert.That(ids, Has.Count.EqualTo(1));

            int xsk = pair.Stack.Run(AfXdpVnic.CreateSocket);
            using var vnic = pair.Stack.Run(() => AfXdpVnic.OpenOnSocket(pair.StackIf, xsk, Options()));
            Assert.That(first.SetSocket(0, vnic.WaitHandle), Is.Zero);
            Assert.That(first.AddFilter(ProtocolType.Udp, ours, UdpPort), Is.Zero);
            ExpectOnSocket(pair, vnic, "first-owner");

            // The owner goes (a daemon restarting): the program stays attached, the filter and the socket in its maps.
            first.Release();
            Assert.That(XdpProgramIds(pair.Stack, pair.StackIf), Is.EqualTo(ids), "still attached, the same program");
            ExpectOnSocket(pair, vnic, "no-owner");

            second = pair.Stack.Run(() => XdpFilterSteering.AttachOrAdopt(pair.StackIf, maxFilters: 99, pins));
            Assert.Multiple(() =>
            {
                Assert.That(second.Adopted, Is.True);
                Assert.That(second.MaxFilters, Is.EqualTo(16), "the pinned map's capacity, not the argument");
                Assert.That(second.FilterCount, Is.EqualTo(1), "counted in the map");
                Assert.That(XdpProgramIds(pair.Stack, pair.StackIf), Is.EqualTo(ids), "one program, the one pinned");
            });
            ExpectOnSocket(pair, vnic, "second-owner");
            Assert.That(second.AddFilter(ProtocolType.Udp, ours, UdpPort), Is.EqualTo(-98), "the same map: EADDRINUSE");

            second.ClearFilters();
            Assert.That(second.FilterCount, Is.Zero);
            Assert.That(second.AddFilter(ProtocolType.Udp, ours, UdpPort), Is.Zero, "the map was emptied");

            second.Dispose();
            Assert.Multiple(() =>
            {
                Assert.That(Directory.Exists(pins), Is.False, "Dispose removes the pins");
                Assert.That(XdpProgramIds(pair.Stack, pair.StackIf), Is.Empty, "and detaches");
                Assert.That(pair.Stack.Ip($"link show dev {pair.StackIf}"), Does.Not.Contain("xdp"));
            });
        }
        finally
        {
            second?.Dispose();
            first?.Dispose();
            RemovePinRoot(root);
        }
    }

    [Test]
    public void Pins_whose_link_is_not_on_the_interface_are_replaced_not_adopted()
    {
        Netns.RequireRoot();
        using var pair = KernelHoldsTheAddress();
        // A second interface in the stack's namespace (a veth pair of its own; it goes with the namespace).
        string other = pair.StackNs + "a";
        pair.Stack.Ip($"link add {other} type veth peer name {pair.StackNs}b");
        pair.Stack.Ip($"link set {other} up");
        string root = $"{BpfFs.MountPoint}/{pair.StackNs}";
        string pins = $"{root}/shared";
        XdpFilterSteering? first = null;
        XdpFilterSteering? second = null;
        try
        {
            first = pair.Stack.Run(() => XdpFilterSteering.AttachOrAdopt(pair.StackIf, maxFilters: 8, pins));
            Assert.That(first.AddFilter(ProtocolType.Udp, HostOrder(pair.StackAddress), UdpPort), Is.Zero);
            first.Release();

            second = pair.Stack.Run(() => XdpFilterSteering.AttachOrAdopt(other, maxFilters: 8, pins));
            Assert.Multiple(() =>
            {
                Assert.That(second.Adopted, Is.False, "the pinned link is on another interface");
                Assert.That(second.FilterCount, Is.Zero, "fresh maps");
                Assert.That(XdpProgramIds(pair.Stack, other), Has.Count.EqualTo(1));
                Assert.That(XdpProgramIds(pair.Stack, pair.StackIf), Is.Empty, "the stale link went with its pins");
            });
        }
        finally
        {
            second?.Dispose();
            first?.Dispose();
            RemovePinRoot(root);
        }
    }

    /// <summary>Sends <paramref name="text"/> from the kernel peer to <see cref="UdpPort"/> until the VNIC has it.</summary>
    private static void ExpectOnSocket(NamespacePair pair, IVnic vnic, string text)
    {
        var received = new List<byte[]>();
        Poll.Until(() =>
        {
            SendUdp(pair, pair.StackAddress, UdpPort, text);
            TestFrames.Drain(vnic, received);
            return received.Exists(f => IsTo(f, ProtocolType.Udp, UdpPort) && UdpPayload(f) == text + "\n");
        }, Deadline, $"'{text}' on the socket");
    }

    /// <summary>The ids of the XDP programs attached to the interface, from <c>ip -d link show</c> ("prog/xdp id N").</summary>
    private static List<int> XdpProgramIds(TestNamespace ns, string ifname) =>
        ProgXdpId().Matches(ns.Ip($"-d link show dev {ifname}")).Select(m => int.Parse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture)).ToList();

    [GeneratedRegex(@"prog/xdp id (\d+)")]
    private static partial Regex ProgXdpId();

    /// <summary>Removes a test's pin directory and what is in it, whatever the test left.</summary>
    private static void RemovePinRoot(string root)
    {
        if (Directory.Exists(root))
            Directory.Delete(root, recursive: true);
    }

    /// <summary>capget/capset on the calling thread (capabilities are per thread in Linux).</summary>
    private static unsafe partial class ThreadCapabilities
    {
        private const uint LinuxCapabilityVersion3 = 0x20080522;

        [LibraryImport("libc", EntryPoint = "capget", SetLastError = true)]
        private static partial int CapGet(CapHeader* header, CapData* data);

        [LibraryImport("libc", EntryPoint = "capset", SetLastError = true)]
        private static partial int CapSet(CapHeader* header, CapData* data);

        /// <summary>Clears the thread's effective set (the permitted set stays, so nothing is lost for good; the
        /// thread ends with its work anyway).</summary>
        public static void DropAllEffective()
        {
            var header = new CapHeader { Version = LinuxCapabilityVersion3 };
            CapData* data = stackalloc CapData[2];
            if (CapGet(&header, data) != 0)
                throw new InvalidOperationException("capget: errno " + Marshal.GetLastPInvokeError());
            data[0].Effective = 0;
            data[1].Effective = 0;
            if (CapSet(&header, data) != 0)
                throw new InvalidOperationException("capset: errno " + Marshal.GetLastPInvokeError());
        }

        [StructLayout(LayoutKind.Sequential)]
        private struct CapHeader
        {
            public uint Version;
            public int Pid;
        }

        [StructLayout(LayoutKind.Sequential)]
        private struct CapData
        {
            public uint Effective;
            public uint Permitted;
            public uint Inheritable;
        }
    }
}
