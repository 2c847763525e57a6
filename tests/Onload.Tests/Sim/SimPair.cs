using Onload.Stack;
using Onload.Stack.Wire;
using Onload.Vnic;
using Onload.Vnic.Sim;

namespace Onload.Tests.Sim;

/// <summary>Two stacks joined by a <see cref="SimLink"/>, driven in virtual time.</summary>
internal sealed class SimPair : IDisposable
{
    public static readonly Ipv4Cidr AddressA = Ipv4Cidr.Parse("10.1.0.1/24");
    public static readonly Ipv4Cidr AddressB = Ipv4Cidr.Parse("10.1.0.2/24");

    public SimPair(ulong seed, LinkFaults? aToB = null, LinkFaults? bToA = null,
        Func<StackOptions, StackOptions>? tweak = null)
    {
        Clock = new VirtualClock();
        Link = new SimLink(seed, Clock, aToB, bToA);
        tweak ??= o => o;
        A = new NetStack(Link.A, tweak(new StackOptions { Address = AddressA }), Clock, new SeededRandom(seed ^ 0xA));
        B = new NetStack(Link.B, tweak(new StackOptions { Address = AddressB }), Clock, new SeededRandom(seed ^ 0xB));
    }

    public VirtualClock Clock { get; }
    public SimLink Link { get; }
    public NetStack A { get; }
    public NetStack B { get; }

    /// <summary>Polls both stacks, then moves virtual time to the next frame landing or timer, up to <paramref name="until"/>.</summary>
    public void RunFor(long nanoseconds)
    {
        long end = Clock.NowNanoseconds + nanoseconds;
        while (true)
        {
            int work = A.Poll() + B.Poll();
            if (work > 0)
                continue;
            long next = Math.Min(Link.NextDelivery, Math.Min(A.NextTimerNs, B.NextTimerNs));
            if (next > end)
                break;
            Clock.AdvanceTo(Math.Max(next, Clock.NowNanoseconds + 1));
        }
        Clock.AdvanceTo(end);
        A.Poll();
        B.Poll();
    }

    public void Dispose()
    {
        A.Dispose();
        B.Dispose();
        Link.Dispose();
    }
}
