using System.Buffers.Binary;
using static Onload.Vnic.Native.Netlink;

namespace Onload.Vnic.Netlink;

/// <summary>
/// Writes netlink messages into a caller's buffer: a header, a family header, attributes, each padded to 4 bytes
/// (NLMSG_ALIGN, RTA_ALIGN). Used for the dump requests; tests use it to build the kernel's side.
/// </summary>
public ref struct NetlinkWriter
{
    private readonly Span<byte> _buffer;
    private int _messageStart;

    public NetlinkWriter(Span<byte> buffer)
    {
        _buffer = buffer;
        _messageStart = -1;
    }

    /// <summary>Bytes written so far (whole messages once <see cref="EndMessage"/> has run).</summary>
    public int Length { get; private set; }

    public ReadOnlySpan<byte> Written => _buffer[..Length];

    public void BeginMessage(ushort type, ushort flags, uint sequence, uint portId = 0)
    {
        if (_messageStart >= 0)
            throw new InvalidOperationException("the previous message has not ended");
        _messageStart = Length;
        var h = Take(NlMsgHdrSize);
        BinaryPrimitives.WriteUInt16LittleEndian(h[4..], type);
        BinaryPrimitives.WriteUInt16LittleEndian(h[6..], flags);
        BinaryPrimitives.WriteUInt32LittleEndian(h[8..], sequence);
        BinaryPrimitives.WriteUInt32LittleEndian(h[12..], portId);
    }

    /// <summary>Appends raw bytes (a family header such as ifinfomsg), padded to 4.</summary>
    public void Write(scoped ReadOnlySpan<byte> bytes) => bytes.CopyTo(Take(bytes.Length));

    /// <summary>Appends <paramref name="length"/> zero bytes (padded to 4) and returns them to fill in.</summary>
    public Span<byte> Reserve(int length) => Take(length);

    public void Attribute(ushort type, scoped ReadOnlySpan<byte> value)
    {
        var a = Take(RtAttrHeaderSize + value.Length);
        BinaryPrimitives.WriteUInt16LittleEndian(a, checked((ushort)(RtAttrHeaderSize + value.Length)));
        BinaryPrimitives.WriteUInt16LittleEndian(a[2..], type);
        value.CopyTo(a[RtAttrHeaderSize..]);
    }

    public void AttributeUInt32(ushort type, uint value)
    {
        Span<byte> v = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(v, value);
        Attribute(type, v);
    }

    /// <summary>An IPv4 address (host byte order in <paramref name="address"/>) as the kernel stores it, in network order.</summary>
    public void AttributeIpv4(ushort type, uint address)
    {
        Span<byte> v = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(v, address);
        Attribute(type, v);
    }

    /// <summary>Fills in <c>nlmsg_len</c> (the unpadded length, as the kernel does).</summary>
    public void EndMessage()
    {
        if (_messageStart < 0)
            throw new InvalidOperationException("no message has begun");
        BinaryPrimitives.WriteUInt32LittleEndian(_buffer[_messageStart..], (uint)(Length - _messageStart));
        _messageStart = -1;
    }

    private Span<byte> Take(int length)
    {
        int padded = NetlinkMessageReader.Align(length);
        if (Length + padded > _buffer.Length)
            throw new InvalidOperationException($"netlink message does not fit the {_buffer.Length}-byte buffer");
        var s = _buffer.Slice(Length, padded);
        s.Clear();
        Length += padded;
        return s[..length];
    }
}
