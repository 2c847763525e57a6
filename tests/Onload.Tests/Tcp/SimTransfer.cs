using Onload.Stack;
using Onload.Stack.Tcp;
using Onload.Stack.Wire;
using Onload.Tests.Sim;
using Onload.Vnic;
using Onload.Vnic.Sim;

namespace Onload.Tests.Tcp;

/// <summary>
/// The faults one seed stands for: each direction of the link draws its own loss (up to 30%), duplication (up to
/// 5%), reordering (up to 10%), corruption (up to 5%) and delay (20 µs to 2 ms). The seed alone fixes the mix,
/// the link's every draw and both stacks' randomness, so any run can be replayed from its number.
/// </summary>
public sealed record SeedMix(ulong Seed, LinkFaults AToB, LinkFaults BToA)
{
    public static SeedMix For(ulong seed)
    {
        var r = new SeededRandom(seed);
        LinkFaults Draw() => new()
        {
            Loss = r.NextDouble() * 0.30,
            Duplicate = r.NextDouble() * 0.05,
            Reorder = r.NextDouble() * 0.10,
            Corrupt = r.NextDouble() * 0.05,
            MinDelayNs = 20_000,
            MaxDelayNs = 20_000 + (long)(r.NextDouble() * 2_000_000),
        };
        var aToB = Draw();
        return new SeedMix(seed, aToB, Draw());
    }

    public override string ToString() =>
        $"seed {Seed}: data way {Describe(AToB)}; ack way {Describe(BToA)}";

    private static string Describe(LinkFaults f) =>
        $"loss {f.Loss:P1} dup {f.Duplicate:P1} reorder {f.Reorder:P1} corrupt {f.Corrupt:P1} delay {f.MinDelayNs / 1000}-{f.MaxDelayNs / 1000} µs";
}

/// <summary>How one transfer ended.</summary>
public enum TransferOutcome
{
    /// <summary>Every byte arrived, in order and undamaged, then EOF.</summary>
    Intact,
    /// <summary>The sender gave up with ETIMEDOUT, as Linux does after tcp_syn_retries or tcp_retries2; what
    /// arrived before that is intact.</summary>
    TimedOut,
    /// <summary>The receiver read a byte that differs from what was sent, or EOF came early or late.</summary>
    Damaged,
    /// <summary>Neither end finished nor failed: the deadline passed, or nothing was left to happen (a hang).</summary>
    Stalled,
    /// <summary>A socket call failed with an error other than ETIMEDOUT.</summary>
    Failed,
}

/// <summary>One transfer's result. Times are virtual; counters are the sender's.</summary>
/// <param name="FirstDifference">Offset of the first byte that differs from what was sent (or where EOF should
/// have been, or came), -1 when none does.</param>
/// <param name="CompletionNs">From connect() to the receiver reading EOF (or to the failure).</param>
/// <param name="Error">The errno of a TimedOut or Failed outcome, else 0.</param>
/// <param name="Detail">Both ends' state when the outcome is not Intact, for the failure message.</param>
public sealed record TransferResult(
    SeedMix Mix, SimTransfer.Options Options, TransferOutcome Outcome, long BytesReceived, long FirstDifference,
    long HandshakeNs, long CompletionNs, long RetransSegs, long Timeouts, long RecoveryEpisodes, long LossProbes,
    int Error, string Detail)
{
    /// <summary>How long each recovery of the sender lasted (fast recovery or after a timeout), from the step that
    /// found it in recovery to the step that found it out, in order (ns).</summary>
    public IReadOnlyList<long> RecoveryTimes { get; init; } = [];

    public ulong Seed => Mix.Seed;

    /// <summary>Intact, or ended as Linux would end it.</summary>
    public bool Acceptable => Outcome is TransferOutcome.Intact or TransferOutcome.TimedOut;

    public override string ToString() =>
        $"{Mix} [{Options}]: {Outcome}{(Error != 0 ? $" ({(Errno)Error})" : "")}, {BytesReceived} of {Options.Bytes} bytes" +
        (FirstDifference >= 0 ? $", first difference at byte {FirstDifference}" : "") +
        $", {CompletionNs / 1e6:F1} ms, {RetransSegs} retransmitted, {Timeouts} RTOs, {RecoveryEpisodes} recoveries, {LossProbes} probes" +
        (Detail.Length > 0 ? $"; {Detail}" : "");
}

