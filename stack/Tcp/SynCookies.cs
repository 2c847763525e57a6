using Onload.Stack.Wire;

namespace Onload.Stack.Tcp;

/// <summary>
/// SYN cookies (RFC 4987 §3.6), laid out as Linux's syncookies.c lays them out so that a peer sees the same
/// behaviour: the SYN-ACK's sequence number carries, under a keyed hash of the 4-tuple, a minute counter and an
/// index into a small table of MSS values; with timestamps, the SYN-ACK's TSval carries the peer's window scale and
/// SACK-permitted in its low bits (Linux's cookie_init_timestamp). The ACK that completes the handshake brings
/// both back (its ACK field - 1, its TSecr), and nothing was stored in between.
/// </summary>
public static class SynCookies
{
    /// <summary>MSS values a cookie can say (Linux's msstab): the peer's MSS rounds down to one of them.</summary>
    public static ReadOnlySpan<ushort> MssTable => [536, 1300, 1440, 1460];

    /// <summary>A cookie is good for the minute it was made in and the next (Linux's MAX_SYNCOOKIE_AGE of 2).</summary>
    public const uint MaxAgeMinutes = 2;

    private const int CountShift = 24;
    private const uint DataMask = (1u << CountShift) - 1;

    /// <summary>Low bits of the SYN-ACK's TSval that carry the options (Linux's TSBITS).</summary>
    public const int TimestampBits = 6;
    private const uint WindowScaleMask = 0xF;
    private const uint SackBit = 1u << 4;

    /// <summary>The minute counter (Linux's tcp_cookie_time).</summary>
    public static uint Minutes(long nowNs) => (uint)(nowNs / 60_000_000_000L);

    /// <summary>The table index of the largest MSS not above the peer's (the smallest entry when none is).</summary>
    public static int MssIndex(int peerMss)
    {
        var table = MssTable;
        int i = table.Length - 1;
        while (i > 0 && peerMss < table[i])
            i--;
        return i;
    }

    /// <summary>
    /// The cookie for a SYN with sequence number <paramref name="peerIsn"/>: H1(tuple, ISN) + count × 2^24 +
    /// ((H2(tuple, ISN, count) + MSS index) mod 2^24), as Linux's secure_tcp_syn_cookie lays it out, except that
    /// the ISN goes into both hashes where Linux adds it to the sum. With the sum, any later segment of a closed
    /// connection whose sequence and acknowledgement numbers moved on by the same amount checks out (an echo's
    /// last ACK, sent again after our FIN was retransmitted, made a connection nobody asked for); hashed, only the
    /// handshake's own numbers do. The first hash keeps the count out of sight.
    /// </summary>
    public static uint Make(ulong key0, ulong key1, in Tuple tuple, uint peerIsn, uint minutes, int mssIndex) =>
        Hash(key0, key1, tuple, peerIsn, 0, 0) + (minutes << CountShift) +
        ((Hash(key0, key1, tuple, peerIsn, minutes, 1) + (uint)mssIndex) & DataMask);

    /// <summary>The MSS index a cookie carries, or -1 when it is not one this key made for this tuple and ISN in
    /// the last <see cref="MaxAgeMinutes"/> minutes (Linux's check_tcp_syn_cookie).</summary>
    public static int Check(ulong key0, ulong key1, in Tuple tuple, uint peerIsn, uint minutes, uint cookie)
    {
        uint v = cookie - Hash(key0, key1, tuple, peerIsn, 0, 0);
        uint age = (minutes - (v >> CountShift)) & (uint.MaxValue >> CountShift);
        if (age >= MaxAgeMinutes)
            return -1;
        uint count = minutes - age;
        uint index = (v - Hash(key0, key1, tuple, peerIsn, count, 1)) & DataMask;
        return index < (uint)MssTable.Length ? (int)index : -1;
    }

    /// <summary>
    /// The TSval of a cookie SYN-ACK: <paramref name="now"/> with its low bits replaced by the peer's window scale
    /// (15: none) and SACK-permitted, stepped back one period if that put it in the future, so our clock seen by the
    /// peer never jumps ahead (Linux's cookie_init_timestamp).
    /// </summary>
    public static uint EncodeTimestamp(uint now, int peerWindowScale, bool sack)
    {
        uint options = peerWindowScale >= 0 ? (uint)peerWindowScale & WindowScaleMask : WindowScaleMask;
        if (sack)
            options |= SackBit;
        uint ts = (now >> TimestampBits << TimestampBits) | options;
        if ((int)(ts - now) > 0)
            ts -= 1u << TimestampBits;
        return ts;
    }

    /// <summary>What the TSecr of the cookie's ACK says of the SYN: window scale (-1: none) and SACK-permitted
    /// (Linux's cookie_timestamp_decode).</summary>
    public static (int WindowScale, bool Sack) DecodeTimestamp(uint tsEcr)
    {
        uint options = tsEcr & ((1u << TimestampBits) - 1);
        uint ws = options & WindowScaleMask;
        return (ws == WindowScaleMask ? -1 : (int)Math.Min(ws, 14), (options & SackBit) != 0);
    }

    /// <summary>SipHash of the tuple and the ISN, keyed by the secret with the count and which hash folded in.</summary>
    private static uint Hash(ulong key0, ulong key1, in Tuple tuple, uint peerIsn, uint count, uint which) =>
        (uint)SipHash.Hash(key0, key1 ^ ((ulong)count << 1 | which), ((ulong)tuple.Local.Value << 32) | tuple.Remote.Value,
            ((ulong)tuple.LocalPort << 48) | ((ulong)tuple.RemotePort << 32) | peerIsn);

    /// <summary>The connection's 4-tuple as the listener sees it.</summary>
    public readonly record struct Tuple(Ipv4Address Local, ushort LocalPort, Ipv4Address Remote, ushort RemotePort);
}
