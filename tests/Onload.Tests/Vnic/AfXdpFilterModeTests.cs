using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using NUnit.Framework;
using Onload.Tests.Netns;
using Onload.Vnic;
using Onload.Vnic.AfPacket;
using Onload.Vnic.AfXdp;

namespace Onload.Tests.Vnic;

using Netns = Onload.Tests.Netns.Netns;

/// <summary>
/// The af_xdp backend in filter mode, driverlink's "hardware filters onto VNICs": the kernel of the stack's namespace
/// holds the address on the interface, and the XDP program steers to the socket only the TCP and UDP flows added as
/// filters; ARP, ICMP, other ports and fragments stay the kernel's.
/// </summary>
[TestFixture]
[Category("netns")]
[NonParallelizable]
public sealed class AfXdpFilterModeTests
{
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(10);
    private const ushort UdpPort = 9200;
    private const ushort TcpPort = 9300;
    private const ushort KernelUdpPort = 9100;

    private static VnicOptions Options(int maxFilters = 64) => new()
    {
        BufferCount = 256,
        RingSize = 64,
        FilterMode = true,
        MaxFilters = maxFilters,
    };

    /// <summary>A pair whose stack side's kernel holds <see cref="NamespacePair.StackAddress"/>, as in driverlink mode.</summary>
    internal static NamespacePair KernelHoldsTheAddress()
    {
        var pair = new NamespacePair();
        pair.Stack.Ip($"addr add {pair.StackAddress}/{pair.PrefixLength} dev {pair.StackIf}");
        pair.Stack.Exec($"ethtool -K {pair.StackIf} tx off tso off gso off gro off");
        return pair;
    }

    [Test]
    public void Only_the_filtered_flows_reach_the_socket_and_the_kernel_keeps_the_rest_of_its_address()
    {
        Netns.RequireRoot();
        using var pair = KernelHoldsTheAddress();
        using var vnic = pair.Stack.Run(() => AfXdpVnic.Open(pair.StackIf, Options()));
        uint ours = HostOrder(pair.StackAddress);
        Assert.That(vnic.FilterMode, Is.True);
        Assert.That(pair.Stack.Ip($"link show dev {pair.StackIf}"), Does.Contain("prog/xdp"));
        Assert.That(vnic.AddFilter(ProtocolType.Udp, ours, UdpPort), Is.Zero);
        Assert.That(vnic.AddFilter(ProtocolType.Tcp, ours, TcpPort), Is.Zero);
        Assert.That(vnic.FilterCount, Is.EqualTo(2));

        // Kernel services on the same address: a UDP echo on another port, and the socket bound to the filtered port
        // (driverlink's OS socket), which must hear nothing while the filter holds.
        using var echo = pair.Start(pair.StackNs, "socat", $"UDP4-LISTEN:{KernelUdpPort},fork", "PIPE");
        using var osSocket = pair.Start(pair.StackNs, "socat", "-u", $"UDP4-RECV:{UdpPort}", "STDOUT");
        Poll.Until(() =>
        {
            string ss = pair.Stack.Exec("ss -uln");
            return ss.Contains($":{KernelUdpPort}", StringComparison.Ordinal) && ss.Contains($":{UdpPort}", StringComparison.Ordinal);
        }, Deadline, "the kernel's UDP sockets listening");

        // ARP and ICMP for the address are the kernel's: the peer has no neighbour entry yet, so this ping resolves it.
        string ping = pair.Kernel.Exec($"ping -c 3 -i 0.2 -W 2 {pair.StackAddress}");
        Assert.That(ping, Does.Contain("3 received"), ping);
        Assert.That(pair.Kernel.Ip($"neigh show {pair.StackAddress} dev {pair.KernelIf}"), Does.Contain(pair.StackIfMac),
            "the kernel answered ARP with the interface's MAC");
        for (int i = 0; i < 3; i++)
            Assert.That(UdpExchange(pair, pair.StackAddress, KernelUdpPort, $"beside-{i}"), Is.EqualTo($"beside-{i}"),
                "the kernel's UDP echo on another port of the same address");

        // The filtered flows come to the socket.
        var received = new List<byte[]>();
        Poll.Until(() =>
        {
            SendUdp(pair, pair.StackAddress, UdpPort, "to-the-stack");
            TestFrames.Drain(vnic, received);
            return received.Exists(f => IsTo(f, ProtocolType.Udp, UdpPort));
        }, Deadline, $"a UDP datagram to port {UdpPort} on the socket");
        Assert.That(received.Where(f => IsTo(f, ProtocolType.Udp, UdpPort)).Select(UdpPayload), Is.All.EqualTo("to-the-stack\n"),
            "the datagram as the kernel sent it");
        using (pair.Start(pair.KernelNs, "socat", "-u", "/dev/null", $"TCP4:{pair.StackAddress}:{TcpPort},connect-timeout=3"))
        {
            Poll.Until(() =>
            {
                TestFrames.Drain(vnic, received);
                return received.Exists(f => IsTo(f, ProtocolType.Tcp, TcpPort));
            }, Deadline, $"a TCP SYN to port {TcpPort} on the socket");
        }
        Assert.Multiple(() =>
        {
            Assert.That(received.Where(f => !IsTo(f, ProtocolType.Udp, UdpPort) && !IsTo(f, ProtocolType.Tcp, TcpPort)), Is.Empty,
                "nothing but the filtered flows on the socket (no ARP, no ICMP, no other port)");
            Assert.That(osSocket.Stdout, Is.Empty, "the kernel's socket on the filtered port heard nothing");
        });

        // Without the filter, the kernel gets the port again.
        Assert.That(vnic.RemoveFilter(ProtocolType.Udp, ours, UdpPort), Is.Zero);
        Assert.That(vnic.RemoveFilter(ProtocolType.Udp, ours, UdpPort), Is.EqualTo(-2), "ENOENT: already gone");
        Assert.That(vnic.FilterCount, Is.EqualTo(1));
        received.Clear();
        Poll.Until(() =>
        {
            SendUdp(pair, pair.StackAddress, UdpPort, "to-the-kernel");
            return osSocket.Stdout.Contains("to-the-kernel", StringComparison.Ordinal);
        }, Deadline, $"the kernel's socket on port {UdpPort} to hear a datagram once the filter is gone");
        TestFrames.Drain(vnic, received);
        Assert.That(received.Where(f => IsTo(f, ProtocolType.Udp, UdpPort)), Is.Empty, "and the socket none");
    }

