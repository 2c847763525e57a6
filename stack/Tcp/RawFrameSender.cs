using System.Runtime.InteropServices;
using System.Text;

namespace Onload.Stack.Tcp;

/// <summary>
/// Sends whole Ethernet frames on one interface through an AF_PACKET SOCK_RAW socket: how the daemon puts the
/// frames of <see cref="OrphanCloser.BuildFrame"/> on the wire in every mode (the frames bypass the kernel's TCP,
/// which has no socket for them). Needs CAP_NET_RAW in the interface's network namespace. The socket is opened
/// with protocol 0, so it receives nothing.
/// </summary>
public sealed unsafe partial class RawFrameSender : IDisposable
{
    private const int AfPacket = 17;
    private const int SockRaw = 3;
    private const int SockCloexec = 0x80000;
    private int _fd;

    /// <summary>Opens the socket and binds it to <paramref name="interfaceName"/>.</summary>
    /// <exception cref="IOException">No such interface, or the socket could not be opened (errno in the
    /// message, EPERM without CAP_NET_RAW).</exception>
    public RawFrameSender(string interfaceName)
    {
        ArgumentNullException.ThrowIfNull(interfaceName);
        Span<byte> name = stackalloc byte[Encoding.ASCII.GetByteCount(interfaceName) + 1];
        name.Clear();
        Encoding.ASCII.GetBytes(interfaceName, name);
        uint index;
        fixed (byte* p = name)
            index = IfNameToIndex(p);
        if (index == 0)
            throw new IOException($"{interfaceName}: no such interface (errno {Marshal.GetLastPInvokeError()})");
        _fd = Socket(AfPacket, SockRaw | SockCloexec, 0);
        if (_fd < 0)
            throw new IOException($"AF_PACKET socket: errno {Marshal.GetLastPInvokeError()}");
        var sll = default(SockaddrLl);
        sll.Family = AfPacket;
        sll.IfIndex = (int)index;
        if (Bind(_fd, &sll, (uint)sizeof(SockaddrLl)) != 0)
        {
            int errno = Marshal.GetLastPInvokeError();
            Dispose();
            throw new IOException($"{interfaceName}: bind AF_PACKET: errno {errno}");
        }
        InterfaceIndex = (int)index;
    }

    public int InterfaceIndex { get; }

    /// <summary>Sends one frame as it is (Ethernet header included). Returns 0, or the errno of a failed send.</summary>
    public int Send(ReadOnlySpan<byte> frame)
    {
        ObjectDisposedException.ThrowIf(_fd < 0, this);
        fixed (byte* p = frame)
        {
            nint n = SendTo(_fd, p, (nuint)frame.Length, 0, null, 0);
            return n == frame.Length ? 0 : n < 0 ? Marshal.GetLastPInvokeError() : 5; // EIO for a short send
        }
    }

    public void Dispose()
    {
        if (_fd >= 0)
            Close(_fd);
        _fd = -1;
    }

    /// <summary><c>struct sockaddr_ll</c>.</summary>
    [StructLayout(LayoutKind.Sequential)]
    private struct SockaddrLl
    {
        public ushort Family;
        public ushort Protocol;
        public int IfIndex;
        public ushort HaType;
        public byte PktType;
        public byte HaLen;
        public fixed byte Addr[8];
    }

    [LibraryImport("libc", EntryPoint = "socket", SetLastError = true)]
    private static partial int Socket(int domain, int type, int protocol);

    [LibraryImport("libc", EntryPoint = "bind", SetLastError = true)]
    private static partial int Bind(int fd, void* addr, uint addrlen);

    [LibraryImport("libc", EntryPoint = "sendto", SetLastError = true)]
    private static partial nint SendTo(int fd, void* buf, nuint len, int flags, void* destAddr, uint addrlen);

    [LibraryImport("libc", EntryPoint = "close", SetLastError = true)]
    private static partial int Close(int fd);

    [LibraryImport("libc", EntryPoint = "if_nametoindex", SetLastError = true)]
    private static partial uint IfNameToIndex(byte* ifname);
}
