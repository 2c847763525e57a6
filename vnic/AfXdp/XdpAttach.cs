using System.Diagnostics;
using System.Text;
using Onload.Vnic.Native;

namespace Onload.Vnic.AfXdp;

/// <summary>
/// Loading an XDP program and attaching it to an interface through a bpf_link: the steps the direct-mode VNIC
/// (<see cref="AfXdpVnic"/>) and the filter-mode steering (<see cref="XdpFilterSteering"/>) share. Failures are
/// <see cref="IOException"/>s whose message starts with <c>spec</c> and names the call and errno.
/// </summary>
internal static class XdpAttach
{
    /// <summary>How long an attach that finds the interface's XDP hook taken is retried: the previous owner's link
    /// is released shortly after its process dies (MACHINE-NOTES.md).</summary>
    public static readonly TimeSpan BusyRetry = TimeSpan.FromSeconds(1);

    /// <summary>BPF_PROG_LOAD; on failure, loads again with the verifier's log (libbpf does the same) so the
    /// exception says which instruction it refused and why. Returns the program fd.</summary>
    public static int LoadProgram(string spec, BpfInsn[] insns, string name)
    {
        int prog = Bpf.ProgLoadXdp(insns, XdpProgramParts.License, name, default);
        if (prog >= 0)
            return prog;
        int err = -prog;
        var log = new byte[1 << 20];
        int again = Bpf.ProgLoadXdp(insns, XdpProgramParts.License, name, log);
        if (again >= 0)
            return again;
        int end = Array.IndexOf(log, (byte)0);
        string text = Encoding.ASCII.GetString(log, 0, end < 0 ? log.Length : end).Trim();
        if (text.Length > 8000)
            text = "..." + text[^8000..];
        throw Failure(spec, "bpf(BPF_PROG_LOAD, XDP)", err, text.Length > 0 ? "; verifier log:\n" + text : "");
    }

    /// <summary>
    /// Attaches <paramref name="prog"/> through a bpf_link (BPF_LINK_CREATE): it goes away when the last reference
    /// to the link goes (its fds, a pin), including when the process dies. Native (driver) mode first, else generic
    /// (skb) mode. An interface whose XDP slot is taken (EBUSY, EEXIST) is retried for <see cref="BusyRetry"/>, for
    /// an owner that is dying (each sleep counted in <paramref name="busyRetries"/>), then refused.
    /// </summary>
    /// <returns>The link fd.</returns>
    public static int Attach(string spec, string ifName, int ifIndex, int prog, ref int busyRetries, out bool nativeXdp)
    {
        var clock = Stopwatch.StartNew();
        while (true)
        {
            int rc = Bpf.LinkCreateXdp(prog, ifIndex, Bpf.XDP_FLAGS_DRV_MODE);
            if (rc >= 0)
            {
                nativeXdp = true;
                return rc;
            }
            int drvErr = -rc;
            int skbErr = drvErr;
            if (!IsTaken(drvErr))
            {
                rc = Bpf.LinkCreateXdp(prog, ifIndex, Bpf.XDP_FLAGS_SKB_MODE);
                if (rc >= 0)
                {
                    nativeXdp = false;
                    return rc;
                }
                skbErr = -rc;
            }
            if (IsTaken(skbErr) && clock.Elapsed < BusyRetry)
            {
                busyRetries++;
                Thread.Sleep(10);
                continue;
            }
            if (IsTaken(skbErr))
                throw OpenFailure.Message(spec,
                    $"{ifName} already has an XDP program attached by someone else ({Errno.Describe(skbErr)}): an af_xdp VNIC " +
                    $"needs the interface's XDP hook to itself. Stop the process that holds it (another af_xdp stack), or " +
                    $"detach a program attached with ip link: 'ip link set dev {ifName} xdp off'", skbErr);
            throw skbErr is Errno.EPERM or Errno.EACCES
                ? OpenFailure.Message(spec, $"attaching an XDP program needs CAP_NET_ADMIN and CAP_BPF (run as root): {Errno.Describe(skbErr)}", skbErr)
                : OpenFailure.Call(spec, $"bpf(BPF_LINK_CREATE, BPF_XDP) (driver mode: {Errno.Describe(drvErr)}; skb mode)", skbErr);
        }

        static bool IsTaken(int e) => e is Errno.EBUSY or Errno.EEXIST;
    }

    /// <summary>A failed bpf(2) call; EPERM and EACCES with no verifier log explained as missing capabilities.</summary>
    public static IOException Failure(string spec, string call, int err, string detail = "") => err switch
    {
        Errno.EPERM or Errno.EACCES when detail.Length == 0 => OpenFailure.Message(spec,
            $"{call} failed: {Errno.Describe(err)}: BPF needs CAP_BPF and CAP_NET_ADMIN (run as root)", err),
        _ => OpenFailure.Message(spec, $"{call} failed: {Errno.Describe(err)}{detail}", err),
    };

    public static void CloseFd(ref int fd)
    {
        if (fd >= 0)
            Libc.Close(fd);
        fd = -1;
    }
}
