using System.Buffers.Binary;
using Onload.Driverlink;
using Onload.Vnic;

namespace Onload.Tests.Driverlink;

[TestFixture]
public class CodecTests
{
    private static IEnumerable<TestCaseData> Samples() =>
        SampleMessages.All.Select(m => new TestCaseData(m).SetArgDisplayNames($"{m.Kind}:{m.RequestId}:{m.GetHashCode():x}"));

    [TestCaseSource(nameof(Samples))]
    public void Every_message_round_trips_to_an_equal_message_and_the_same_bytes(Message message)
    {
        byte[] bytes = message.ToArray();
        Assert.That(Message.TryDecode(bytes, out var decoded, out var error), Is.True, error.ToString());
        Assert.That(decoded, Is.EqualTo(message));
        Assert.That(decoded!.ToArray(), Is.EqualTo(bytes));
    }

    [Test]
    public void A_neighbour_resolution_encoded_without_its_record_is_the_records_bytes_and_allocates_nothing()
    {
        var record = new ResolveNeighbour(0x01020304, 0x0A000002);
        Span<byte> buffer = stackalloc byte[MessageHeader.MaxMessageLength];
        ResolveNeighbour.Encode(buffer, 0x01020304, 0x0A000002); // the first call's one-time costs
        long before = GC.GetAllocatedBytesForCurrentThread();
        int length = ResolveNeighbour.Encode(buffer, 0x01020304, 0x0A000002);
        Assert.That(GC.GetAllocatedBytesForCurrentThread() - before, Is.Zero);
        Assert.That(buffer[..length].ToArray(), Is.EqualTo(record.ToArray()));
    }

    [Test]
    public void Every_kind_has_a_sample()
    {
        var covered = SampleMessages.All.Select(m => m.Kind).ToHashSet();
        Assert.That(covered, Is.EquivalentTo(Enum.GetValues<MessageKind>()));
    }

    [Test]
    public void The_header_is_16_little_endian_bytes_and_addresses_are_in_network_order()
    {
        var m = new FilterInsert(0x01020304, new FilterSpec(FilterProtocol.Udp, 0x0A000001, 0x1234)) { RequestId = 0xAABBCCDD };
        byte[] b = m.ToArray();
        Assert.That(b.AsSpan(0, 4).ToArray(), Is.EqualTo("ODLK"u8.ToArray()));
        Assert.That(b[4..6], Is.EqualTo(new byte[] { ProtocolVersion.Current.Major, ProtocolVersion.Current.Minor }));
        Assert.That(BinaryPrimitives.ReadUInt16LittleEndian(b.AsSpan(6)), Is.EqualTo((ushort)MessageKind.FilterInsert));
        Assert.That(BinaryPrimitives.ReadUInt16LittleEndian(b.AsSpan(10)), Is.EqualTo(20));
        Assert.That(BinaryPrimitives.ReadUInt32LittleEndian(b.AsSpan(12)), Is.EqualTo(0xAABBCCDD));
        Assert.That(BinaryPrimitives.ReadUInt32LittleEndian(b.AsSpan(16)), Is.EqualTo(0x01020304u));
        Assert.That(b[24..28], Is.EqualTo(new byte[] { 10, 0, 0, 1 }));
        Assert.That(b.Length, Is.EqualTo(36));
    }

    [Test]
    public void An_incompatible_major_version_is_refused_naming_both_versions()
    {
        var local = new Hello(PeerRole.Client, "onload 0.6.0");
        var peer = new Hello(PeerRole.Daemon, "onload-driverd 2.1.0") { Version = new ProtocolVersion(2, 3) };

        // A future major's Hello still decodes, so the refusal can say what the peer is.
        Assert.That(Message.TryDecode(peer.ToArray(), out var decoded, out _), Is.True);
        string? refusal = Hello.Incompatibility(local, (Hello)decoded!);

        Assert.That(refusal, Does.Contain($"client onload 0.6.0 speaks protocol {ProtocolVersion.Current}"));
        Assert.That(refusal, Does.Contain("daemon onload-driverd 2.1.0 speaks protocol 2.3"));
        Assert.That(Hello.Incompatibility(local, new Hello(PeerRole.Daemon, "x") { Version = new ProtocolVersion(1, 4) }), Is.Null);
    }

    [Test]
    public void Another_major_version_is_refused_on_every_kind_but_hello()
    {
        byte[] b = new Detach(1) { Version = new ProtocolVersion(2, 0) }.ToArray();
        AssertRefused(b, DecodeError.UnsupportedVersion);
    }

