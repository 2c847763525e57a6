using System.Buffers.Binary;
using Onload.Vnic;

namespace Onload.Stack.Wire;

public enum ArpOperation : ushort
{
    Request = 1,
    Reply = 2,
}

/// <summary>An ARP packet for IPv4 over Ethernet (RFC 826): 28 bytes.</summary>
public readonly ref struct ArpPacket
{
    public const int Length = 28;
    public const ushort HardwareEthernet = 1;

    private readonly Span<byte> _b;

    public ArpPacket(Span<byte> packet) => _b = packet;

    public ushort HardwareType
    {
        get => BinaryPrimitives.ReadUInt16BigEndian(_b);
        set => BinaryPrimitives.WriteUInt16BigEndian(_b, value);
    }

    public ushort ProtocolType
    {
        get => BinaryPrimitives.ReadUInt16BigEndian(_b[2..]);
        set => BinaryPrimitives.WriteUInt16BigEndian(_b[2..], value);
    }

    public byte HardwareLength { get => _b[4]; set => _b[4] = value; }
    public byte ProtocolLength { get => _b[5]; set => _b[5] = value; }

    public ArpOperation Operation
    {
        get => (ArpOperation)BinaryPrimitives.ReadUInt16BigEndian(_b[6..]);
        set => BinaryPrimitives.WriteUInt16BigEndian(_b[6..], (ushort)value);
    }

    public MacAddress SenderHardware { get => MacAddress.Read(_b[8..]); set => value.Write(_b[8..]); }
    public Ipv4Address SenderProtocol { get => Ipv4Address.Read(_b[14..]); set => value.Write(_b[14..]); }
    public MacAddress TargetHardware { get => MacAddress.Read(_b[18..]); set => value.Write(_b[18..]); }
    public Ipv4Address TargetProtocol { get => Ipv4Address.Read(_b[24..]); set => value.Write(_b[24..]); }

    /// <summary>Checks a received packet once; anything but Ethernet/IPv4 request or reply is refused.</summary>
    public static DropReason Validate(ReadOnlySpan<byte> packet)
    {
        if (packet.Length < Length)
            return DropReason.ArpTruncated;
        if (BinaryPrimitives.ReadUInt16BigEndian(packet) != HardwareEthernet ||
            BinaryPrimitives.ReadUInt16BigEndian(packet[2..]) != EtherType.Ipv4 ||
            packet[4] != 6 || packet[5] != 4)
            return DropReason.ArpUnsupportedFormat;
        ushort op = BinaryPrimitives.ReadUInt16BigEndian(packet[6..]);
        if (op is not ((ushort)ArpOperation.Request or (ushort)ArpOperation.Reply))
            return DropReason.ArpBadOperation;
        return DropReason.None;
    }

    public void Write(ArpOperation operation, MacAddress senderHw, Ipv4Address senderIp, MacAddress targetHw, Ipv4Address targetIp)
    {
        HardwareType = HardwareEthernet;
        ProtocolType = EtherType.Ipv4;
        HardwareLength = 6;
        ProtocolLength = 4;
        Operation = operation;
        SenderHardware = senderHw;
        SenderProtocol = senderIp;
        TargetHardware = targetHw;
        TargetProtocol = targetIp;
    }
}
