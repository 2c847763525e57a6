using Onload.Vnic;

namespace Onload.Driverlink;

/// <summary>How a client shares an interface's queue (see issue 6).</summary>
public enum VnicMode : byte
{
    /// <summary>The daemon forwards the client's frames into the client's own shared-memory rings.</summary>
    Shared = 1,
    /// <summary>The client gets the queue's AF_XDP socket itself.</summary>
    Exclusive = 2,
}

/// <summary>The outcome of an attach.</summary>
public enum AttachStatus : ushort
{
    Ok = 0,
    NoSuchInterface = 1,
    /// <summary>The interface exists but the daemon does not accelerate it.</summary>
    NotAccelerated = 2,
    /// <summary>Beyond the configured VNICs, ring sizes, buffers or filters: refused whole, never a partial VNIC.</summary>
    NoResources = 3,
    /// <summary>Exclusive mode asked for a queue already taken.</summary>
    Busy = 4,
    NotPermitted = 5,
    InvalidRequest = 6,
}

/// <summary>An address on the interface, in host byte order (as <c>Onload.Stack.Wire.Ipv4Address.Value</c>).</summary>
public readonly record struct InterfaceAddress(uint Address, byte PrefixLength);

/// <summary>
/// Probe: asks for a VNIC on an interface. Payload: mode (1), flags (1, protocol 1.1: <see cref="Reattach"/>),
/// reserved (2), RX ring size (4), TX ring size (4), buffer count (4), interface name (string, 1 to 15 bytes,
/// IFNAMSIZ - 1), and with <see cref="Reattach"/> in shared mode the name of the rings to rejoin (string, 1 to 64
/// bytes).
/// </summary>
/// <remarks>
/// A reattach comes from a client whose daemon died while it ran: it keeps its rings (shared mode: the daemon
/// rejoins the shm endpoint <see cref="ResumeName"/>, on which the client now listens; exclusive mode: the client
/// passes its AF_XDP socket back), so its stack goes on over the same buffers, and it then inserts again the filters
/// of every port it holds.
/// </remarks>
public sealed record AttachRequest(string InterfaceName, VnicMode Mode, uint RxRingSize, uint TxRingSize, uint BufferCount) : Message
{
    public const int MaxInterfaceNameBytes = 15;
    public const int MaxResumeNameBytes = 64;

    /// <summary>The client had a VNIC on this interface from a daemon that died, and keeps its rings.</summary>
    public bool Reattach { get; init; }

    /// <summary>With <see cref="Reattach"/> in shared mode: the shm endpoint of the rings the client kept.</summary>
    public string ResumeName { get; init; } = "";

    public override MessageKind Kind => MessageKind.AttachRequest;

    private protected override void WritePayload(ref PayloadWriter w)
    {
        if (InterfaceName.Length == 0)
            throw new ArgumentException("an interface name is required", nameof(InterfaceName));
        if (Reattach && Mode == VnicMode.Shared && ResumeName.Length == 0)
            throw new ArgumentException("a shared-mode reattach names the rings it kept", nameof(ResumeName));
        w.U8((byte)Mode);
        w.U8(Reattach ? (byte)1 : (byte)0);
        w.Reserved(2);
        w.U32(RxRingSize);
        w.U32(TxRingSize);
        w.U32(BufferCount);
        w.String(InterfaceName, MaxInterfaceNameBytes, nameof(InterfaceName));
        if (Reattach && Mode == VnicMode.Shared)
            w.String(ResumeName, MaxResumeNameBytes, nameof(ResumeName));
    }

    internal static AttachRequest Read(ref PayloadReader r)
    {
        var mode = r.Enum<VnicMode>();
        bool reattach = r.Bool();
        r.Reserved(2);
        uint rx = r.U32(), tx = r.U32(), buffers = r.U32();
        string name = r.String(MaxInterfaceNameBytes);
        if (name.Length == 0)
            r.Fail(DecodeError.BadValue);
        string resume = "";
        if (reattach && mode == VnicMode.Shared)
        {
            resume = r.String(MaxResumeNameBytes);
            if (resume.Length == 0)
                r.Fail(DecodeError.BadValue);
        }
        return new AttachRequest(name, mode, rx, tx, buffers) { Reattach = reattach, ResumeName = resume };
    }
}

/// <summary>
/// The answer to <see cref="AttachRequest"/>. Payload: status (2), reserved (2), then on success VNIC id (4),
/// MTU (2), MAC (6, network order), address count (1, at most 16), mode (1), queue (2), reserved (2), default
/// gateway (4, network order, 0 for none), per address the IPv4 address (4, network order) and prefix length (1,
/// at most 32), and the shared-memory endpoint name (string, at most 64 bytes: non-empty exactly in shared mode);
/// on failure only the error text (string, at most 255 bytes). In exclusive mode the queue's AF_XDP socket travels
/// beside it as SCM_RIGHTS.
/// </summary>
public sealed record AttachReply : Message
{
    public const int MaxAddresses = 16;
    public const int MaxErrorTextBytes = 255;
    /// <summary>RFC 791: every IPv4 host handles datagrams of 68 bytes.</summary>
    public const int MinMtu = 68;

    public const int MaxShmNameBytes = 64;

    private AttachReply(AttachStatus status, uint vnicId, ushort mtu, MacAddress mac, InterfaceAddress[] addresses, string errorText,
        VnicMode mode = VnicMode.Shared, ushort queue = 0, uint gateway = 0, string shmName = "")
    {
        Mode = mode;
        Queue = queue;
        Gateway = gateway;
        ShmName = shmName;
        Status = status;
        VnicId = vnicId;
        Mtu = mtu;
        Mac = mac;
        _addresses = addresses;
        ErrorText = errorText;
    }