/// <summary>
/// One bulk transfer from stack A to stack B over a <see cref="SimLink"/> with a seed's <see cref="SeedMix"/>,
/// run in virtual time: connect, send, shut down, read to EOF, comparing every byte as it arrives. Used by the
/// test suite's sweep and by the sweep runner (tests/Onload.Sweep), so a seed that fails in one fails the same
/// way in the other.
/// </summary>
public static class SimTransfer
{
    private const long Ms = 1_000_000;

    /// <summary>The application looks at its sockets at least this often (virtual time).</summary>
    private const long AppStepNs = Ms / 10;

    /// <summary>What to run. The deadline is virtual and well past Linux's give-up time (about 925 s with
    /// tcp_retries2 = 15), so only a hang reaches it.</summary>
    public sealed record Options
    {
        public bool Sack { get; init; } = true;
        public CongestionControl CongestionControl { get; init; } = CongestionControl.Cubic;
        public int Bytes { get; init; } = 100_000;
        public long DeadlineNs { get; init; } = 3_600_000 * Ms;

        public override string ToString() => $"{(Sack ? "SACK" : "no SACK")}, {CongestionControl}, {Bytes} bytes";
    }

    /// <summary>The bytes a seed sends: drawn from the seed, so a damaged byte can be told from a moved one.</summary>
    public static byte[] Payload(ulong seed, int length)
    {
        var r = new SeededRandom(seed ^ 0xDA7A_DA7A_DA7A_DA7AUL);
        var data = new byte[length];
        for (int i = 0; i < length; i += 8)
        {
            ulong v = r.NextUInt64();
            for (int j = i; j < Math.Min(i + 8, length); j++, v >>= 8)
                data[j] = (byte)v;
        }
        return data;
    }

    public static TransferResult Run(ulong seed, Options options) => Run(SeedMix.For(seed), options);

    public static TransferResult Run(SeedMix mix, Options options) => Run(mix, options, null);

