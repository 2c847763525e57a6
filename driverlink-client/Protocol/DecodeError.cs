namespace Onload.Driverlink;

/// <summary>Why a received message was refused. Decoding reports one of these and never throws.</summary>
public enum DecodeError
{
    None = 0,
    /// <summary>Shorter than the header, or the payload ends inside a field.</summary>
    Truncated,
    /// <summary>The first four bytes are not "ODLK".</summary>
    BadMagic,
    /// <summary>Longer than <see cref="MessageHeader.MaxMessageLength"/>, or the header claims so.</summary>
    Oversized,
    /// <summary>The header's payload length differs from the bytes that followed it.</summary>
    LengthMismatch,
    /// <summary>A major protocol version other than ours on anything but Hello.</summary>
    UnsupportedVersion,
    UnknownKind,
    /// <summary>A flag bit this version does not define.</summary>
    UnknownFlags,
    /// <summary>The payload's fields end before the payload does.</summary>
    TrailingBytes,
    /// <summary>A string that is not well-formed UTF-8.</summary>
    InvalidUtf8,
    /// <summary>A string longer than its field allows.</summary>
    StringTooLong,
    /// <summary>A string holding a NUL (strings end up in C APIs, where a NUL would cut them short).</summary>
    StringHasNul,
    /// <summary>An enumerated field (mode, protocol, role, status) with a value this version does not define.</summary>
    UnknownEnumValue,
    /// <summary>A field outside its range: reserved bytes not zero, a boolean not 0 or 1, a port of 0, ...</summary>
    BadValue,
}