    [Test]
    public void A_filter_naming_the_remote_end_takes_only_that_peers_datagrams()
    {
        Netns.RequireRoot();
        using var pair = KernelHoldsTheAddress();
        using var vnic = pair.Stack.Run(() => AfXdpVnic.Open(pair.StackIf, Options()));
        const ushort port = 9400;
        Assert.That(vnic.AddFilter(ProtocolType.Udp, HostOrder(pair.StackAddress), port, HostOrder(pair.KernelAddress), 7777), Is.Zero);
        using var osSocket = pair.Start(pair.StackNs, "socat", "-u", $"UDP4-RECV:{port}", "STDOUT");
        Poll.Until(() => pair.Stack.Exec("ss -uln").Contains($":{port}", StringComparison.Ordinal), Deadline, "the kernel's socket listening");

        var received = new List<byte[]>();
        Poll.Until(() =>
        {
            SendUdp(pair, pair.StackAddress, port, "from-7777", sourcePort: 7777);
            TestFrames.Drain(vnic, received);
            return received.Exists(f => IsTo(f, ProtocolType.Udp, port) && SourcePort(f) == 7777);
        }, Deadline, "the datagram from port 7777 on the socket");
        Assert.That(received.Where(f => SourcePort(f) == 7777).Select(UdpPayload), Is.All.EqualTo("from-7777\n"));
        Poll.Until(() =>
        {
            SendUdp(pair, pair.StackAddress, port, "from-7778", sourcePort: 7778);
            return osSocket.Stdout.Contains("from-7778", StringComparison.Ordinal);
        }, Deadline, "the datagram from port 7778 with the kernel");
        TestFrames.Drain(vnic, received);
        Assert.That(received.Where(f => SourcePort(f) != 7777), Is.Empty, "the socket got only port 7777's");
        Assert.That(osSocket.Stdout, Does.Not.Contain("from-7777"));
    }

