using System.Globalization;
using System.Net;
using NUnit.Framework;
using Onload.Tests.Netns;
using Onload.Vnic;
using Onload.Vnic.Tap;

namespace Onload.Tests.Vnic;

// The class Netns lives in the namespace Onload.Tests.Netns, which from here the bare name would mean.
using Netns = Onload.Tests.Netns.Netns;

/// <summary>The tap backend as the wire side of a tap whose kernel side is a namespace's Linux stack.</summary>
[TestFixture]
[Category("netns")]
public sealed class TapTests
{
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(5);
    private static readonly VnicOptions Small = new() { BufferCount = 64 };

    [Test]
    public void Answers_the_kernels_arp_request_and_the_kernel_learns_our_mac()
    {
        Netns.RequireRoot();
        int instance = TestNames.NextInstance();
        using var ns = new TestNamespace(instance, 'n');
        string tapName = TestNames.Make(instance, 't');
        int n = (Environment.ProcessId * 31 + instance) % 250 + 1;
        var kernelIp = IPAddress.Parse(string.Create(CultureInfo.InvariantCulture, $"10.78.{n}.1"));
        var stackIp = IPAddress.Parse(string.Create(CultureInfo.InvariantCulture, $"10.78.{n}.2"));

        using (var tap = ns.Run(() => VnicFactory.Open("tap:" + tapName, Small)))
        {
            var vnic = (TapVnic)tap;
            Assert.Multiple(() =>
            {
                Assert.That(vnic.Created, Is.True, "the tap did not exist before");
                Assert.That(vnic.InterfaceName, Is.EqualTo(tapName));
                Assert.That(vnic.MacAddress, Is.Not.EqualTo(vnic.InterfaceMacAddress), "our MAC differs from the tap's");
                Assert.That(vnic.MacAddress.IsGroup, Is.False);
                Assert.That(vnic.Mtu, Is.EqualTo(1500));
                Assert.That(ns.Ip($"-o link show dev {tapName}"), Does.Contain("<BROADCAST,MULTICAST,UP,LOWER_UP>"),
                    "the open brought the tap up");
            });
            ns.Ip($"addr add {kernelIp}/24 dev {tapName}");

            // The kernel must resolve stackIp before it can send the echo request: it asks by ARP, out of the tap.
            ns.Start("ping", "-c", "1", "-W", "3", stackIp.ToString());
            var received = new List<byte[]>();
            Poll.Until(() =>
            {
                TestFrames.Drain(tap, received);
                return received.Exists(f => TestFrames.IsArp(f) && TestFrames.Operation(f) == TestFrames.Request);
            }, Deadline, "the kernel's ARP request out of the tap");
            var request = received.Find(f => TestFrames.IsArp(f) && TestFrames.Operation(f) == TestFrames.Request)!;
            Assert.Multiple(() =>
            {
                Assert.That(TestFrames.EthSrc(request), Is.EqualTo(vnic.InterfaceMacAddress));
                Assert.That(TestFrames.SenderIp(request), Is.EqualTo(kernelIp));
                Assert.That(TestFrames.TargetIp(request), Is.EqualTo(stackIp));
            });

            var reply = TestFrames.Build(vnic.InterfaceMacAddress, tap.MacAddress, TestFrames.Reply,
                tap.MacAddress, stackIp, vnic.InterfaceMacAddress, kernelIp);
            Assert.That(tap.Transmit([TestFrames.InPool(tap.Buffers, reply)]), Is.EqualTo(1));

            string neigh = "";
            Poll.Until(() =>
            {
                neigh = ns.Ip($"neigh show {stackIp} dev {tapName}");
                return neigh.Contains(tap.MacAddress.ToString(), StringComparison.Ordinal);
            }, Deadline, $"the kernel's neighbour entry for {stackIp} with our MAC (last: '{neigh.Trim()}')");

            // With the neighbour resolved, the queued echo request follows, addressed to our MAC.
            Poll.Until(() =>
            {
                TestFrames.Drain(tap, received);
                return received.Exists(f => TestFrames.IsIcmpEchoRequestTo(f, stackIp) && TestFrames.EthDst(f) == tap.MacAddress);
            }, Deadline, "the echo request the kernel held back for ARP");

            Assert.Multiple(() =>
            {
                Assert.That(tap.Counters.TxFrames, Is.EqualTo(1));
                Assert.That(tap.Counters.TxBytes, Is.EqualTo(TestFrames.Length));
                Assert.That(tap.Counters.RxFrames, Is.EqualTo(received.Count));
                Assert.That(tap.Counters.TxErrors, Is.Zero);
                Assert.That(tap.Counters.RxDropNoBuffer, Is.Zero);
                Assert.That(tap.Buffers.Available, Is.EqualTo(tap.Buffers.Count), "every buffer back in the pool");
            });
        }

        // Not persistent: the tap went away with its file descriptor.
        Poll.Until(() => !Netns.TryRun($"ip -n {ns.Name} link show dev {tapName}").Succeeded, Deadline,
            $"tap {tapName} to be removed");
    }

    [Test]
    public void Open_takes_the_mac_from_the_options_and_the_wait_handle_polls_readable()
    {
        Netns.RequireRoot();
        int instance = TestNames.NextInstance();
        using var ns = new TestNamespace(instance, 'n');
        string tapName = TestNames.Make(instance, 't');
        var mac = MacAddress.Parse("02:00:00:11:22:33");
        using var tap = ns.Run(() => TapVnic.Open(tapName, Small with { MacAddress = mac }));
        Assert.That(tap.MacAddress, Is.EqualTo(mac));
        Assert.That(tap.Receive(new PacketDescriptor[4]), Is.Zero, "nothing yet");

        ns.Ip($"addr add 10.79.0.1/24 dev {tapName}");
        ns.Start("ping", "-c", "1", "-W", "3", "10.79.0.2");
        Poll.Until(() => LinuxNative.PollReadable(tap.WaitHandle, 10), Deadline, "the tap fd to poll readable");
        var received = new List<byte[]>();
        Poll.Until(() => TestFrames.Drain(tap, received) > 0, Deadline, "a frame");
    }

    [Test]
    public void Open_refuses_our_mac_being_the_taps_own()
    {
        Netns.RequireRoot();
        int instance = TestNames.NextInstance();
        using var ns = new TestNamespace(instance, 'n');
        string tapName = TestNames.Make(instance, 't');
        // Make the tap persistently first so we know its MAC, then ask for that MAC.
        ns.Ip($"tuntap add dev {tapName} mode tap");
        var tapMac = MacAddress.Parse(NamespacePair.ReadMac(ns, tapName));
        var e = Assert.Throws<IOException>(() => ns.Run(() => TapVnic.Open(tapName, Small with { MacAddress = tapMac })));
        Assert.That(e!.Message, Does.Contain("tap interface's own"));

        using var tap = ns.Run(() => TapVnic.Open(tapName, Small));
        Assert.That(tap.Created, Is.False, "the tap existed before this open");
    }

    [Test]
    public void Open_rejects_a_name_longer_than_an_interface_name()
    {
        var e = Assert.Throws<ArgumentException>(() => TapVnic.Open("a-name-of-16-chr", Small));
        Assert.That(e!.Message, Does.Contain("1 to 15 characters"));
    }
}
