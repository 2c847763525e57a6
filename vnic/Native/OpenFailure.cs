namespace Onload.Vnic.Native;

/// <summary>Builds the exceptions a backend throws when it cannot open: the spec, what failed, and errno's text.</summary>
internal static class OpenFailure
{
    /// <summary>e.g. "af_packet:veth0: setsockopt(PACKET_RX_RING) failed: Cannot allocate memory (errno 12)".</summary>
    public static IOException Call(string spec, string call, int errno) =>
        Make($"{spec}: {call} failed: {Errno.Describe(errno)}", errno);

    /// <summary>e.g. "af_packet:veth0: no such interface".</summary>
    public static IOException Message(string spec, string text, int errno = 0) => Make($"{spec}: {text}", errno);

    private static IOException Make(string message, int errno)
    {
        // HResult carries errno for callers that want to branch on it without parsing the text.
        return errno != 0 ? new IOException(message, errno) : new IOException(message);
    }
}