    // Each malformation, made from a valid message, and the one error it must give.
    private static byte[] Valid(Message m) => m.ToArray();

    private static byte[] Patched(Message m, int offset, params byte[] bytes)
    {
        byte[] b = m.ToArray();
        bytes.CopyTo(b, offset);
        return b;
    }

    /// <summary>A message whose payload is <paramref name="payload"/>, with a correct header.</summary>
    private static byte[] WithPayload(MessageKind kind, byte[] payload)
    {
        byte[] b = new byte[MessageHeader.Length + payload.Length];
        new Detach(0).ToArray().AsSpan(0, MessageHeader.Length).CopyTo(b);
        BinaryPrimitives.WriteUInt16LittleEndian(b.AsSpan(6), (ushort)kind);
        BinaryPrimitives.WriteUInt16LittleEndian(b.AsSpan(10), (ushort)payload.Length);
        payload.CopyTo(b, MessageHeader.Length);
        return b;
    }

    private static byte[] HelloWithVersion(byte[] version)
    {
        byte[] payload = [1, 0, 0, 0, (byte)version.Length, .. version];
        return WithPayload(MessageKind.Hello, payload);
    }

    private static IEnumerable<TestCaseData> Malformed()
    {
        var detach = new Detach(9);
        yield return new TestCaseData(Array.Empty<byte>(), DecodeError.Truncated).SetName("empty: Truncated");
        yield return new TestCaseData(Valid(detach)[..15], DecodeError.Truncated).SetName("short header: Truncated");
        yield return new TestCaseData(Patched(detach, 0, (byte)'X'), DecodeError.BadMagic).SetName("wrong magic: BadMagic");
        yield return new TestCaseData(Patched(detach, 6, 99, 0), DecodeError.UnknownKind).SetName("unknown kind: UnknownKind");
        yield return new TestCaseData(Patched(detach, 6, 0, 0), DecodeError.UnknownKind).SetName("kind 0: UnknownKind");
        yield return new TestCaseData(Patched(detach, 8, 1, 0), DecodeError.UnknownFlags).SetName("a flag: UnknownFlags");
        yield return new TestCaseData(Valid(detach)[..^1], DecodeError.LengthMismatch).SetName("a byte short of its length: LengthMismatch");
        yield return new TestCaseData(Valid(detach).Append((byte)0).ToArray(), DecodeError.LengthMismatch).SetName("a byte beyond its length: LengthMismatch");
        yield return new TestCaseData(Patched(detach, 10, 0xF1, 0x0F), DecodeError.Oversized).SetName("header claims 4081 bytes: Oversized");
        var huge = new byte[MessageHeader.MaxMessageLength + 1];
        Valid(detach).AsSpan(0, 16).CopyTo(huge);
        BinaryPrimitives.WriteUInt16LittleEndian(huge.AsSpan(10), (ushort)(huge.Length - 16));
        yield return new TestCaseData(huge, DecodeError.Oversized).SetName("4097 bytes: Oversized");
        yield return new TestCaseData(WithPayload(MessageKind.Detach, [1, 2, 3]), DecodeError.Truncated).SetName("payload ends in a field: Truncated");
        yield return new TestCaseData(WithPayload(MessageKind.Detach, [1, 2, 3, 4, 5]), DecodeError.TrailingBytes).SetName("payload longer than its fields: TrailingBytes");
        yield return new TestCaseData(HelloWithVersion([0xC3, 0x28]), DecodeError.InvalidUtf8).SetName("bad UTF-8: InvalidUtf8");
        yield return new TestCaseData(HelloWithVersion([0xED, 0xA0, 0x80]), DecodeError.InvalidUtf8).SetName("encoded surrogate: InvalidUtf8");
        yield return new TestCaseData(HelloWithVersion([(byte)'a', 0, (byte)'b']), DecodeError.StringHasNul).SetName("NUL in a string: StringHasNul");
        yield return new TestCaseData(HelloWithVersion(Enumerable.Repeat((byte)'v', 65).ToArray()), DecodeError.StringTooLong).SetName("65-byte version: StringTooLong");
        yield return new TestCaseData(WithPayload(MessageKind.Hello, [1, 0, 0, 0, 5, (byte)'a']), DecodeError.Truncated).SetName("string past the end: Truncated");
        yield return new TestCaseData(WithPayload(MessageKind.AttachRequest, [1, 0, 0, 0, .. new byte[12], 16, .. Enumerable.Repeat((byte)'e', 16)]), DecodeError.StringTooLong).SetName("16-byte interface name: StringTooLong");
        yield return new TestCaseData(WithPayload(MessageKind.AttachRequest, [1, 0, 0, 0, .. new byte[12], 0]), DecodeError.BadValue).SetName("empty interface name: BadValue");
        yield return new TestCaseData(Patched(new AttachRequest("veth0", VnicMode.Shared, 1, 1, 1), 16, 3), DecodeError.UnknownEnumValue).SetName("mode 3: UnknownEnumValue");
        yield return new TestCaseData(Patched(new AttachRequest("veth0", VnicMode.Shared, 1, 1, 1), 18, 1), DecodeError.BadValue).SetName("reserved byte set: BadValue");
        yield return new TestCaseData(Patched(new AttachRequest("veth0", VnicMode.Shared, 1, 1, 1), 17, 2), DecodeError.BadValue).SetName("reattach flag 2: BadValue");
        yield return new TestCaseData(Patched(new AttachRequest("veth0", VnicMode.Shared, 1, 1, 1), 17, 1), DecodeError.Truncated).SetName("a shared reattach without the rings' name: Truncated");
        yield return new TestCaseData(Patched(new Hello(PeerRole.Client, "x"), 16, 0), DecodeError.UnknownEnumValue).SetName("role 0: UnknownEnumValue");
        var reply = AttachReply.Success(1, 1500, MacAddress.Zero, [new InterfaceAddress(1, 8)], VnicMode.Exclusive);
        yield return new TestCaseData(Patched(reply, 32, 17), DecodeError.BadValue).SetName("17 addresses: BadValue");
        yield return new TestCaseData(Patched(reply, 46, 33), DecodeError.BadValue).SetName("prefix 33: BadValue");
        yield return new TestCaseData(Patched(reply, 33, 3), DecodeError.UnknownEnumValue).SetName("reply mode 3: UnknownEnumValue");
        yield return new TestCaseData(Patched(reply, 33, (byte)VnicMode.Shared), DecodeError.BadValue).SetName("shared mode without an shm name: BadValue");
        yield return new TestCaseData(Patched(reply, 24, 67, 0), DecodeError.BadValue).SetName("MTU 67: BadValue");
        yield return new TestCaseData(Patched(reply, 16, 99, 0), DecodeError.UnknownEnumValue).SetName("attach status 99: UnknownEnumValue");
        var filter = new FilterInsert(1, new FilterSpec(FilterProtocol.Tcp, 1, 80));
        yield return new TestCaseData(Patched(filter, 20, 1), DecodeError.UnknownEnumValue).SetName("protocol ICMP: UnknownEnumValue");
        yield return new TestCaseData(Patched(filter, 21, 2), DecodeError.BadValue).SetName("has-remote 2: BadValue");
        yield return new TestCaseData(Patched(filter, 28, 0, 0), DecodeError.BadValue).SetName("local port 0: BadValue");
        yield return new TestCaseData(Patched(filter, 32, 1), DecodeError.BadValue).SetName("remote address without has-remote: BadValue");
        yield return new TestCaseData(Patched(filter, 21, 1), DecodeError.BadValue).SetName("has-remote with port 0: BadValue");
        yield return new TestCaseData(Patched(new LinkStateEvent(1, true), 20, 2), DecodeError.BadValue).SetName("link up 2: BadValue");
        yield return new TestCaseData(Patched(new MtuChangedEvent(1, 1500), 20, 0, 0), DecodeError.BadValue).SetName("MTU 0 event: BadValue");
        yield return new TestCaseData(Patched(new FilterReply(FilterStatus.Ok), 16, 7, 0), DecodeError.UnknownEnumValue).SetName("filter status 7: UnknownEnumValue");
        var handOver = new TcpHandOver(1, SampleMessages.HandOverState, 1, 2, 3);
        yield return new TestCaseData(Patched(handOver, 24, 0, 0), DecodeError.BadValue).SetName("hand-over local port 0: BadValue");
        yield return new TestCaseData(Patched(handOver, 58, 15), DecodeError.BadValue).SetName("window shift 15: BadValue");
        yield return new TestCaseData(Patched(handOver, 60, 0), DecodeError.BadValue).SetName("window shifts without window scaling: BadValue");
        yield return new TestCaseData(Patched(handOver, 61, 0), DecodeError.BadValue).SetName("a TSval without timestamps: BadValue");
        yield return new TestCaseData(Patched(handOver, 63, 2), DecodeError.BadValue).SetName("peer closed 2: BadValue");
        yield return new TestCaseData(Valid(handOver)[..^1], DecodeError.LengthMismatch).SetName("hand-over a byte short: LengthMismatch");
        yield return new TestCaseData(Patched(new TcpHandOverReply(0, ""), 19, 0x80), DecodeError.BadValue).SetName("negative errno: BadValue");
    }

