using System.Buffers.Binary;
using static Onload.Vnic.Native.Netlink;

namespace Onload.Vnic.Netlink;

/// <summary>
/// One netlink message, a view over its bytes in the receive buffer (<c>struct nlmsghdr</c> and its payload).
/// <see cref="NetlinkMessageReader"/> hands these out only once <c>nlmsg_len</c> has been checked against the
/// datagram, so every accessor reads inside the message.
/// </summary>
public readonly ref struct NetlinkMessage
{
    private readonly ReadOnlySpan<byte> _bytes;

    internal NetlinkMessage(ReadOnlySpan<byte> bytes) => _bytes = bytes;

    public int Length => _bytes.Length;
    public ushort Type => BinaryPrimitives.ReadUInt16LittleEndian(_bytes[4..]);
    public ushort Flags => BinaryPrimitives.ReadUInt16LittleEndian(_bytes[6..]);
    public uint Sequence => BinaryPrimitives.ReadUInt32LittleEndian(_bytes[8..]);
    /// <summary>The sender's port id (0 for the kernel's replies and notifications).</summary>
    public uint PortId => BinaryPrimitives.ReadUInt32LittleEndian(_bytes[12..]);

    /// <summary>Part of a multi-part reply (a dump) that ends with NLMSG_DONE.</summary>
    public bool IsMulti => (Flags & NLM_F_MULTI) != 0;

    /// <summary>The table changed while the kernel dumped it: the dump may be inconsistent and should be redone.</summary>
    public bool DumpInterrupted => (Flags & NLM_F_DUMP_INTR) != 0;

    /// <summary>What follows the 16-byte header: the family header (ifinfomsg, ...) and then attributes.</summary>
    public ReadOnlySpan<byte> Payload => _bytes[NlMsgHdrSize..];

    /// <summary>For NLMSG_ERROR: the negated errno (0 is an acknowledgement), or null if too short to hold one.</summary>
    public int? Error => Payload.Length >= 4 ? BinaryPrimitives.ReadInt32LittleEndian(Payload) : null;
}

/// <summary>
/// Walks the messages of one datagram (netlink(7): NLMSG_OK, NLMSG_NEXT). A header whose <c>nlmsg_len</c> is
/// shorter than the header or runs past the datagram leaves no way to find the next message, so the rest of
/// the datagram is dropped and <see cref="Malformed"/> says so; nothing is read outside the buffer.
/// </summary>
public ref struct NetlinkMessageReader
{
    private ReadOnlySpan<byte> _rest;

    public NetlinkMessageReader(ReadOnlySpan<byte> datagram) => _rest = datagram;

    /// <summary>Whether the datagram ended in bytes that were not a whole message.</summary>
    public bool Malformed { get; private set; }

    public bool TryNext(out NetlinkMessage message)
    {
        message = default;
        if (_rest.IsEmpty)
            return false;
        if (_rest.Length < NlMsgHdrSize)
            return Stop();
        uint len = BinaryPrimitives.ReadUInt32LittleEndian(_rest);
        if (len < NlMsgHdrSize || len > (uint)_rest.Length)
            return Stop();
        message = new NetlinkMessage(_rest[..(int)len]);
        int next = Align((int)len);
        _rest = next >= _rest.Length ? default : _rest[next..];
        return true;
    }

    internal static int Align(int length) => (length + NlMsgAlign - 1) & ~(NlMsgAlign - 1);

    private bool Stop()
    {
        Malformed = true;
        _rest = default;
        return false;
    }
}

/// <summary>One route attribute (<c>struct rtattr</c>): its type, with the nested and byte-order flags masked off, and value.</summary>
public readonly ref struct RtAttribute
{
    internal RtAttribute(ushort type, ReadOnlySpan<byte> value)
    {
        Type = type;
        Value = value;
    }

    public ushort Type { get; }
    public ReadOnlySpan<byte> Value { get; }
}

/// <summary>
/// Walks the attributes after a family header (RTA_OK, RTA_NEXT). An attribute whose length is below its header or
/// overruns the message ends the walk with <see cref="Malformed"/> set: the caller drops the whole message.
/// </summary>
public ref struct RtAttributeReader
{
    private ReadOnlySpan<byte> _rest;

    public RtAttributeReader(ReadOnlySpan<byte> attributes) => _rest = attributes;

    public bool Malformed { get; private set; }

    public bool TryNext(out RtAttribute attribute)
    {
        attribute = default;
        if (_rest.IsEmpty)
            return false;
        if (_rest.Length < RtAttrHeaderSize)
            return Stop();
        ushort len = BinaryPrimitives.ReadUInt16LittleEndian(_rest);
        if (len < RtAttrHeaderSize || len > _rest.Length)
            return Stop();
        ushort type = (ushort)(BinaryPrimitives.ReadUInt16LittleEndian(_rest[2..]) & NLA_TYPE_MASK);
        attribute = new RtAttribute(type, _rest[RtAttrHeaderSize..len]);
        int next = NetlinkMessageReader.Align(len);
        _rest = next >= _rest.Length ? default : _rest[next..];
        return true;
    }

    private bool Stop()
    {
        Malformed = true;
        _rest = default;
        return false;
    }
}
