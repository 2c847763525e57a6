using System.Globalization;
using Onload.Stack.Wire;
using Onload.Vnic.Inspect;

namespace Onload.Apps.Tcpdump;

/// <summary><c>onload-tcpdump -r FILE</c>: one line per frame, tcpdump's style (local time, then the stack's
/// <see cref="PacketPrinter"/>).</summary>
internal static class CapturePrinter
{
    public static int Print(string path, long count, TextWriter output)
    {
        using var reader = new PcapReader(path);
        if (reader.LinkType != PcapFormat.LinkTypeEthernet)
            throw new InvalidDataException($"link type {reader.LinkType}: only Ethernet (1) is printed");
        long printed = 0;
        while ((count == 0 || printed < count) && reader.TryRead(out var record))
        {
            output.Write(Time(record.TimestampNs, reader.Nanosecond));
            output.Write(' ');
            output.Write(PacketPrinter.Format(record.Data));
            if (record.Data.Length < record.OriginalLength)
                output.Write(string.Create(CultureInfo.InvariantCulture, $" [captured {record.Data.Length} of {record.OriginalLength}]"));
            output.WriteLine();
            printed++;
        }
        if (reader.Truncated)
            output.WriteLine("[the file ends inside a record: the writer was stopped while writing]");
        return 0;
    }

    private static string Time(long ns, bool nanosecond)
    {
        var local = DateTime.UnixEpoch.AddTicks(ns / 100).ToLocalTime();
        long fraction = nanosecond ? ns % 1_000_000_000 : ns % 1_000_000_000 / 1_000;
        return string.Create(CultureInfo.InvariantCulture,
            $"{local:HH:mm:ss}.{fraction.ToString(nanosecond ? "D9" : "D6", CultureInfo.InvariantCulture)}");
    }
}