    [TestCaseSource(nameof(Malformed))]
    public void A_malformed_message_is_refused_with_its_specific_error(byte[] bytes, DecodeError expected) =>
        AssertRefused(bytes, expected);

    private static void AssertRefused(byte[] bytes, DecodeError expected)
    {
        bool ok = Message.TryDecode(bytes, out var message, out var error);
        Assert.Multiple(() =>
        {
            Assert.That(ok, Is.False);
            Assert.That(message, Is.Null);
            Assert.That(error, Is.EqualTo(expected));
        });
    }

    [Test]
    public void Ten_thousand_mutations_never_throw_and_decode_only_to_errors_or_canonical_messages()
    {
        var random = new SeededRandom(0x6D6C6B);
        var originals = SampleMessages.All.Select(m => m.ToArray()).ToArray();
        int refused = 0, accepted = 0;
        for (int i = 0; i < 10_000; i++)
        {
            byte[] b = (byte[])originals[random.Next(originals.Length)].Clone();
            switch (random.Next(4))
            {
                case 0: // flip some bits
                    for (int k = 1 + random.Next(4); k > 0; k--)
                        b[random.Next(b.Length)] ^= (byte)(1 << random.Next(8));
                    break;
                case 1: // overwrite a byte
                    b[random.Next(b.Length)] = (byte)random.NextUInt64();
                    break;
                case 2: // cut short
                    b = b[..random.Next(b.Length)];
                    break;
                default: // grow by random bytes, header length fixed up half the time
                    int extra = 1 + random.Next(8);
                    b = [.. b, .. Enumerable.Range(0, extra).Select(_ => (byte)random.NextUInt64())];
                    if (random.Next(2) == 0)
                        BinaryPrimitives.WriteUInt16LittleEndian(b.AsSpan(10), (ushort)(b.Length - 16));
                    break;
            }
            Message? m = null;
            DecodeError error = DecodeError.None;
            bool ok = false;
            Assert.DoesNotThrow(() => ok = Message.TryDecode(b, out m, out error), $"mutation {i}");
            if (ok)
            {
                accepted++;
                Assert.That(error, Is.EqualTo(DecodeError.None));
                Assert.That(m!.ToArray(), Is.EqualTo(b), $"mutation {i} decoded to {m} but does not re-encode to its bytes");
            }
            else
            {
                refused++;
                Assert.That(m, Is.Null);
                Assert.That(error, Is.Not.EqualTo(DecodeError.None));
            }
        }
        Assert.That(refused, Is.GreaterThan(5_000), "most mutations break something");
        Assert.That(accepted, Is.GreaterThan(0), "some land in ids, ports and text, and stay valid");
    }

