using System.Runtime.InteropServices;
using Onload.Vnic.Native;
using static Onload.Vnic.Native.LinuxConstants;

namespace Onload.Vnic.Tap;

/// <summary>
/// The <c>tap:NAME</c> backend: a TAP interface (Documentation/networking/tuntap.rst) of which the stack is the
/// wire side. Frames the kernel sends out of the tap are read here; frames written here arrive at the kernel as if
/// received on the tap. One read or write system call per frame, straight into or out of a pool buffer.
/// </summary>
/// <remarks>
/// The stack needs its own MAC, distinct from the tap interface's: the kernel owns the tap's address and would
/// otherwise see the stack's frames as coming from itself. A tap this open created (it did not exist before) is
/// not persistent and disappears when the file descriptor closes.
/// </remarks>
public sealed unsafe class TapVnic : IVnic
{
    // uapi/linux/if_tun.h
    private const nuint TUNSETIFF = 0x400454ca; // _IOW('T', 202, int)
    private const short IFF_TAP = 0x0002;
    private const short IFF_NO_PI = 0x1000;

    private int _fd;
    /// <summary>Where frames go that find the pool empty: read them to drop them, as a NIC would.</summary>
    private byte* _scratch;
    private readonly int _maxFrame;

    private TapVnic(string spec, string name, int fd, MacAddress mac, MacAddress tapMac, int mtu, BufferPool buffers, bool created)
    {
        Spec = spec;
        InterfaceName = name;
        _fd = fd;
        MacAddress = mac;
        InterfaceMacAddress = tapMac;
        Mtu = mtu;
        Buffers = buffers;
        Created = created;
        _maxFrame = mtu + ETH_HLEN;
        _scratch = (byte*)NativeMemory.Alloc((nuint)buffers.BufferSize);
    }

    public string Spec { get; }
    public MacAddress MacAddress { get; }
    public int Mtu { get; }
    public BufferPool Buffers { get; }
    public VnicCounters Counters { get; } = new();
    public int WaitHandle => _fd;

    /// <summary>The tap interface's name as the kernel has it.</summary>
    public string InterfaceName { get; }

    /// <summary>The kernel side's MAC: the tap interface's own hardware address.</summary>
    public MacAddress InterfaceMacAddress { get; }

    /// <summary>True when this open created the interface (it goes away on Dispose).</summary>
    public bool Created { get; }

    /// <summary>
    /// Attaches to tap <paramref name="name"/> of the calling thread's network namespace, creating it if missing,
    /// and brings it up.
    /// </summary>
    public static TapVnic Open(string name, VnicOptions options)
    {
        ArgumentNullException.ThrowIfNull(name);
        ArgumentNullException.ThrowIfNull(options);
        string spec = "tap:" + name;
        NetInterface.CheckName(spec, name, nameof(name));
        if (options.MacAddress is { } wanted && (wanted.IsGroup || wanted == MacAddress.Zero))
            throw new ArgumentException($"{spec}: MAC {wanted} is not a unicast address", nameof(options));

        bool existed = NetInterface.Exists(name);
        int fd = OpenTunDevice(spec);
        int ctl = -1;
        BufferPool? pool = null;
        try
        {
            var ifr = IfReq.ForName(name);
            ifr.Flags = IFF_TAP | IFF_NO_PI;
            if (Libc.Ioctl(fd, TUNSETIFF, &ifr) != 0)
            {
                int e = Errno.Last;
                throw e switch
                {
                    Errno.EPERM or Errno.EACCES => OpenFailure.Message(spec,
                        $"ioctl(TUNSETIFF) needs CAP_NET_ADMIN (run as root): {Errno.Describe(e)}", e),
                    Errno.EBUSY => OpenFailure.Message(spec, $"the tap is already attached to another file: {Errno.Describe(e)}", e),
                    Errno.EINVAL => OpenFailure.Message(spec, $"an interface of that name exists and is not a tap: {Errno.Describe(e)}", e),
                    _ => OpenFailure.Call(spec, "ioctl(TUNSETIFF, IFF_TAP | IFF_NO_PI)", e),
                };
            }
            string actual = ifr.NameString();

            // Interface ioctls want a socket; any of this namespace does.
            ctl = NetInterface.OpenControlSocket(spec);
            int err = InterfaceIoctl.BringUp(ctl, actual);
            if (err != 0)
                throw OpenFailure.Call(spec, "bringing the tap up (ioctl SIOCSIFFLAGS IFF_UP)", err);
            var (mtu, tapMac, _) = NetInterface.ReadLink(spec, ctl, actual);

            var mac = options.MacAddress ?? DrawMac(tapMac);
            if (mac == tapMac)
                throw OpenFailure.Message(spec, $"MAC {mac} is the tap interface's own; the stack needs a different one");

            int bufferSize = Math.Max(BufferPool.DefaultBufferSize, (mtu + ETH_HLEN + VLAN_HLEN + 63) & ~63);
            pool = new BufferPool(options.BufferCount, bufferSize);
            return new TapVnic(spec, actual, fd, mac, tapMac, mtu, pool, created: !existed);
        }
        catch
        {
            Libc.Close(fd);
            pool?.Dispose();
            throw;
        }
        finally
        {
            if (ctl >= 0)
                Libc.Close(ctl);
        }
    }