    [Test]
    public void A_header_with_options_is_matched_and_fragments_are_left_to_the_kernel()
    {
        Netns.RequireRoot();
        using var pair = KernelHoldsTheAddress();
        using var vnic = pair.Stack.Run(() => AfXdpVnic.Open(pair.StackIf, Options()));
        // A packet socket beside the XDP program sees what it passes to the kernel; another on the peer's side sends.
        using var kernelSide = pair.Stack.Run(() => AfPacketVnic.Open(pair.StackIf, new VnicOptions { BufferCount = 64, RingSize = 64 }));
        using var sender = pair.Kernel.Run(() => AfPacketVnic.Open(pair.KernelIf, new VnicOptions { BufferCount = 64, RingSize = 64 }));
        Assert.That(vnic.AddFilter(ProtocolType.Udp, HostOrder(pair.StackAddress), UdpPort), Is.Zero);

        var dst = MacAddress.Parse(pair.StackIfMac);
        var src = MacAddress.Parse(pair.KernelMac);
        byte[] Frame(int optionWords, ushort flagsFragment, ushort sourcePort) =>
            Udp(dst, src, pair.KernelAddress, pair.StackAddress, optionWords, flagsFragment, sourcePort, UdpPort);
        byte[] firstFragment = Frame(0, 0x2000, 6001);      // MF, offset 0
        byte[] laterFragment = Frame(0, 0x0010, 6002);      // offset 128 bytes: the "ports" are payload
        byte[] withOptions = Frame(1, 0x4000, 6003);        // IHL 6 (NOP NOP NOP EOL), DF

        var onSocket = new List<byte[]>();
        var onKernel = new List<byte[]>();
        Poll.Until(() =>
        {
            sender.Transmit([TestFrames.InPool(sender.Buffers, firstFragment), TestFrames.InPool(sender.Buffers, laterFragment),
                TestFrames.InPool(sender.Buffers, withOptions)]);
            TestFrames.Drain(vnic, onSocket);
            return onSocket.Exists(f => SourcePort(f) == 6003);
        }, Deadline, "the datagram with IP options on the socket");
        Poll.Until(() =>
        {
            TestFrames.Drain(kernelSide, onKernel);
            return onKernel.Exists(f => IsFromPeer(f, 6001)) && onKernel.Exists(f => IsFromPeer(f, 6002));
        }, Deadline, "both fragments on the kernel's side");
        var fromOptions = onSocket.First(f => SourcePort(f) == 6003);
        Assert.Multiple(() =>
        {
            Assert.That(fromOptions[14] & 0x0f, Is.EqualTo(6), "IHL 6 as sent");
            Assert.That(onSocket.Where(f => !IsTo(f, ProtocolType.Udp, UdpPort) || SourcePort(f) != 6003), Is.Empty,
                "no fragment on the socket");
            Assert.That(onKernel.Where(f => IsFromPeer(f, 6003)), Is.Empty, "the matched datagram skipped the kernel");
        });

        static bool IsFromPeer(byte[] f, ushort sourcePort) => IsTo(f, ProtocolType.Udp, UdpPort) && SourcePort(f) == sourcePort;
    }

    [Test]
    public void Filters_are_refused_with_a_reason()
    {
        Netns.RequireRoot();
        using var pair = KernelHoldsTheAddress();
        using var vnic = pair.Stack.Run(() => AfXdpVnic.Open(pair.StackIf, Options(maxFilters: 2)));
        uint ours = HostOrder(pair.StackAddress);
        uint theirs = HostOrder(pair.KernelAddress);
        Assert.Multiple(() =>
        {
            Assert.That(vnic.AddFilter(ProtocolType.Udp, ours, 1000), Is.Zero);
            Assert.That(vnic.AddFilter(ProtocolType.Udp, ours, 1000), Is.EqualTo(-98), "the same filter twice: EADDRINUSE");
            Assert.That(vnic.AddFilter(ProtocolType.Tcp, ours, 1000), Is.Zero, "the same port for the other protocol");
            Assert.That(vnic.AddFilter(ProtocolType.Tcp, ours, 1001), Is.EqualTo(-28), "beyond MaxFilters: ENOSPC");
            Assert.That(vnic.FilterCount, Is.EqualTo(2));
            Assert.That(vnic.AddFilter(ProtocolType.Icmp, ours, 1), Is.EqualTo(-22), "not TCP or UDP: EINVAL");
            Assert.That(vnic.AddFilter(ProtocolType.Udp, ours, 0), Is.EqualTo(-22), "no port: EINVAL");
            Assert.That(vnic.AddFilter(ProtocolType.Udp, ours, 1002, theirs, 0), Is.EqualTo(-22), "half a remote end: EINVAL");
            Assert.That(vnic.RemoveFilter(ProtocolType.Udp, ours, 1000, theirs, 5), Is.EqualTo(-2), "no such filter: ENOENT");
            Assert.That(vnic.JoinMulticast(HostOrder("239.1.2.3")), Is.EqualTo(-95), "multicast stays the kernel's: EOPNOTSUPP");
        });

        // Room again once one is removed; a full filter on a wild one's port is no conflict (it is tried first).
        Assert.That(vnic.RemoveFilter(ProtocolType.Tcp, ours, 1000), Is.Zero);
        Assert.That(vnic.AddFilter(ProtocolType.Udp, ours, 1000, theirs, 5), Is.Zero);

        vnic.Dispose();
        Assert.That(vnic.AddFilter(ProtocolType.Udp, ours, 1000), Is.EqualTo(-9), "EBADF once disposed");
        Assert.That(pair.Stack.Ip($"link show dev {pair.StackIf}"), Does.Not.Contain("prog/xdp"));
    }

