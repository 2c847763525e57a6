namespace Onload.Tests;

/// <summary>Bytes for tests to send and compare: reproducible from a seed, so a failure can be replayed.</summary>
public static class TestData
{
    /// <summary><paramref name="length"/> pseudo-random bytes drawn from <paramref name="seed"/>.</summary>
    public static byte[] Random(int seed, int length)
    {
        var d = new byte[length];
        new System.Random(seed).NextBytes(d);
        return d;
    }
}
