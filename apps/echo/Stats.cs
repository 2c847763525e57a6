using Onload.Stack;

namespace Onload.Apps.Echo;

internal static class Stats
{
    public static void Print(NetStack stack, TextWriter w)
    {
        w.WriteLine("onload-echo: counters");
        foreach (var (name, value) in stack.Counters.Snapshot())
            if (value != 0)
                w.WriteLine($"  {name,-32} {value}");
        var v = stack.Vnic.Counters;
        w.WriteLine($"  {"Vnic.RxFrames",-32} {v.RxFrames}");
        w.WriteLine($"  {"Vnic.TxFrames",-32} {v.TxFrames}");
        if (v.RxDropNoBuffer + v.RxDropRingFull + v.RxDropTooLong + v.TxDropRingFull + v.TxErrors > 0)
            w.WriteLine($"  Vnic drops: nobuf {v.RxDropNoBuffer} ring {v.RxDropRingFull} toolong {v.RxDropTooLong} txring {v.TxDropRingFull} txerr {v.TxErrors}");
        w.Flush();
    }
}
