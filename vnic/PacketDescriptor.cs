namespace Onload.Vnic;

/// <summary>What a ring slot says about one frame: which buffer of the pool holds it and how long it is.</summary>
/// <remarks>Frames always start at offset 0 of their buffer; the backends leave no headroom.</remarks>
public struct PacketDescriptor
{
    public int Buffer;
    public int Length;
    public PacketFlags Flags;

    public PacketDescriptor(int buffer, int length, PacketFlags flags = PacketFlags.None)
    {
        Buffer = buffer;
        Length = length;
        Flags = flags;
    }
}

[Flags]
public enum PacketFlags
{
    None = 0,

    /// <summary>
    /// The backend vouches for the transport checksum: the frame was made by the local kernel with its
    /// checksum left for offload (AF_PACKET's TP_STATUS_CSUMNOTREADY) or already verified by hardware.
    /// </summary>
    ChecksumTrusted = 1,

    /// <summary>
    /// Made from a datagram the host's kernel delivered to a port's kernel socket (driverlink), not received from
    /// the wire: its source may be the host's own address, which from the wire would be a martian. No backend sets it.
    /// </summary>
    FromHostKernel = 2,
}
