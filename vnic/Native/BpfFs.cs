namespace Onload.Vnic.Native;

/// <summary>
/// The BPF filesystem that pinned objects live on (fs/bpf/inode.c): a pin is a file there that keeps
/// a map, program or link alive with no fd open, and that another process opens with BPF_OBJ_GET.
/// </summary>
internal static unsafe class BpfFs
{
    /// <summary>Where distributions mount it (systemd does at boot; a bare VM may not have it).</summary>
    public const string MountPoint = "/sys/fs/bpf";

    /// <summary>
    /// Mounts a bpffs at <see cref="MountPoint"/> unless statfs finds one there (f_type BPF_FS_MAGIC), like
    /// <c>mount -t bpf bpf /sys/fs/bpf</c>. Needs CAP_SYS_ADMIN; throws <see cref="IOException"/> naming the call.
    /// </summary>
    public static void EnsureMounted(string spec)
    {
        byte[] target = Bpf.CString(MountPoint);
        // struct statfs is 120 bytes on x86-64 and arm64 (glibc); f_type, a long, comes first.
        ulong* buf = stackalloc ulong[32];
        fixed (byte* t = target)
        {
            if (Libc.StatFs(t, buf) != 0)
                throw OpenFailure.Call(spec, $"statfs({MountPoint})", Errno.Last);
            if ((uint)buf[0] == Bpf.BPF_FS_MAGIC)
                return;
            byte[] bpf = Bpf.CString("bpf");
            fixed (byte* b = bpf)
            {
                if (Libc.Mount(b, t, b, 0, null) != 0)
                    throw OpenFailure.Call(spec, $"mount(\"bpf\", \"{MountPoint}\", \"bpf\") (no bpffs mounted there)", Errno.Last);
            }
        }
    }

    /// <summary>Removes a pin; one that is not there is no error.</summary>
    public static void Unpin(string path)
    {
        try
        {
            File.Delete(path);
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }
    }
}