    private readonly InterfaceAddress[] _addresses;

    public AttachStatus Status { get; }
    public uint VnicId { get; }
    public ushort Mtu { get; }
    public MacAddress Mac { get; }
    public IReadOnlyList<InterfaceAddress> Addresses => _addresses;
    public VnicMode Mode { get; }
    /// <summary>The interface queue the VNIC serves (exclusive mode binds its AF_XDP socket to it).</summary>
    public ushort Queue { get; }
    /// <summary>The main table's default gateway on this interface (host byte order), 0 for none.</summary>
    public uint Gateway { get; }
    /// <summary>Shared mode: the <c>shm:</c> endpoint name the daemon listens on for this client's rings.</summary>
    public string ShmName { get; }
    /// <summary>Empty on success.</summary>
    public string ErrorText { get; }

    public override MessageKind Kind => MessageKind.AttachReply;

    public static AttachReply Success(uint vnicId, ushort mtu, MacAddress mac, IEnumerable<InterfaceAddress> addresses,
        VnicMode mode = VnicMode.Shared, ushort queue = 0, uint gateway = 0, string shmName = "")
    {
        ArgumentNullException.ThrowIfNull(addresses);
        ArgumentNullException.ThrowIfNull(shmName);
        return new AttachReply(AttachStatus.Ok, vnicId, mtu, mac, addresses.ToArray(), "", mode, queue, gateway, shmName);
    }

    public static AttachReply Failure(AttachStatus status, string errorText)
    {
        if (status == AttachStatus.Ok)
            throw new ArgumentException("a failure needs a status other than Ok", nameof(status));
        return new AttachReply(status, 0, 0, MacAddress.Zero, [], errorText);
    }

    public bool Equals(AttachReply? other) =>
        other is not null && base.Equals(other) && Status == other.Status && VnicId == other.VnicId && Mtu == other.Mtu &&
        Mac == other.Mac && _addresses.AsSpan().SequenceEqual(other._addresses) && ErrorText == other.ErrorText &&
        Mode == other.Mode && Queue == other.Queue && Gateway == other.Gateway && ShmName == other.ShmName;

    public override int GetHashCode() => HashCode.Combine(base.GetHashCode(), Status, VnicId, Mtu, Mac, _addresses.Length, ErrorText);

    private protected override void WritePayload(ref PayloadWriter w)
    {
        w.U16((ushort)Status);
        w.Reserved(2);
        if (Status != AttachStatus.Ok)
        {
            w.String(ErrorText, MaxErrorTextBytes, nameof(ErrorText));
            return;
        }
        if (Mtu < MinMtu)
            throw new ArgumentException($"an MTU of {Mtu} is below {MinMtu}", nameof(Mtu));
        if (_addresses.Length > MaxAddresses)
            throw new ArgumentException($"{_addresses.Length} addresses; the protocol carries at most {MaxAddresses}", nameof(Addresses));
        w.U32(VnicId);
        w.U16(Mtu);
        w.Mac(Mac);
        w.U8((byte)_addresses.Length);
        w.U8((byte)Mode);
        w.U16(Queue);
        w.Reserved(2);
        w.Ipv4(Gateway);
        foreach (var a in _addresses)
        {
            if (a.PrefixLength > 32)
                throw new ArgumentException($"a prefix length of {a.PrefixLength}", nameof(Addresses));
            w.Ipv4(a.Address);
            w.U8(a.PrefixLength);
        }
        if ((Mode == VnicMode.Shared) != (ShmName.Length > 0))
            throw new ArgumentException("a shared-mode VNIC names its shm endpoint, an exclusive one does not", nameof(ShmName));
        w.String(ShmName, MaxShmNameBytes, nameof(ShmName));
    }

    internal static AttachReply Read(ref PayloadReader r)
    {
        var status = r.Enum<AttachStatus>();
        r.Reserved(2);
        if (status != AttachStatus.Ok)
            return new AttachReply(status, 0, 0, MacAddress.Zero, [], r.String(MaxErrorTextBytes));
        uint vnicId = r.U32();
        ushort mtu = r.U16();
        if (mtu < MinMtu)
            r.Fail(DecodeError.BadValue);
        var mac = r.Mac();
        int count = r.U8();
        var mode = r.Enum<VnicMode>();
        ushort queue = r.U16();
        r.Reserved(2);
        uint gateway = r.Ipv4();
        if (count > MaxAddresses)
        {
            r.Fail(DecodeError.BadValue);
            count = 0;
        }
        var addresses = new InterfaceAddress[count];
        for (int i = 0; i < count; i++)
        {
            uint address = r.Ipv4();
            byte prefix = r.U8();
            if (prefix > 32)
                r.Fail(DecodeError.BadValue);
            addresses[i] = new InterfaceAddress(address, prefix);
        }
        string shmName = r.String(MaxShmNameBytes);
        if ((mode == VnicMode.Shared) != (shmName.Length > 0))
            r.Fail(DecodeError.BadValue);
        return new AttachReply(AttachStatus.Ok, vnicId, mtu, mac, addresses, "", mode, queue, gateway, shmName);
    }
}

/// <summary>Remove, asked by the client: gives back a VNIC and its filters. Payload: VNIC id (4). No reply.</summary>
public sealed record Detach(uint VnicId) : Message
{
    public override MessageKind Kind => MessageKind.Detach;

    private protected override void WritePayload(ref PayloadWriter w) => w.U32(VnicId);

    internal static Detach Read(ref PayloadReader r) => new(r.U32());
}
