using BenchmarkDotNet.Attributes;
using Onload.Stack.Wire;

namespace Onload.Perf.Stack;

/// <summary>
/// The Internet checksum over a payload of each size the stack sends and validates whole: a small message, a
/// full 1500-byte frame's TCP segment, and a 9000-byte shared-memory frame's. Every TCP and UDP segment is summed
/// once when sent and once when received, so on a bulk stream this is a pass over every byte at each end.
/// </summary>
[MemoryDiagnoser]
public class ChecksumBenchmarks
{
    private readonly byte[] _data = new byte[9000];

    [Params(64, 1460, 8960)]
    public int Bytes { get; set; }

    [GlobalSetup]
    public void Setup() => new Random(1071).NextBytes(_data);

    [Benchmark(Description = "Internet checksum")]
    public ushort Compute() => Checksum.Compute(_data.AsSpan(0, Bytes));
}
