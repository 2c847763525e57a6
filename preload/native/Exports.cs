using System.Reflection;
using System.Runtime.InteropServices;
using System.Text;

namespace Onload.Native;

/// <summary>
/// The C ABI of the stack: every function that libonload_stack.so exports, declared for C in
/// preload/include/onload_stack.h.
/// </summary>
/// <remarks>
/// To add an export: write a static method here with <c>[UnmanagedCallersOnly(EntryPoint = "onload_stack_...")]</c>
/// and only blittable parameters and return type (integers, pointers); declare it, and its <c>_fn</c> pointer
/// typedef, in onload_stack.h; add a check for it to preload/tests/abi_smoke.c. Raise <see cref="AbiVersion"/>
/// (and ONLOAD_STACK_ABI_VERSION in the header) when an existing export changes meaning or signature; adding
/// one does not need it. No exception may leave an export (the process would abort): catch and return a
/// negative errno value.
/// </remarks>
public static unsafe class Exports
{
    /// <summary>Must equal ONLOAD_STACK_ABI_VERSION in onload_stack.h.</summary>
    public const int AbiVersion = 2;

    private const int EINVAL = 22;
    private const int EIO = 5;

    private static readonly byte[] s_version = Encoding.UTF8.GetBytes(
        $"onload-stack {InformationalVersion()} abi {AbiVersion}");

    /// <summary><c>int onload_stack_abi_version(void)</c></summary>
    [UnmanagedCallersOnly(EntryPoint = "onload_stack_abi_version")]
    public static int GetAbiVersion() => AbiVersion;

    /// <summary>
    /// <c>int onload_stack_version(char *buf, int len)</c>: writes the version string, truncated to
    /// <paramref name="len"/> - 1 bytes and NUL-terminated, like snprintf. Returns the string's full length
    /// (without the NUL), so a return of <paramref name="len"/> or more means it was truncated; with
    /// <paramref name="buf"/> NULL and <paramref name="len"/> 0 it only returns the length. -EINVAL for a
    /// negative length or a NULL buffer with a positive length.
    /// </summary>
    [UnmanagedCallersOnly(EntryPoint = "onload_stack_version")]
    public static int GetVersion(byte* buf, int len)
    {
        try
        {
            if (len < 0 || (buf == null && len > 0))
                return -EINVAL;
            if (len > 0)
            {
                int n = Math.Min(s_version.Length, len - 1);
                s_version.AsSpan(0, n).CopyTo(new Span<byte>(buf, n));
                buf[n] = 0;
            }
            return s_version.Length;
        }
        catch (Exception)
        {
            return -EIO;
        }
    }

    /// <summary>
    /// <c>int onload_stack_selftest(uint64_t seed, int datagrams)</c>: runs two stacks joined by the simulated
    /// link (5% loss each way, reordering, corruption; virtual time, so it takes milliseconds), sends
    /// <paramref name="datagrams"/> UDP datagrams each way and returns how many arrived intact; a datagram that
    /// arrived damaged makes it return -EIO. Proves from C that the AOT-compiled data path works.
    /// </summary>
    [UnmanagedCallersOnly(EntryPoint = "onload_stack_selftest")]
    public static int SelfTest(ulong seed, int datagrams)
    {
        try
        {
            if (datagrams is < 1 or > 100_000)
                return -EINVAL;
            return SimSelfTest.Run(seed, datagrams);
        }
        catch (Exception)
        {
            return -EIO;
        }
    }

    private static string InformationalVersion()
    {
        string? v = typeof(Exports).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion;
        return string.IsNullOrEmpty(v) ? "0.0.0" : v;
    }
}
