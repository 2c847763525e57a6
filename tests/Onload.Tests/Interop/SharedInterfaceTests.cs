using Onload.Tests.Netns;

namespace Onload.Tests.Interop;

/// <summary>
/// The stack and its namespace's kernel on one interface: the kernel keeps serving its own address while the
/// stack serves its own. (A TAP has no such second kernel: its kernel side is the peer.)
/// </summary>
[TestFixture("af_packet")]
[TestFixture("af_xdp")]
[Category("netns")]
[NonParallelizable]
public class SharedInterfaceTests(string kind)
{
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(20);

    [Test]
    public void The_kernel_beside_the_stack_keeps_serving_its_own_address_on_the_same_interface()
    {
        using var peer = new KernelPeer(kind);
        var stack = peer.OpenStack();
        string beside = peer.AddKernelAddressBesideTheStack();
        peer.StackNs.Start("socat", "UDP-LISTEN:9100,fork", "PIPE");
        Poll.Until(() => peer.StackNs.Exec("ss -uln").Contains(":9100", StringComparison.Ordinal), Deadline, "socat listening beside the stack");
        using (new StackPump(stack))
        {
            for (int i = 0; i < 3; i++)
            {
                var r = Netns.Netns.Exec("ip", ["netns", "exec", peer.KernelNs.Name, "sh", "-c",
                    $"echo beside-{i} | socat -t 1 -T 3 - UDP:{beside}:9100"], Deadline);
                Assert.That(r.Stdout.Trim(), Is.EqualTo($"beside-{i}"), r.Stderr);
            }
            string ping = peer.KernelNs.Exec($"ping -c 20 -i 0.01 -W 2 -q {peer.StackAddress}");
            Assert.That(ping, Does.Contain("20 packets transmitted, 20 received"), "the stack answers on its own address meanwhile");
        }
    }
}
