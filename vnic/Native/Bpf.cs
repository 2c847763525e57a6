using System.Runtime.InteropServices;

namespace Onload.Vnic.Native;

/// <summary>
/// The bpf(2) commands the AF_XDP backend uses, with the <c>union bpf_attr</c> variant of each as its own struct
/// (include/uapi/linux/bpf.h; offsets checked against the C header with offsetof). The kernel takes an attr shorter
/// than its own and treats the missing tail as zero, so each variant ends at its last field we set.
/// </summary>
/// <remarks>Every call returns a new fd or 0 on success and a negated errno on failure.</remarks>
internal static unsafe class Bpf
{
    // enum bpf_cmd.
    public const int BPF_MAP_CREATE = 0;
    public const int BPF_MAP_UPDATE_ELEM = 2;
    public const int BPF_MAP_DELETE_ELEM = 3;
    public const int BPF_MAP_GET_NEXT_KEY = 4;
    public const int BPF_PROG_LOAD = 5;
    public const int BPF_OBJ_PIN = 6;
    public const int BPF_OBJ_GET = 7;
    public const int BPF_OBJ_GET_INFO_BY_FD = 15;
    public const int BPF_LINK_CREATE = 28;
    public const int BPF_LINK_UPDATE = 29;
    public const int BPF_LINK_DETACH = 34;

    // enum bpf_map_type.
    public const uint BPF_MAP_TYPE_HASH = 1;
    public const uint BPF_MAP_TYPE_XSKMAP = 17;

    // enum bpf_link_type.
    public const uint BPF_LINK_TYPE_XDP = 6;

    /// <summary>statfs(2)'s f_type of a bpffs mount (include/uapi/linux/magic.h).</summary>
    public const uint BPF_FS_MAGIC = 0xcafe4a11;

    // enum bpf_prog_type.
    public const uint BPF_PROG_TYPE_XDP = 6;

    // enum bpf_attach_type.
    public const uint BPF_XDP = 37;

    // BPF_MAP_UPDATE_ELEM flags.
    public const ulong BPF_ANY = 0;
    /// <summary>Create only: an existing key fails with EEXIST.</summary>
    public const ulong BPF_NOEXIST = 1;

    // XDP attach flags (include/uapi/linux/if_link.h), as bpf_attr.link_create.flags.
    public const uint XDP_FLAGS_SKB_MODE = 1 << 1;
    public const uint XDP_FLAGS_DRV_MODE = 1 << 2;

    // enum xdp_action.
    public const int XDP_ABORTED = 0;
    public const int XDP_DROP = 1;
    public const int XDP_PASS = 2;

    // Helper function ids (the FN(...) list in bpf.h: ids are positions in __BPF_FUNC_MAPPER).
    public const int BPF_FUNC_map_lookup_elem = 1;
    public const int BPF_FUNC_redirect_map = 51;

    /// <summary>Names of maps and programs: BPF_OBJ_NAME_LEN including the NUL; [A-Za-z0-9_.] only.</summary>
    public const int BPF_OBJ_NAME_LEN = 16;

    /// <summary>BPF_MAP_CREATE. Returns the map fd or -errno.</summary>
    public static int MapCreate(uint type, uint keySize, uint valueSize, uint maxEntries, string name)
    {
        var attr = new MapCreateAttr
        {
            MapType = type,
            KeySize = keySize,
            ValueSize = valueSize,
            MaxEntries = maxEntries,
        };
        Libc.CopyCString(name, new Span<byte>(attr.MapName, BPF_OBJ_NAME_LEN));
        return Command(BPF_MAP_CREATE, ref attr);
    }

    /// <summary>BPF_MAP_UPDATE_ELEM. Returns 0 or -errno.</summary>
    public static int MapUpdate(int mapFd, void* key, void* value, ulong flags = BPF_ANY)
    {
        var attr = new MapElemAttr { MapFd = (uint)mapFd, Key = (ulong)key, Value = (ulong)value, Flags = flags };
        return Command(BPF_MAP_UPDATE_ELEM, ref attr);
    }

    /// <summary>BPF_MAP_DELETE_ELEM. Returns 0 or -errno (-ENOENT when the key is absent).</summary>
    public static int MapDelete(int mapFd, void* key)
    {
        var attr = new MapElemAttr { MapFd = (uint)mapFd, Key = (ulong)key };
        return Command(BPF_MAP_DELETE_ELEM, ref attr);
    }

