using Onload.Driverlink;
using Onload.Vnic;

namespace Onload.Tests.Driverlink;

/// <summary>One valid message of every kind, with every optional part both present and absent.</summary>
internal static class SampleMessages
{
    /// <summary>A connection with every option negotiated, its fields all distinct.</summary>
    public static readonly TcpRepairState HandOverState = new(0x0A000001, 8080, 0x0A000002, 40000,
        SndUna: 0xFFFF_FF00, RcvNxt: 0x1234_5678, SndWnd: 64_240, SndWl1: 0x1234_0000, RcvWnd: 65_535, MaxWindow: 131_072,
        Mss: 1448, WindowScaling: true, SndWscale: 7, RcvWscale: 14, Timestamps: true, TsVal: 0xDEAD_BEEE, Sack: true,
        PeerClosed: false);

    public static readonly Message[] All =
    [
        new Hello(PeerRole.Client, "onload 0.6.0") { RequestId = 1 },
        new Hello(PeerRole.Daemon, "onload-driverd 0.6.0 (é)") { RequestId = 1 },
        new AttachRequest("veth0", VnicMode.Shared, 512, 512, 4096) { RequestId = 2 },
        new AttachRequest("enp1s0f0np0abcd", VnicMode.Exclusive, 2048, 1024, 8192) { RequestId = 3 },
        new AttachRequest("veth0", VnicMode.Shared, 512, 512, 4096) { RequestId = 4, Reattach = true, ResumeName = "driverd-1234-5-0123456789abcdef" },
        new AttachRequest("veth0", VnicMode.Exclusive, 512, 512, 4096) { RequestId = 5, Reattach = true },
        AttachReply.Success(7, 1500, MacAddress.Parse("02:00:00:00:00:01"),
            [new InterfaceAddress(0x0A000001, 24), new InterfaceAddress(0xC0A80102, 32)], VnicMode.Shared, 0, 0x0A0000FE,
            "driverd-1234-7-0123456789abcdef") with { RequestId = 2 },
        AttachReply.Success(8, 9000, MacAddress.Parse("0e:11:22:33:44:55"), [], VnicMode.Exclusive, 3) with { RequestId = 4 },
        AttachReply.Failure(AttachStatus.NoResources, "no VNIC left: 8 of 8 in use (--max-vnics)") with { RequestId = 3 },
        new Detach(7) { RequestId = 5 },
        new FilterInsert(7, new FilterSpec(FilterProtocol.Tcp, 0x0A000001, 8080)) { RequestId = 6 },
        new FilterInsert(7, new FilterSpec(FilterProtocol.Udp, 0, 53, new FilterRemote(0x0A000002, 40000))) { RequestId = 7 },
        new FilterRemove(7, new FilterSpec(FilterProtocol.Tcp, 0x0A000001, 8080, new FilterRemote(0x0A000002, 1))) { RequestId = 8 },
        new FilterReply(FilterStatus.Ok) { RequestId = 6 },
        new FilterReply(FilterStatus.Conflict) { RequestId = 7 },
        new LinkStateEvent(7, false),
        new LinkStateEvent(7, true),
        new MtuChangedEvent(7, 1280),
        new SuspendEvent(7),
        new ResumeEvent(7),
        new Suspended(7) { RequestId = 0 },
        new RemoveEvent(7),
        new ResolveNeighbour(7, 0x0A000002),
        new NeighbourEvent(7, 0x0A000002, MacAddress.Parse("02:00:00:00:00:02"), true),
        new NeighbourEvent(7, 0x0A000002, MacAddress.Zero, false),
        new TcpHandOver(7, HandOverState, 1448, 70_000, 3) { RequestId = 9 },
        new TcpHandOver(7, HandOverState with { WindowScaling = false, SndWscale = 0, RcvWscale = 0, Timestamps = false, TsVal = 0,
            Sack = false, PeerClosed = true }, 0, 0, 0) { RequestId = 10 },
        new TcpHandOverReply(0, "") { RequestId = 9 },
        new TcpHandOverReply(1, "VNIC 7 holds no TCP filter for local port 8080") { RequestId = 10 },
    ];

}
