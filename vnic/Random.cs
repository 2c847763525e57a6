namespace Onload.Vnic;

/// <summary>Randomness as the stack and the simulated link take it, so tests can seed it.</summary>
public interface IRandomSource
{
    ulong NextUInt64();
}

/// <summary>
/// xoshiro256** seeded through SplitMix64: fast, small, and the same sequence for the same seed on every
/// machine and runtime (unlike <see cref="System.Random"/>, whose algorithm is not specified).
/// </summary>
public sealed class SeededRandom : IRandomSource
{
    private ulong _s0, _s1, _s2, _s3;

    public SeededRandom(ulong seed)
    {
        _s0 = SplitMix(ref seed);
        _s1 = SplitMix(ref seed);
        _s2 = SplitMix(ref seed);
        _s3 = SplitMix(ref seed);
    }

    private static ulong SplitMix(ref ulong x)
    {
        ulong z = x += 0x9E37_79B9_7F4A_7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58_476D_1CE4_E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D0_49BB_1331_11EBUL;
        return z ^ (z >> 31);
    }

    public ulong NextUInt64()
    {
        ulong result = ulong.RotateLeft(_s1 * 5, 7) * 9;
        ulong t = _s1 << 17;
        _s2 ^= _s0;
        _s3 ^= _s1;
        _s1 ^= _s2;
        _s0 ^= _s3;
        _s2 ^= t;
        _s3 = ulong.RotateLeft(_s3, 45);
        return result;
    }

    /// <summary>A double in [0, 1).</summary>
    public double NextDouble() => (NextUInt64() >> 11) * (1.0 / (1UL << 53));

    /// <summary>An integer in [0, bound).</summary>
    public int Next(int bound) => (int)((NextUInt64() >> 33) % (ulong)bound);
}

/// <summary>The operating system's randomness (getrandom through <see cref="System.Security.Cryptography.RandomNumberGenerator"/>).</summary>
public sealed class SystemRandom : IRandomSource
{
    public static readonly SystemRandom Instance = new();

    public ulong NextUInt64()
    {
        Span<byte> b = stackalloc byte[8];
        System.Security.Cryptography.RandomNumberGenerator.Fill(b);
        return BitConverter.ToUInt64(b);
    }
}
