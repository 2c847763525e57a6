namespace Onload.Driverlink;

/// <summary>
/// The driverlink protocol's version. Peers with the same major version talk; a minor version only adds
/// (new message kinds, new flags), and a sender uses only what the peer's minor version, learnt from its Hello, knows.
/// </summary>
public readonly record struct ProtocolVersion(byte Major, byte Minor)
{
    public static readonly ProtocolVersion Current = new(1, 1); // 1.1: AttachRequest.Reattach

    public bool IsCompatibleWith(ProtocolVersion other) => Major == other.Major;

    public override string ToString() => $"{Major}.{Minor}";
}