    /// <summary>BPF_MAP_GET_NEXT_KEY: the key after <paramref name="key"/> (the first key when it is null) into
    /// <paramref name="nextKey"/>. Returns 0, -ENOENT after the last key, or another -errno.</summary>
    public static int MapGetNextKey(int mapFd, void* key, void* nextKey)
    {
        var attr = new MapElemAttr { MapFd = (uint)mapFd, Key = (ulong)key, Value = (ulong)nextKey };
        return Command(BPF_MAP_GET_NEXT_KEY, ref attr);
    }

    /// <summary>BPF_OBJ_PIN: makes <paramref name="fd"/> (a map, program or link) a file at <paramref name="path"/>
    /// on a bpffs, which keeps the object alive after every fd is closed. Returns 0 or -errno (-EEXIST if the path
    /// exists; -EPERM if it is not on a bpffs).</summary>
    public static int ObjPin(int fd, string path)
    {
        byte[] pathC = CString(path);
        fixed (byte* p = pathC)
        {
            var attr = new ObjAttr { Pathname = (ulong)p, BpfFd = (uint)fd };
            return Command(BPF_OBJ_PIN, ref attr);
        }
    }

    /// <summary>BPF_OBJ_GET: a new fd for the object pinned at <paramref name="path"/>, or -errno (-ENOENT).</summary>
    public static int ObjGet(string path)
    {
        byte[] pathC = CString(path);
        fixed (byte* p = pathC)
        {
            var attr = new ObjAttr { Pathname = (ulong)p };
            return Command(BPF_OBJ_GET, ref attr);
        }
    }

    /// <summary>BPF_OBJ_GET_INFO_BY_FD of a link: its type, its program's id and, for an XDP link, the ifindex of
    /// the interface it is attached to (0 once the interface is gone or the link detached). Returns 0 or -errno.</summary>
    public static int LinkInfo(int linkFd, out uint type, out uint progId, out int xdpIfIndex)
    {
        LinkInfoXdp info = default;
        int rc = ObjInfo(linkFd, &info, (uint)sizeof(LinkInfoXdp));
        type = info.Type;
        progId = info.ProgId;
        xdpIfIndex = (int)info.XdpIfIndex;
        return rc;
    }

    /// <summary>BPF_OBJ_GET_INFO_BY_FD of a map: its type, key and value sizes and capacity. Returns 0 or -errno.</summary>
    public static int MapInfo(int mapFd, out uint type, out uint keySize, out uint valueSize, out uint maxEntries)
    {
        MapInfoHead info = default;
        int rc = ObjInfo(mapFd, &info, (uint)sizeof(MapInfoHead));
        (type, keySize, valueSize, maxEntries) = (info.Type, info.KeySize, info.ValueSize, info.MaxEntries);
        return rc;
    }

    /// <summary>BPF_LINK_DETACH: detaches the link's program now, whoever else holds the link (its fds and pins
    /// stay valid, defunct). Returns 0 or -errno.</summary>
    public static int LinkDetach(int linkFd)
    {
        uint attr = (uint)linkFd; // link_detach { __u32 link_fd; }
        return Command(BPF_LINK_DETACH, ref attr);
    }

    /// <summary>The kernel fills at most <paramref name="length"/> bytes of its info struct (it takes a shorter one
    /// than its own, kernel/bpf/syscall.c).</summary>
    private static int ObjInfo(int fd, void* info, uint length)
    {
        var attr = new InfoAttr { BpfFd = (uint)fd, InfoLen = length, Info = (ulong)info };
        return Command(BPF_OBJ_GET_INFO_BY_FD, ref attr);
    }

    /// <summary>A path or name as a NUL-terminated UTF-8 string, for the calls that take a <c>char *</c>.</summary>
    public static byte[] CString(string s)
    {
        byte[] bytes = new byte[System.Text.Encoding.UTF8.GetByteCount(s) + 1];
        System.Text.Encoding.UTF8.GetBytes(s, bytes);
        return bytes;
    }

