using System.Buffers.Binary;
using System.Globalization;
using Onload.Fuzz;

// onload-fuzz TARGET                      run under afl-fuzz (SharpFuzz's out-of-process mode)
// onload-fuzz TARGET --replay PATH...     run saved inputs (files, or every file of a directory); exit 1 at the first
//                                         that throws, naming it
// onload-fuzz seed PCAP DIR               seeds for every target from a real capture (Ethernet), in DIR/TARGET/
if (args.Length >= 3 && args[0] == "seed")
    return Seeds.Write(args[1], args[2]);
if (args.Length == 0 || !Targets.Names.Contains(args[0]))
{
    Console.Error.WriteLine($"usage: onload-fuzz TARGET [--replay PATH...] | onload-fuzz seed PCAP DIR; targets: {string.Join(", ", Targets.Names)}");
    return 2;
}
string target = args[0];
if (args.Length >= 2 && args[1] == "--replay")
{
    int ran = 0;
    foreach (string path in args.Skip(2).SelectMany(p => Directory.Exists(p) ? Directory.GetFiles(p).Order() : (IEnumerable<string>)[p]))
    {
        try
        {
            Targets.Run(target, Inputs.Read(path));
            ran++;
        }
        catch (Exception e)
        {
            Console.Error.WriteLine($"onload-fuzz {target}: {path}: {e}");
            return 1;
        }
    }
    Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"onload-fuzz {target}: {ran} inputs replayed, none failed"));
    return 0;
}
SharpFuzz.Fuzzer.OutOfProcess.Run(stream =>
{
    using var memory = new MemoryStream();
    stream.CopyTo(memory);
    Targets.Run(target, memory.ToArray());
});
return 0;

namespace Onload.Fuzz
{
    /// <summary>Saved inputs: raw bytes, or (files ending .hex, as regressions are kept in the tree) hex text.</summary>
    internal static class Inputs
    {
        public static byte[] Read(string path) =>
            path.EndsWith(".hex", StringComparison.Ordinal)
                ? Convert.FromHexString(string.Concat(File.ReadAllLines(path).Where(l => !l.StartsWith('#'))
                    .SelectMany(l => l.Where(Uri.IsHexDigit))))
                : File.ReadAllBytes(path);

        /// <summary>Writes records (2-byte big-endian length, then the bytes) as one input.</summary>
        public static byte[] Records(IEnumerable<byte[]> records)
        {
            var output = new MemoryStream();
            Span<byte> length = stackalloc byte[2];
            foreach (var r in records)
            {
                BinaryPrimitives.WriteUInt16BigEndian(length, (ushort)Math.Min(r.Length, ushort.MaxValue));
                output.Write(length);
                output.Write(r, 0, Math.Min(r.Length, ushort.MaxValue));
            }
            return output.ToArray();
        }
    }
}