    [Test]
    public void Direct_mode_has_no_filters()
    {
        Netns.RequireRoot();
        using var pair = new NamespacePair();
        using var vnic = pair.Stack.Run(() => AfXdpVnic.Open(pair.StackIf,
            new VnicOptions { BufferCount = 64, RingSize = 16, LocalIpv4 = HostOrder(pair.StackAddress) }));
        Assert.That(vnic.FilterMode, Is.False);
        Assert.That(vnic.AddFilter(ProtocolType.Udp, HostOrder(pair.StackAddress), 1000), Is.EqualTo(-95), "EOPNOTSUPP");
    }

    /// <summary>One datagram through a kernel UDP socket in the peer namespace, and the reply.</summary>
    private static string UdpExchange(NamespacePair pair, string to, ushort port, string text)
    {
        var r = Netns.Exec("ip", ["netns", "exec", pair.KernelNs, "sh", "-c",
            $"echo {text} | socat -t 1 -T 3 - UDP4:{to}:{port}"], Deadline);
        return r.Stdout.Trim();
    }

    internal static void SendUdp(NamespacePair pair, string to, ushort port, string text, ushort? sourcePort = null) =>
        Netns.Sh($"echo {text} | ip netns exec {pair.KernelNs} socat -u - UDP4-DATAGRAM:{to}:{port}" +
            (sourcePort is ushort p ? $",bind=:{p},reuseaddr" : ""));

    /// <summary>IPv4 of <paramref name="protocol"/> to <paramref name="port"/>, the header's options skipped.</summary>
    internal static bool IsTo(byte[] f, ProtocolType protocol, ushort port)
    {
        int l4 = TransportOffset(f);
        return l4 > 0 && f[23] == (byte)protocol && BinaryPrimitives.ReadUInt16BigEndian(f.AsSpan(l4 + 2)) == port;
    }

    private static int SourcePort(byte[] f)
    {
        int l4 = TransportOffset(f);
        return l4 > 0 ? BinaryPrimitives.ReadUInt16BigEndian(f.AsSpan(l4)) : -1;
    }

    /// <summary>The UDP payload, as text (what <see cref="SendUdp"/> wrote, with echo's newline).</summary>
    internal static string UdpPayload(byte[] f)
    {
        int l4 = TransportOffset(f);
        int length = BinaryPrimitives.ReadUInt16BigEndian(f.AsSpan(l4 + 4)) - 8;
        return System.Text.Encoding.ASCII.GetString(f, l4 + 8, length);
    }

    private static int TransportOffset(byte[] f)
    {
        if (f.Length < 34 || TestFrames.EtherType(f) != TestFrames.EtherTypeIpv4)
            return -1;
        int l4 = 14 + (f[14] & 0x0f) * 4;
        return f.Length >= l4 + 4 ? l4 : -1;
    }

    /// <summary>An Ethernet + IPv4 + UDP frame with <paramref name="optionWords"/> words of IP options (NOPs, then
    /// EOL) and the given flags/fragment field; checksums are left zero (the XDP program does not read them).</summary>
    private static byte[] Udp(MacAddress dst, MacAddress src, string from, string to, int optionWords, ushort flagsFragment,
        ushort sourcePort, ushort destinationPort)
    {
        int ihl = 5 + optionWords;
        var payload = "filtered"u8;
        var f = new byte[14 + ihl * 4 + 8 + payload.Length];
        dst.Write(f.AsSpan(0, 6));
        src.Write(f.AsSpan(6, 6));
        BinaryPrimitives.WriteUInt16BigEndian(f.AsSpan(12), TestFrames.EtherTypeIpv4);
        var ip = f.AsSpan(14);
        ip[0] = (byte)(0x40 | ihl);
        BinaryPrimitives.WriteUInt16BigEndian(ip[2..], (ushort)(f.Length - 14));
        BinaryPrimitives.WriteUInt16BigEndian(ip[4..], 0x1234);
        BinaryPrimitives.WriteUInt16BigEndian(ip[6..], flagsFragment);
        ip[8] = 64;
        ip[9] = (byte)ProtocolType.Udp;
        IPAddress.Parse(from).GetAddressBytes().CopyTo(ip[12..]);
        IPAddress.Parse(to).GetAddressBytes().CopyTo(ip[16..]);
        for (int i = 0; i < optionWords * 4; i++)
            ip[20 + i] = (byte)(i == optionWords * 4 - 1 ? 0 : 1);
        var udp = ip[(ihl * 4)..];
        BinaryPrimitives.WriteUInt16BigEndian(udp, sourcePort);
        BinaryPrimitives.WriteUInt16BigEndian(udp[2..], destinationPort);
        BinaryPrimitives.WriteUInt16BigEndian(udp[4..], (ushort)(8 + payload.Length));
        payload.CopyTo(udp[8..]);
        return f;
    }

    internal static uint HostOrder(string address) =>
        BinaryPrimitives.ReadUInt32BigEndian(IPAddress.Parse(address).GetAddressBytes());
}