    /// <summary>
    /// BPF_PROG_LOAD of an XDP program. Returns the program fd or -errno. With a <paramref name="log"/> buffer the
    /// verifier writes its log there (log_level 1; a buffer too small fails the load with ENOSPC).
    /// </summary>
    public static int ProgLoadXdp(ReadOnlySpan<BpfInsn> insns, string license, string name, Span<byte> log)
    {
        Span<byte> licenseC = stackalloc byte[license.Length + 1];
        Libc.CopyCString(license, licenseC);
        fixed (BpfInsn* pInsns = insns)
        fixed (byte* pLicense = licenseC)
        fixed (byte* pLog = log)
        {
            var attr = new ProgLoadAttr
            {
                ProgType = BPF_PROG_TYPE_XDP,
                InsnCnt = (uint)insns.Length,
                Insns = (ulong)pInsns,
                License = (ulong)pLicense,
                LogLevel = log.IsEmpty ? 0u : 1u,
                LogSize = (uint)log.Length,
                LogBuf = log.IsEmpty ? 0 : (ulong)pLog,
                ExpectedAttachType = BPF_XDP,
            };
            Libc.CopyCString(name, new Span<byte>(attr.ProgName, BPF_OBJ_NAME_LEN));
            return Command(BPF_PROG_LOAD, ref attr);
        }
    }

    /// <summary>BPF_LINK_CREATE attaching an XDP program to an interface. Returns the link fd or -errno.</summary>
    public static int LinkCreateXdp(int progFd, int ifIndex, uint xdpFlags)
    {
        var attr = new LinkCreateAttr
        {
            ProgFd = (uint)progFd,
            TargetIfIndex = (uint)ifIndex,
            AttachType = BPF_XDP,
            Flags = xdpFlags,
        };
        return Command(BPF_LINK_CREATE, ref attr);
    }

    /// <summary>BPF_LINK_UPDATE: the link runs <paramref name="newProgFd"/> from the next packet on, with no moment
    /// where the interface has no program. Returns 0 or -errno.</summary>
    public static int LinkUpdate(int linkFd, int newProgFd)
    {
        var attr = new LinkUpdateAttr { LinkFd = (uint)linkFd, NewProgFd = (uint)newProgFd };
        return Command(BPF_LINK_UPDATE, ref attr);
    }

    /// <summary>bpf(<paramref name="cmd"/>, &amp;attr, sizeof(attr)): the size is always the variant's own, so the
    /// kernel never reads past it. Returns what the kernel returns, or -errno.</summary>
    private static int Command<TAttr>(int cmd, ref TAttr attr) where TAttr : unmanaged
    {
        fixed (TAttr* p = &attr)
        {
            int rc = Libc.Bpf(cmd, p, (uint)sizeof(TAttr));
            return rc >= 0 ? rc : -Errno.Last;
        }
    }

    /// <summary>The BPF_MAP_CREATE variant: map_type .. map_name (44 bytes).</summary>
    [StructLayout(LayoutKind.Explicit, Size = 44)]
    private struct MapCreateAttr
    {
        [FieldOffset(0)] public uint MapType;
        [FieldOffset(4)] public uint KeySize;
        [FieldOffset(8)] public uint ValueSize;
        [FieldOffset(12)] public uint MaxEntries;
        [FieldOffset(16)] public uint MapFlags;
        [FieldOffset(20)] public uint InnerMapFd;
        [FieldOffset(24)] public uint NumaNode;
        [FieldOffset(28)] public fixed byte MapName[BPF_OBJ_NAME_LEN];
    }

    /// <summary>The BPF_MAP_*_ELEM variant (32 bytes): key and value are user pointers as u64.</summary>
    [StructLayout(LayoutKind.Explicit, Size = 32)]
    private struct MapElemAttr
    {
        [FieldOffset(0)] public uint MapFd;
        [FieldOffset(8)] public ulong Key;
        [FieldOffset(16)] public ulong Value;
        [FieldOffset(24)] public ulong Flags;
    }

