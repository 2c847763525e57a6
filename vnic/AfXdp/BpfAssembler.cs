using Onload.Vnic.Native;

namespace Onload.Vnic.AfXdp;

/// <summary>eBPF registers: R0 return value, R1-R5 arguments (clobbered by calls), R6-R9 callee-saved, R10 frame pointer.</summary>
internal enum Reg
{
    R0, R1, R2, R3, R4, R5, R6, R7, R8, R9, R10,
}

/// <summary>Memory access sizes (the BPF_SIZE field).</summary>
internal enum Size
{
    /// <summary>32 bits.</summary>
    W = 0x00,
    /// <summary>16 bits.</summary>
    H = 0x08,
    /// <summary>8 bits.</summary>
    B = 0x10,
    /// <summary>64 bits.</summary>
    DW = 0x18,
}

/// <summary>Conditional jump operations (the BPF_OP field of the JMP and JMP32 classes); unsigned unless named S.</summary>
internal enum Jump
{
    Eq = 0x10,
    Gt = 0x20,
    Ge = 0x30,
    Set = 0x40,
    Ne = 0x50,
    Lt = 0xa0,
    Le = 0xb0,
}

/// <summary>
/// A small eBPF assembler: one method per instruction kind, named labels for jumps, resolved by
/// <see cref="Assemble"/>. Encodings from Documentation/bpf/standardization/instruction-set.rst; the comment on
/// each method gives the instruction in the kernel verifier's notation, as it appears in the verifier log.
/// </summary>
internal sealed class BpfAssembler
{
    // Instruction classes.
    private const byte LD = 0x00, LDX = 0x01, STX = 0x03, JMP = 0x05, JMP32 = 0x06, ALU64 = 0x07;
    // Source operand: the immediate (K) or the source register (X).
    private const byte K = 0x00, X = 0x08;
    // ALU operations.
    private const byte ADD = 0x00, AND = 0x50, LSH = 0x60, MOV = 0xb0;
    // Jump operations beyond the conditional ones.
    private const byte JA = 0x00, CALL = 0x80, EXIT = 0x90;
    // Modes.
    private const byte IMM = 0x00, MEM = 0x60;
    /// <summary>src_reg of a 64-bit immediate load that names a map by fd (BPF_PSEUDO_MAP_FD).</summary>
    private const int PseudoMapFd = 1;

    private readonly List<BpfInsn> _insns = [];
    private readonly Dictionary<string, int> _labels = new(StringComparer.Ordinal);
    private readonly List<(int At, string Label)> _fixups = [];

    public int Count => _insns.Count;

    /// <summary>Marks the next instruction as <paramref name="name"/>, for jumps.</summary>
    public void Label(string name)
    {
        if (!_labels.TryAdd(name, _insns.Count))
            throw new InvalidOperationException($"label '{name}' defined twice");
    }

    /// <summary><c>dst = src</c> (64 bits).</summary>
    public void Mov64(Reg dst, Reg src) => Emit(ALU64 | MOV | X, dst, src, 0, 0);

    /// <summary><c>dst = imm</c> (sign-extended to 64 bits).</summary>
    public void Mov64(Reg dst, int imm) => Emit(ALU64 | MOV | K, dst, 0, 0, imm);

    /// <summary><c>dst += imm</c> (64 bits).</summary>
    public void Add64(Reg dst, int imm) => Emit(ALU64 | ADD | K, dst, 0, 0, imm);

    /// <summary><c>dst += src</c> (64 bits): a packet pointer plus a bounded scalar stays a packet pointer.</summary>
    public void Add64(Reg dst, Reg src) => Emit(ALU64 | ADD | X, dst, src, 0, 0);

    /// <summary><c>dst &lt;&lt;= imm</c> (64 bits).</summary>
    public void Lsh64(Reg dst, int imm) => Emit(ALU64 | LSH | K, dst, 0, 0, imm);

    /// <summary><c>dst &amp;= imm</c> (64 bits).</summary>
    public void And64(Reg dst, int imm) => Emit(ALU64 | AND | K, dst, 0, 0, imm);

    /// <summary><c>dst = *(size *)(src + off)</c>, zero-extended.</summary>
    public void Load(Size size, Reg dst, Reg src, short off) => Emit(LDX | (int)size | MEM, dst, src, off, 0);

    /// <summary><c>*(size *)(dst + off) = src</c>.</summary>
    public void Store(Size size, Reg dst, short off, Reg src) => Emit(STX | (int)size | MEM, dst, src, off, 0);

    /// <summary>
    /// <c>dst = map[fd]</c>: a two-slot 64-bit immediate load whose source register marks the immediate as a map fd;
    /// the verifier replaces it with the map's address.
    /// </summary>
    public void LoadMapFd(Reg dst, int mapFd)
    {
        Emit(LD | (int)Size.DW | IMM, dst, (Reg)PseudoMapFd, 0, mapFd);
        Emit(0, 0, 0, 0, 0); // the immediate's upper 32 bits
    }

    /// <summary><c>if dst op imm goto label</c> (64-bit compare with the immediate sign-extended).</summary>
    public void If(Reg dst, Jump op, int imm, string label) => EmitJump(JMP | (int)op | K, dst, 0, imm, label);

    /// <summary><c>if dst op src goto label</c> (64-bit compare).</summary>
    public void If(Reg dst, Jump op, Reg src, string label) => EmitJump(JMP | (int)op | X, dst, src, 0, label);

    /// <summary><c>if wdst op imm goto label</c>: compares the low 32 bits, so an immediate with its top bit set
    /// means what it says (no sign extension).</summary>
    public void If32(Reg dst, Jump op, uint imm, string label) => EmitJump(JMP32 | (int)op | K, dst, 0, unchecked((int)imm), label);

    /// <summary><c>goto label</c>.</summary>
    public void Goto(string label) => EmitJump(JMP | JA, 0, 0, 0, label);

    /// <summary><c>call helper</c>: arguments in R1-R5, result in R0; R1-R5 are clobbered.</summary>
    public void Call(int helper) => Emit(JMP | CALL, 0, 0, 0, helper);

    /// <summary><c>exit</c>: return R0.</summary>
    public void Exit() => Emit(JMP | EXIT, 0, 0, 0, 0);

    /// <summary>Resolves the jumps and returns the program.</summary>
    public BpfInsn[] Assemble()
    {
        var program = _insns.ToArray();
        foreach (var (at, label) in _fixups)
        {
            if (!_labels.TryGetValue(label, out int target))
                throw new InvalidOperationException($"jump to undefined label '{label}'");
            // Offsets count instructions from the one after the jump.
            int offset = target - (at + 1);
            if (offset is < short.MinValue or > short.MaxValue)
                throw new InvalidOperationException($"jump to '{label}' is out of range");
            program[at].Offset = (short)offset;
        }
        return program;
    }

    private void Emit(int code, Reg dst, Reg src, short off, int imm) =>
        _insns.Add(new BpfInsn((byte)code, (int)dst, (int)src, off, imm));

    private void EmitJump(int code, Reg dst, Reg src, int imm, string label)
    {
        _fixups.Add((_insns.Count, label));
        Emit(code, dst, src, 0, imm);
    }
}
