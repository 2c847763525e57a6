using System.Globalization;
using Onload.StackDump;

namespace Onload.Apps.StackDump;

/// <summary>The human form: per stack a few header lines, its sockets as <c>ss</c> lays them out, and its non-zero
/// counters.</summary>
internal static class TablePrinter
{
    private static readonly CultureInfo Invariant = CultureInfo.InvariantCulture;

    public static void Print(StackSnapshot s, TextWriter o)
    {
        var v = s.Vnic;
        o.WriteLine(string.Create(Invariant, $"stack of pid {s.Pid}: {s.Command}"));
        o.WriteLine(string.Create(Invariant, $"  interface {s.Interface}  address {s.Address}  mac {s.Mac}  mtu {s.Mtu}  " +
            $"link {(s.LinkUp ? "up" : "down")}{(s.Suspended ? "  suspended" : "")}{(s.Removed ? "  removed by the daemon" : "")}"));
        o.WriteLine(string.Create(Invariant, $"  vnic {v.Id} {v.Spec} on {v.Backend}, {v.Mode}; filters {s.Filters}; " +
            $"rx {v.RxFrames} tx {v.TxFrames} frames; drops rx-nobuf {v.RxDropNoBuffer} rx-ring {v.RxDropRingFull} " +
            $"tx-ring {v.TxDropRingFull} tx-err {v.TxErrors}"));
        var r = s.Runtime;
        o.WriteLine(string.Create(Invariant, $"  runtime: allocated {r.AllocatedBytes} B (the dumps' own left out); " +
            $"GCs gen0 {r.Gen0Collections} gen1 {r.Gen1Collections} gen2 {r.Gen2Collections}, paused {r.PauseUs} us; heap {r.HeapBytes} B"));

        o.WriteLine(string.Create(Invariant, $"  TCP: {s.Tcp.Count} sockets"));
        if (s.Tcp.Count > 0)
        {
            o.WriteLine("    {0,-12} {1,8} {2,8} {3,-22} {4,-22} {5,7} {6,9} {7,9} {8,5}", "State", "Recv-Q", "Send-Q",
                "Local Address:Port", "Peer Address:Port", "Retrans", "RTT(us)", "Cwnd", "MSS");
            foreach (var t in s.Tcp)
            {
                // A listener sends nothing: its retransmits, RTT, cwnd and MSS would be the unused defaults.
                bool listening = t.State == "LISTEN";
                o.WriteLine(string.Format(Invariant, "    {0,-12} {1,8} {2,8} {3,-22} {4,-22} {5,7} {6,9} {7,9} {8,5}{9}",
                    t.State, t.ReceiveQueue, t.SendQueue, Endpoint(t.LocalAddress, t.LocalPort), Endpoint(t.RemoteAddress, t.RemotePort),
                    listening ? "-" : t.Retransmits, listening ? "-" : t.RttUs, listening ? "-" : t.Cwnd, listening ? "-" : t.Mss,
                    t.Orphaned ? "  orphan" : ""));
            }
        }
        o.WriteLine(string.Create(Invariant, $"  UDP: {s.Udp.Count} sockets"));
        if (s.Udp.Count > 0)
        {
            o.WriteLine("    {0,-22} {1,-22} {2,10} {3,10} {4,12} {5,8}", "Local Address:Port", "Peer Address:Port",
                "Queued", "Q-bytes", "Datagrams", "Drops");
            foreach (var u in s.Udp)
                o.WriteLine(string.Format(Invariant, "    {0,-22} {1,-22} {2,10} {3,10} {4,12} {5,8}", Endpoint(u.LocalAddress, u.LocalPort),
                    Endpoint(u.RemoteAddress, u.RemotePort), u.QueuedDatagrams, u.QueuedBytes, u.InDatagrams, u.Drops));
        }
        o.WriteLine("  counters (non-zero):");
        var lines = s.Counters.Where(kv => kv.Value != 0).Select(kv => $"{kv.Key} {kv.Value.ToString(Invariant)}").Chunk(4);
        foreach (var line in lines)
            o.WriteLine("    " + string.Join("  ", line));
    }

    /// <summary>As ss writes them: an unset address or port is <c>*</c>.</summary>
    private static string Endpoint(string address, int port) =>
        $"{(address == "0.0.0.0" ? "*" : address)}:{(port == 0 ? "*" : port.ToString(Invariant))}";
}
