using Onload.Stack.Wire;

namespace Onload.Stack.Tcp;

/// <summary>
/// What another TCP implementation needs to carry on a connection from where this stack leaves it (the kernel,
/// through TCP_REPAIR): the sequence and window state, the options negotiated, and how many bytes of each queue
/// follow. Windows are in bytes, unscaled. <see cref="RcvNxt"/> never counts a received FIN: that is
/// <see cref="PeerClosed"/>.
/// </summary>
public readonly record struct TcpHandOverState(
    Ipv4Endpoint Local,
    Ipv4Endpoint Remote,
    uint SndUna,
    uint RcvNxt,
    uint SndWnd,
    uint SndWl1,
    uint RcvWnd,
    ushort Mss,
    bool WindowScaling,
    byte SndWscale,
    byte RcvWscale,
    bool Timestamps,
    uint TsVal,
    bool Sack,
    bool PeerClosed,
    int SentLength,
    int UnsentLength,
    int ReceivedLength);