    /// <summary>Reads frames until the tap has no more (EAGAIN) or the batch is full.</summary>
    /// <remarks>
    /// Each read goes straight into a freshly allocated buffer; the read that finds nothing gives its buffer back.
    /// That costs a pop and a push on the free stack per idle poll and keeps the pool's count exact: an idle VNIC
    /// holds no buffer.
    /// </remarks>
    public int Receive(Span<PacketDescriptor> batch)
    {
        ObjectDisposedException.ThrowIf(_fd < 0, this);
        int n = 0;
        int bufferSize = Buffers.BufferSize;
        while (n < batch.Length)
        {
            bool haveBuffer = Buffers.TryAllocate(out int buffer);
            byte* target = haveBuffer ? Buffers.Pointer(buffer) : _scratch;
            nint r = Libc.Read(_fd, target, (nuint)bufferSize);
            if (r <= 0 || r > bufferSize || !haveBuffer)
            {
                if (haveBuffer)
                    Buffers.Release(buffer);
                if (r < 0 && Errno.Last == Errno.EINTR)
                    continue;
                // EAGAIN: nothing more queued; another error (the tap went away) or 0: nothing to read either.
                if (r <= 0)
                    break;
                if (r > bufferSize)
                    Counters.RxDropTooLong++; // tun_put_user returns the full length even when the buffer was shorter
                else
                    Counters.RxDropNoBuffer++; // read into scratch to drop it, as a NIC with no buffer would
                continue;
            }
            // Without IFF_VNET_HDR the tap offers no checksum offload, so the kernel completed the checksums.
            batch[n++] = new PacketDescriptor(buffer, (int)r);
            Counters.RxFrames++;
            Counters.RxBytes += r;
        }
        return n;
    }

    /// <summary>Writes each frame to the tap and releases its buffer; stops at EAGAIN (frames left with the caller).</summary>
    public int Transmit(ReadOnlySpan<PacketDescriptor> batch)
    {
        ObjectDisposedException.ThrowIf(_fd < 0, this);
        int accepted = 0;
        while (accepted < batch.Length)
        {
            ref readonly var d = ref batch[accepted];
            if (d.Length < ETH_HLEN || d.Length > _maxFrame)
            {
                Counters.TxErrors++;
                Buffers.Release(d.Buffer);
                accepted++;
                continue;
            }
            nint r = Libc.Write(_fd, Buffers.Pointer(d.Buffer), (nuint)d.Length);
            if (r < 0)
            {
                int e = Errno.Last;
                if (e == Errno.EINTR)
                    continue;
                if (e == Errno.EAGAIN)
                {
                    Counters.TxDropRingFull += batch.Length - accepted;
                    break;
                }
                Counters.TxErrors++;
            }
            else
            {
                Counters.TxFrames++;
                Counters.TxBytes += d.Length;
            }
            Buffers.Release(d.Buffer);
            accepted++;
        }
        return accepted;
    }

    public void Dispose()
    {
        if (_fd < 0)
            return;
        Libc.Close(_fd);
        _fd = -1;
        NativeMemory.Free(_scratch);
        _scratch = null;
        Buffers.Dispose();
    }

    private static int OpenTunDevice(string spec)
    {
        ReadOnlySpan<byte> path = "/dev/net/tun\0"u8;
        int fd;
        fixed (byte* p = path)
            fd = Libc.Open(p, O_RDWR | O_NONBLOCK | O_CLOEXEC, 0);
        if (fd >= 0)
            return fd;
        int e = Errno.Last;
        throw e switch
        {
            Errno.ENOENT or Errno.ENODEV or Errno.ENXIO => OpenFailure.Message(spec,
                $"/dev/net/tun is missing (no TUN/TAP in this kernel or container): {Errno.Describe(e)}", e),
            Errno.EPERM or Errno.EACCES => OpenFailure.Message(spec,
                $"opening /dev/net/tun needs root: {Errno.Describe(e)}", e),
            _ => OpenFailure.Call(spec, "open(/dev/net/tun)", e),
        };
    }

    private static MacAddress DrawMac(MacAddress avoid)
    {
        while (true)
        {
            var mac = MacAddress.LocallyAdministered(SystemRandom.Instance.NextUInt64());
            if (mac != avoid && mac != MacAddress.Zero)
                return mac;
        }
    }
}
