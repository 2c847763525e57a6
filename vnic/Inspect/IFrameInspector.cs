namespace Onload.Vnic.Inspect;

/// <summary>Which way a frame is going through the VNIC.</summary>
public enum FrameDirection
{
    /// <summary>From the wire to the stack, seen after the backend's Receive.</summary>
    Receive,

    /// <summary>From the stack to the wire, seen before the backend's Transmit.</summary>
    Transmit,
}

/// <summary>What an inspector decides about one frame.</summary>
public enum FrameVerdict
{
    Pass,

    /// <summary>The frame goes no further: its buffer returns to the pool, and inspectors after this one do not see it.</summary>
    Drop,
}

/// <summary>
/// Sees every frame on one or both data paths of an <see cref="InspectedVnic"/> and may veto it.
/// </summary>
/// <remarks>
/// Runs on the stack's thread, on the hot path: an implementation must not block and should not allocate. The frame
/// is only valid during the call (its buffer is the stack's or the backend's once the call returns).
/// <paramref name="timestampNs"/> in <see cref="Inspect"/> is the VNIC's clock (monotonic nanoseconds), read once per batch.
/// </remarks>
public interface IFrameInspector
{
    FrameVerdict Inspect(FrameDirection direction, ReadOnlySpan<byte> frame, long timestampNs);
}
