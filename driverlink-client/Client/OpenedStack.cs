using Onload.Stack;
using Onload.Vnic;
using Onload.Vnic.Inspect;

namespace Onload.Driverlink;

/// <summary>
/// A stack made ready to run: in direct mode over a VNIC opened from its spec, or in driverlink mode over the VNIC
/// that onload-driverd hands out for an interface; either way with ONLOAD_CAPTURE and ONLOAD_VETO applied to the
/// VNIC. The programs (onload-echo, onload-pingpong) and the managed API (Onload.Sockets) all open their stacks here.
/// Dispose closes the stack, the VNIC, the capture (flushing last) and the driverlink session, in that order.
/// </summary>
public sealed class OpenedStack : IDisposable
{
    private readonly IDisposable? _capture;
    private bool _disposed;

    private OpenedStack(DriverlinkSession? session, IVnic vnic, IDisposable? capture, NetStack stack)
    {
        Session = session;
        Vnic = vnic;
        _capture = capture;
        Stack = stack;
    }

    /// <summary>The driverlink session (driverlink mode), or null (direct mode).</summary>
    public DriverlinkSession? Session { get; }

    /// <summary>The VNIC the stack polls (wrapped by the inspectors when ONLOAD_CAPTURE or ONLOAD_VETO is set).</summary>
    public IVnic Vnic { get; }

    public NetStack Stack { get; }

    /// <summary>
    /// Direct mode: the stack owns <paramref name="options"/>' address, which the kernel does not hold, on the VNIC
    /// <paramref name="vnicSpec"/> (KIND:NAME). Throws ArgumentException for bad options or spec, FormatException for
    /// bad ONLOAD_CAPTURE/ONLOAD_VETO settings, IOException (and UnauthorizedAccessException, InvalidOperationException)
    /// when the VNIC cannot be opened.
    /// </summary>
    public static OpenedStack Direct(string vnicSpec, StackOptions options)
    {
        ArgumentNullException.ThrowIfNull(vnicSpec);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        var vnic = VnicFactory.Open(vnicSpec, new VnicOptions { LocalIpv4 = options.Address.Address.Value });
        return Finish(null, vnic, options);
    }

    /// <summary>
    /// Driverlink mode: attaches to <paramref name="interfaceName"/> through onload-driverd (started if none answers)
    /// and runs the stack on the kernel's address, gateway and neighbours; <paramref name="template"/> gives every
    /// other option (its Address is replaced); <paramref name="client"/> names the daemon (tests run their own).
    /// Throws IOException when the daemon refuses or cannot be reached.
    /// </summary>
    public static OpenedStack Driverlink(string interfaceName, VnicMode mode, StackOptions? template = null, DriverlinkClientOptions? client = null)
    {
        ArgumentNullException.ThrowIfNull(interfaceName);
        // The session's connection mirror has a record per TCP row of the stack.
        var session = DriverlinkSession.Open(interfaceName, mode, client,
            tcpConnections: template?.TcpConnections ?? DriverlinkSession.DefaultTcpConnections);
        try
        {
            var options = session.StackOptions(template);
            options.Validate();
            return Finish(session, session.Vnic, options);
        }
        catch
        {
            session.Dispose();
            throw;
        }
    }

    private static OpenedStack Finish(DriverlinkSession? session, IVnic vnic, StackOptions options)
    {
        IDisposable? capture = null;
        try
        {
            vnic = InspectionSettings.Apply(vnic, out capture);
            return new OpenedStack(session, vnic, capture, new NetStack(vnic, options));
        }
        catch
        {
            // The session owns its VNIC and closes it; a direct-mode VNIC is ours to close.
            if (session is null)
                vnic.Dispose();
            capture?.Dispose();
            throw;
        }
    }

    public void Dispose()
    {
        if (_disposed)
            return;
        _disposed = true;
        Stack.Dispose();
        Vnic.Dispose();
        _capture?.Dispose();
        Session?.Dispose();
    }
}