    /// <summary>As <see cref="Run(SeedMix, Options)"/>; <paramref name="setUp"/> sees the pair before the
    /// connect (to attach a trace, say) and <paramref name="step"/> after every step, with the client and the
    /// accepted socket (-1 until accepted).</summary>
    internal static TransferResult Run(SeedMix mix, Options options, Action<SimPair>? setUp, Action<SimPair, int, int>? step = null)
    {
        ArgumentNullException.ThrowIfNull(mix);
        ArgumentNullException.ThrowIfNull(options);
        using var pair = new SimPair(mix.Seed, mix.AToB, mix.BToA,
            o => o with { TcpSack = options.Sack, TcpCongestionControl = options.CongestionControl });
        var data = Payload(mix.Seed, options.Bytes);
        var buf = new byte[65536];
        NetStack a = pair.A, b = pair.B;

        setUp?.Invoke(pair);
        int l = b.TcpOpen();
        b.TcpBind(l, new(Ipv4Address.Any, 80));
        b.TcpListen(l, 4);
        int c = a.TcpOpen();
        long start = pair.Clock.NowNanoseconds;
        long deadline = start + options.DeadlineNs;
        a.TcpConnect(c, new(SimPair.AddressB.Address, 80));

        int s = -1;
        long handshake = -1;
        int sent = 0;
        bool shut = false;
        long received = 0;
        long firstDifference = -1;
        TransferOutcome? outcome = null;
        var recoveryTimes = new List<long>();
        long recoveryStart = -1;
        int error = 0;

        while (outcome == null)
        {
            long now = pair.Clock.NowNanoseconds;
            if (s < 0)
                s = b.TcpAccept(l, out _);
            if (handshake < 0 && a.TcpIsConnected(c))
                handshake = now - start;

            // Sender: fill the send buffer, then shut down the write side once everything is queued.
            if (a.TcpStateOf(c) == TcpState.Closed)
            {
                error = a.TcpTakeError(c);
                outcome = error == (int)Errno.ETIMEDOUT ? TransferOutcome.TimedOut : TransferOutcome.Failed;
                break;
            }
            if (a.TcpIsConnected(c) && sent < data.Length)
            {
                int n = a.TcpSend(c, data.AsSpan(sent));
                if (n > 0)
                    sent += n;
                else if (n != -(int)Errno.EAGAIN)
                {
                    error = -n;
                    outcome = error == (int)Errno.ETIMEDOUT ? TransferOutcome.TimedOut : TransferOutcome.Failed;
                    break;
                }
            }
            else if (a.TcpIsConnected(c) && !shut)
            {
                a.TcpShutdown(c, read: false, write: true);
                shut = true;
            }

            // Receiver: read what is there, comparing as it comes.
            if (s >= 0)
            {
                int r;
                while ((r = b.TcpReceive(s, buf)) > 0)
                {
                    if (firstDifference < 0)
                        firstDifference = FirstDifference(data, received, buf.AsSpan(0, r));
                    received += r;
                }
                if (r == 0)
                {
                    if (firstDifference < 0 && received != data.Length)
                        firstDifference = received;
                    outcome = firstDifference < 0 ? TransferOutcome.Intact : TransferOutcome.Damaged;
                    break;
                }
                if (r != -(int)Errno.EAGAIN)
                {
                    error = -r;
                    outcome = TransferOutcome.Failed;
                    break;
                }
                if (firstDifference >= 0)
                {
                    outcome = TransferOutcome.Damaged;
                    break;
                }
            }

            // Sleep to the next thing that can happen: a frame landing or a timer, at least one app step on.
            long next = Math.Min(pair.Link.NextDelivery, Math.Min(a.NextTimerNs, b.NextTimerNs));
            if (next == long.MaxValue || now >= deadline)
            {
                outcome = TransferOutcome.Stalled;
                break;
            }
            pair.RunFor(Math.Clamp(next - now, AppStepNs, Math.Max(AppStepNs, deadline - now)));
            bool inRecovery = a.TcpConnections.IsValid(c) && a.TcpConnections[c].InRecovery;
            if (inRecovery && recoveryStart < 0)
                recoveryStart = pair.Clock.NowNanoseconds;
            else if (!inRecovery && recoveryStart >= 0)
            {
                recoveryTimes.Add(pair.Clock.NowNanoseconds - recoveryStart);
                recoveryStart = -1;
            }
            step?.Invoke(pair, c, s);
        }

        if (outcome == TransferOutcome.TimedOut && firstDifference >= 0)
            outcome = TransferOutcome.Damaged;
        string detail = outcome == TransferOutcome.Intact ? "" :
            $"sent {sent}; sender {StackDump.Connection(a, c)}; {StackDump.TcpCounters(a)}; " +
            $"receiver {(s >= 0 ? StackDump.Connection(b, s) : "not accepted")}; {StackDump.TcpCounters(b)}";
        var k = a.Counters;
        return new TransferResult(mix, options, outcome.Value, received, firstDifference,
            handshake, pair.Clock.NowNanoseconds - start, k.TcpRetransSegs, k.TcpExtTCPTimeouts,
            k.TcpExtTCPSackRecovery + k.TcpExtTCPRenoRecovery, k.TcpExtTCPLossProbes, error, detail)
        {
            RecoveryTimes = recoveryTimes,
        };
    }

    /// <summary>The offset in the stream of the first byte of <paramref name="got"/> (read at
    /// <paramref name="offset"/>) that differs from <paramref name="sent"/>, or -1.</summary>
    private static long FirstDifference(byte[] sent, long offset, ReadOnlySpan<byte> got)
    {
        if (offset >= sent.Length)
            return offset;
        var expected = sent.AsSpan((int)offset, (int)Math.Min(got.Length, sent.Length - offset));
        int i = expected.CommonPrefixLength(got);
        return i < got.Length ? offset + i : -1;
    }
}