    /// <summary>The BPF_PROG_LOAD variant: prog_type .. expected_attach_type (72 bytes).</summary>
    [StructLayout(LayoutKind.Explicit, Size = 72)]
    private struct ProgLoadAttr
    {
        [FieldOffset(0)] public uint ProgType;
        [FieldOffset(4)] public uint InsnCnt;
        /// <summary>Pointer to struct bpf_insn[InsnCnt].</summary>
        [FieldOffset(8)] public ulong Insns;
        /// <summary>Pointer to a NUL-terminated license string; GPL-only helpers need a GPL-compatible one.</summary>
        [FieldOffset(16)] public ulong License;
        [FieldOffset(24)] public uint LogLevel;
        [FieldOffset(28)] public uint LogSize;
        [FieldOffset(32)] public ulong LogBuf;
        [FieldOffset(40)] public uint KernVersion;
        [FieldOffset(44)] public uint ProgFlags;
        [FieldOffset(48)] public fixed byte ProgName[BPF_OBJ_NAME_LEN];
        [FieldOffset(64)] public uint ProgIfIndex;
        [FieldOffset(68)] public uint ExpectedAttachType;
    }

    /// <summary>The BPF_OBJ_PIN and BPF_OBJ_GET variant: pathname, bpf_fd, file_flags (16 bytes).</summary>
    [StructLayout(LayoutKind.Explicit, Size = 16)]
    private struct ObjAttr
    {
        [FieldOffset(0)] public ulong Pathname;
        [FieldOffset(8)] public uint BpfFd;
        [FieldOffset(12)] public uint FileFlags;
    }

    /// <summary>The BPF_OBJ_GET_INFO_BY_FD variant (16 bytes).</summary>
    [StructLayout(LayoutKind.Explicit, Size = 16)]
    private struct InfoAttr
    {
        [FieldOffset(0)] public uint BpfFd;
        [FieldOffset(4)] public uint InfoLen;
        [FieldOffset(8)] public ulong Info;
    }

    /// <summary><c>struct bpf_link_info</c> up to the XDP member of its union, which starts at 16 (the union holds
    /// u64s, so it is 8-aligned).</summary>
    [StructLayout(LayoutKind.Explicit, Size = 24)]
    private struct LinkInfoXdp
    {
        [FieldOffset(0)] public uint Type;
        [FieldOffset(4)] public uint Id;
        [FieldOffset(8)] public uint ProgId;
        [FieldOffset(16)] public uint XdpIfIndex;
    }

    /// <summary>The head of <c>struct bpf_map_info</c>: type .. max_entries.</summary>
    [StructLayout(LayoutKind.Explicit, Size = 20)]
    private struct MapInfoHead
    {
        [FieldOffset(0)] public uint Type;
        [FieldOffset(4)] public uint Id;
        [FieldOffset(8)] public uint KeySize;
        [FieldOffset(12)] public uint ValueSize;
        [FieldOffset(16)] public uint MaxEntries;
    }

    /// <summary>The BPF_LINK_UPDATE variant (16 bytes).</summary>
    [StructLayout(LayoutKind.Explicit, Size = 16)]
    private struct LinkUpdateAttr
    {
        [FieldOffset(0)] public uint LinkFd;
        [FieldOffset(4)] public uint NewProgFd;
        [FieldOffset(8)] public uint Flags;
        [FieldOffset(12)] public uint OldProgFd;
    }

    /// <summary>The BPF_LINK_CREATE variant for XDP (16 bytes).</summary>
    [StructLayout(LayoutKind.Explicit, Size = 16)]
    private struct LinkCreateAttr
    {
        [FieldOffset(0)] public uint ProgFd;
        [FieldOffset(4)] public uint TargetIfIndex;
        [FieldOffset(8)] public uint AttachType;
        /// <summary>XDP_FLAGS_SKB_MODE or XDP_FLAGS_DRV_MODE.</summary>
        [FieldOffset(12)] public uint Flags;
    }
}

/// <summary>
/// <c>struct bpf_insn</c> (8 bytes): opcode, destination and source registers in one byte (<c>dst_reg:4,
/// src_reg:4</c>: dst in the low nibble on little-endian hosts, the high one on big-endian), a signed 16-bit offset
/// and a signed 32-bit immediate. Documentation/bpf/standardization/instruction-set.rst.
/// </summary>
[StructLayout(LayoutKind.Sequential, Size = 8)]
internal struct BpfInsn
{
    public byte Code;
    public byte Registers;
    public short Offset;
    public int Immediate;

    public BpfInsn(byte code, int dst, int src, short offset, int immediate)
    {
        Code = code;
        Registers = BitConverter.IsLittleEndian ? (byte)((src << 4) | dst) : (byte)((dst << 4) | src);
        Offset = offset;
        Immediate = immediate;
    }
}
