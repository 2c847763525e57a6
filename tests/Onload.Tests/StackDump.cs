using Onload.Stack;
using Onload.Vnic;

namespace Onload.Tests;

/// <summary>A stack's state as text for failure messages: what a reader needs to tell why a transfer stalled.</summary>
public static class StackDump
{
    /// <summary>"Name=value, ..." of the stack's counters; only those whose names start with one of
    /// <paramref name="prefixes"/> when any are given.</summary>
    public static string Counters(NetStack stack, params string[] prefixes)
    {
        ArgumentNullException.ThrowIfNull(stack);
        return string.Join(", ", stack.Counters.Snapshot()
            .Where(kv => prefixes.Length == 0 || prefixes.Any(p => kv.Key.StartsWith(p, StringComparison.Ordinal)))
            .Select(kv => $"{kv.Key}={kv.Value}"));
    }

    /// <summary>The TCP and drop counters, from which a stalled TCP transfer is read.</summary>
    public static string TcpCounters(NetStack stack) => Counters(stack, "Tcp", "Drop");

    /// <summary>One connection: state, send and receive sequence numbers relative to the ISNs, windows, timers.</summary>
    public static string Connection(NetStack stack, int c)
    {
        ArgumentNullException.ThrowIfNull(stack);
        if (!stack.TcpConnections.IsValid(c))
            return $"connection {c} not in use";
        ref var t = ref stack.TcpConnections[c];
        return $"state {t.State} una {t.SndUna - t.Iss} nxt {t.SndNxt - t.Iss} max {t.SndMax - t.Iss} queued {t.SndQueued} " +
            $"wnd {t.SndWnd} cwnd {t.Cwnd} rto {t.Rto} backoff {t.Backoff} rcvnxt {t.RcvNxt - t.Irs} rcvread {t.RcvRead - t.Irs} " +
            $"rcvadv {t.RcvAdv - t.Irs} ooo ranges {t.OutOfOrder.Count} pipe {t.Pipe} sacked {t.SackedCount} lost {t.LostCount} recovery {t.InRecovery} next timer {stack.NextTimerNs}";
    }

    /// <summary>The connections in use (listeners included), <paramref name="max"/> at most, one per line.</summary>
    public static string Connections(NetStack stack, int max = 8)
    {
        ArgumentNullException.ThrowIfNull(stack);
        var rows = Enumerable.Range(0, stack.TcpConnections.Capacity).Where(stack.TcpConnections.IsValid).ToList();
        return $"{rows.Count} in use" + string.Concat(rows.Take(max).Select(c =>
            $"\n  {c}: port {stack.TcpConnections[c].LocalPort}->{stack.TcpConnections[c].RemotePort} {Connection(stack, c)}"));
    }

    /// <summary>The VNIC's frame counts and drops.</summary>
    public static string Vnic(IVnic vnic)
    {
        ArgumentNullException.ThrowIfNull(vnic);
        var v = vnic.Counters;
        return $"vnic rx {v.RxFrames} tx {v.TxFrames} nobuf {v.RxDropNoBuffer} ring {v.RxDropRingFull} " +
            $"txring {v.TxDropRingFull} txerr {v.TxErrors}; buffers free {vnic.Buffers.Available} of {vnic.Buffers.Count}";
    }
}
