namespace Onload.Driverlink;

public enum PeerRole : byte
{
    Client = 1,
    Daemon = 2,
}

/// <summary>
/// The first message each way on a connection: who is speaking, its software version, and (in the header) the
/// protocol version it speaks. Payload: role (1), reserved (3), software version (string, at most 64 bytes).
/// Kind 1 and this layout are frozen across major versions, so two incompatible peers can still say which they are.
/// </summary>
public sealed record Hello(PeerRole Role, string SoftwareVersion) : Message
{
    public const int MaxSoftwareVersionBytes = 64;

    public override MessageKind Kind => MessageKind.Hello;

    /// <summary>This message's protocol version (the header's).</summary>
    public ProtocolVersion ProtocolVersion => Version;

    /// <summary>
    /// Null when <paramref name="local"/> and <paramref name="peer"/> can talk; otherwise the refusal, naming both
    /// sides' software and protocol versions.
    /// </summary>
    public static string? Incompatibility(Hello local, Hello peer)
    {
        ArgumentNullException.ThrowIfNull(local);
        ArgumentNullException.ThrowIfNull(peer);
        if (local.ProtocolVersion.IsCompatibleWith(peer.ProtocolVersion))
            return null;
        return $"driverlink: incompatible protocol versions: this {Describe(local)}, the peer {Describe(peer)}; " +
               "the major versions must match (upgrade the older side)";
    }

    private static string Describe(Hello h) =>
        $"{(h.Role == PeerRole.Daemon ? "daemon" : "client")} {h.SoftwareVersion} speaks protocol {h.ProtocolVersion}";

    private protected override void WritePayload(ref PayloadWriter w)
    {
        w.U8((byte)Role);
        w.Reserved(3);
        w.String(SoftwareVersion, MaxSoftwareVersionBytes, nameof(SoftwareVersion));
    }

    internal static Hello Read(ref PayloadReader r)
    {
        var role = r.Enum<PeerRole>();
        r.Reserved(3);
        return new Hello(role, r.String(MaxSoftwareVersionBytes));
    }
}
