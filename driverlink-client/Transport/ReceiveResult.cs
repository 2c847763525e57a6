namespace Onload.Driverlink;

public enum ReceiveStatus
{
    /// <summary>A whole message arrived.</summary>
    Ok,
    /// <summary>The peer closed the connection (a zero-length read on SOCK_SEQPACKET).</summary>
    PeerClosed,
    /// <summary>Non-blocking receive and nothing waiting.</summary>
    WouldBlock,
    /// <summary>The message was longer than the buffer; the rest was discarded by the kernel.</summary>
    MessageTruncated,
    /// <summary>More descriptors came than the span held; the kernel closed the extra ones.</summary>
    DescriptorsTruncated,
    /// <summary>The message arrived whole but did not decode; <see cref="ReceiveResult.DecodeError"/> says why.</summary>
    Malformed,
    /// <summary>recvmsg failed; <see cref="ReceiveResult.Errno"/> says why.</summary>
    Error,
}

/// <summary>
/// What one receive got. Whatever the status, the first <see cref="DescriptorCount"/> entries of the caller's
/// descriptor span are open descriptors that the caller now owns and must close (or hand on).
/// </summary>
public readonly record struct ReceiveResult(ReceiveStatus Status, int Length, int DescriptorCount, int Errno, DecodeError DecodeError = DecodeError.None);
