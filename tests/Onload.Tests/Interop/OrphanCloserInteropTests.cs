using Onload.Stack;
using Onload.Stack.Tcp;
using Onload.Stack.Wire;
using Onload.Tests.Netns;
using Onload.Tests.Tcp;

namespace Onload.Tests.Interop;

/// <summary>
/// A stack connected to a kernel server "dies" (it is no longer polled); the daemon's half plans from the stack's
/// mirror region and sends from the stack's namespace through AF_PACKET; the kernel's socket must end as Linux
/// ends a connection whose peer process died: EOF with nothing unread, a reset with data unread, the sequence
/// numbers accepted at once (no challenge ACK, no PAWS drop).
/// </summary>
[TestFixture]
[Category("netns")]
[NonParallelizable]
public unsafe class OrphanCloserInteropTests
{
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(30);
    private KernelPeer _peer = null!;
    private MirrorRegion _region = null!;

    [SetUp]
    public void CreatePeer()
    {
        _peer = new KernelPeer("af_packet");
        _region = new MirrorRegion(256);
    }

    [TearDown]
    public void RemovePeer()
    {
        _peer?.Dispose();
        _region?.Dispose();
    }

    private (NetStack Stack, int Socket) ConnectTo(int port)
    {
        var stack = _peer.OpenStack(o => o with { ConnectionMirror = _region.Mirror });
        int c = stack.TcpOpen();
        Assert.That(stack.TcpConnect(c, new Ipv4Endpoint(Ipv4Address.Parse(_peer.KernelAddress), (ushort)port)),
            Is.EqualTo(-(int)Errno.EINPROGRESS));
        KernelPeer.Drive(stack, () => stack.TcpIsConnected(c), Deadline, () => "connected; " + StackDump.Connection(stack, c));
        return (stack, c);
    }

    private void WaitListening(int port) =>
        Poll.Until(() => _peer.KernelNs.Exec("ss -tln").Contains($":{port} ", StringComparison.Ordinal), Deadline, "socat listening");

    /// <summary>The daemon's part: plan from what the dead stack left, build, send on the stack's interface.</summary>
    private OrphanAction CloseOrphans()
    {
        var plan = MirrorRegion.Plan(_region.Snapshot());
        Assert.That(plan, Has.Count.EqualTo(1), "one connection to close");
        var a = plan[0];
        Assert.That(a.NeedsNeighbour, Is.False, "the stack had resolved the kernel's MAC");
        string ifname = _peer.VnicSpec[(_peer.VnicSpec.IndexOf(':') + 1)..];
        using var sender = _peer.StackNs.Run(() => new RawFrameSender(ifname));
        var frame = new byte[OrphanCloser.MaxFrameLength];
        int n = OrphanCloser.BuildFrame(a, frame);
        Assert.That(sender.Send(frame.AsSpan(0, n)), Is.Zero, "sent");
        return a;
    }

    [Test]
    public void The_kernel_peer_reads_EOF_when_the_dead_stack_had_read_everything()
    {
        using var server = _peer.KernelNs.Start("socat", "-u", "TCP-LISTEN:9300,reuseaddr", "STDOUT");
        WaitListening(9300);
        var (stack, c) = ConnectTo(9300);
        stack.TcpSend(c, "hello\n"u8);
        KernelPeer.Drive(stack, () => stack.TcpConnections[c].SndUna == stack.TcpConnections[c].SndNxt, Deadline,
            () => "data acknowledged; " + StackDump.Connection(stack, c));
        long paws = _peer.KernelCounter("TcpExtPAWSEstab");
        long challenges = _peer.KernelCounter("TcpExtTCPChallengeACK");

        // The stack's process dies here: nothing polls it again.
        var a = CloseOrphans();

        Assert.That((a.Kind, a.Reason), Is.EqualTo((OrphanKind.Fin, OrphanReason.Close)));
        Assert.That(a.Timestamps, Is.True, "Linux negotiated timestamps: the FIN carries TSopt");
        Assert.That(server.WaitForExit(Deadline), Is.True, "socat saw EOF and exited");
        Assert.Multiple(() =>
        {
            Assert.That(server.ExitCode, Is.Zero, server.Stderr);
            Assert.That(server.Stdout, Is.EqualTo("hello\n"));
            Assert.That(_peer.KernelCounter("TcpExtPAWSEstab"), Is.EqualTo(paws), "the FIN's TSval passed PAWS");
            Assert.That(_peer.KernelCounter("TcpExtTCPChallengeACK"), Is.EqualTo(challenges), "FIN at RCV.NXT");
            Assert.That(_peer.KernelNs.Exec("ss -tnH state established"), Does.Not.Contain(":9300"));
        });
    }

    [Test]
    public void The_kernel_peer_is_reset_when_the_dead_stack_left_data_unread()
    {
        using var server = _peer.KernelNs.Start("socat", "TCP-LISTEN:9301,reuseaddr", "SYSTEM:printf unread; sleep 25");
        WaitListening(9301);
        var (stack, c) = ConnectTo(9301);
        KernelPeer.Drive(stack, () => stack.TcpConnections[c].Readable > 0, Deadline,
            () => "the kernel's data; " + StackDump.Connection(stack, c));
        long resets = _peer.KernelCounter("TcpEstabResets");
        long challenges = _peer.KernelCounter("TcpExtTCPChallengeACK");

        var a = CloseOrphans();

        Assert.That((a.Kind, a.Reason), Is.EqualTo((OrphanKind.Reset, OrphanReason.Unread)));
        // socat takes ECONNRESET on a read as the end of its input (it exits 0 when its child does), so the
        // kernel's own view is what is checked: the socket left ESTABLISHED at once, counted as a reset.
        Poll.Until(() => !_peer.KernelNs.Exec("ss -tnH state established").Contains(":9301", StringComparison.Ordinal),
            TimeSpan.FromSeconds(2), "the kernel's socket to leave ESTABLISHED");
        Assert.Multiple(() =>
        {
            Assert.That(_peer.KernelCounter("TcpEstabResets"), Is.EqualTo(resets + 1), "the RST was taken");
            Assert.That(_peer.KernelCounter("TcpExtTCPChallengeACK"), Is.EqualTo(challenges), "RST at exactly RCV.NXT");
        });
    }
}
