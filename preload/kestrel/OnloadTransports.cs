using Onload.Sockets;

namespace Onload.Kestrel;

/// <summary>Makes the user-level stack that <see cref="OnloadTransportOptions"/> describe.</summary>
internal static class OnloadTransports
{
    public static ValueTask<ITransport> OpenAsync(OnloadTransportOptions options, CancellationToken cancellationToken)
    {
        _ = cancellationToken;
        throw new NotSupportedException("the user-level stack's managed API (OnloadStack) is not built yet: pass a Transport");
    }
}
