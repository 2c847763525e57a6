namespace Onload.Driverlink;

/// <summary>The message kinds (header bytes 6-7). Requests and replies below 32, daemon-initiated events from 32.</summary>
public enum MessageKind : ushort
{
    /// <summary>Both ways, first on a connection. Its number and layout never change, whatever the version.</summary>
    Hello = 1,
    AttachRequest = 2,
    AttachReply = 3,
    Detach = 4,
    FilterInsert = 5,
    FilterRemove = 6,
    FilterReply = 7,
    ResolveNeighbour = 8,
    Suspended = 9,
    TcpHandOver = 10,
    TcpHandOverReply = 11,

    LinkState = 32,
    MtuChanged = 33,
    Suspend = 34,
    Resume = 35,
    Remove = 36,
    Neighbour = 37,
}

/// <summary>Header flags (bytes 8-9). Version 1.0 defines none: every bit must be zero.</summary>
[Flags]
public enum MessageFlags : ushort
{
    None = 0,
}
