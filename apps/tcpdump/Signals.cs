using System.Runtime.InteropServices;

namespace Onload.Apps.Tcpdump;

/// <summary>
/// Passes SIGINT, SIGTERM, SIGHUP and SIGQUIT on to the program instead of dying of them, so the program's stack
/// closes its capture file itself (flushing it) and its exit status becomes ours.
/// </summary>
internal static partial class Signals
{
    private static readonly PosixSignal[] Forwarded = [PosixSignal.SIGINT, PosixSignal.SIGTERM, PosixSignal.SIGHUP, PosixSignal.SIGQUIT];

    public static IDisposable ForwardTo(int pid)
    {
        var registrations = Forwarded.Select(s => PosixSignalRegistration.Create(s, context =>
        {
            context.Cancel = true;
            _ = Kill(pid, ToNative(context.Signal));
        })).ToArray();
        return new Registrations(registrations);
    }

    // PosixSignal's values are negative placeholders; kill(2) wants Linux's numbers.
    private static int ToNative(PosixSignal signal) => signal switch
    {
        PosixSignal.SIGHUP => 1,
        PosixSignal.SIGINT => 2,
        PosixSignal.SIGQUIT => 3,
        PosixSignal.SIGTERM => 15,
        _ => (int)signal,
    };

    [LibraryImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static partial int Kill(int pid, int signal);

    private sealed class Registrations(PosixSignalRegistration[] all) : IDisposable
    {
        public void Dispose()
        {
            foreach (var r in all)
                r.Dispose();
        }
    }
}