    [Test]
    public void Values_the_protocol_cannot_carry_are_refused_when_encoding()
    {
        Assert.Throws<ArgumentException>(() => new Hello(PeerRole.Client, new string('v', 65)).ToArray());
        Assert.Throws<ArgumentException>(() => new AttachRequest("", VnicMode.Shared, 1, 1, 1).ToArray());
        Assert.Throws<ArgumentException>(() => new AttachRequest("a\0b", VnicMode.Shared, 1, 1, 1).ToArray());
        Assert.Throws<ArgumentException>(() => new FilterInsert(1, new FilterSpec(FilterProtocol.Tcp, 1, 0)).ToArray());
        Assert.Throws<ArgumentException>(() => new MtuChangedEvent(1, 67).ToArray());
        var state = SampleMessages.HandOverState;
        Assert.Throws<ArgumentException>(() => new TcpHandOver(1, state with { RemotePort = 0 }, 0, 0, 0).ToArray());
        Assert.Throws<ArgumentException>(() => new TcpHandOver(1, state with { RcvWscale = 15 }, 0, 0, 0).ToArray());
        Assert.Throws<ArgumentException>(() => new TcpHandOver(1, state with { Timestamps = false }, 0, 0, 0).ToArray());
        Assert.Throws<ArgumentException>(() => new TcpHandOverReply(-1, "").ToArray());
    }
}
