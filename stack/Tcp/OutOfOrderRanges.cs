using System.Runtime.CompilerServices;
using Onload.Stack.Wire;

namespace Onload.Stack.Tcp;

/// <summary>
/// The out-of-order data a receiver holds beyond RCV.NXT: disjoint, non-adjacent ranges sorted by sequence, each
/// stamped with when it last grew, so that SACK blocks go out most recent first (RFC 2018 §4). The bytes themselves
/// wait in the receive ring at their sequence positions; this only says which are there. Bounded: a segment that
/// would need a range beyond <see cref="Capacity"/> is dropped and the peer sends it again.
/// </summary>
public struct OutOfOrderRanges
{
    public const int Capacity = 64;

    private Ranges _ranges;
    private Stamps _stamps;
    private uint _clock;

    public int Count { get; private set; }

    public readonly SeqRange this[int i] => _ranges[i];

    /// <summary>Adds [start, end), merging with every range it overlaps or touches. Returns false (nothing changed)
    /// when the set is full and the range would stand alone.</summary>
    public bool Add(uint start, uint end)
    {
        int first = 0;
        while (first < Count && Seq.Lt(_ranges[first].End, start))
            first++;
        int last = first;
        while (last < Count && Seq.Le(_ranges[last].Start, end))
            last++;
        // Ranges [first, last) overlap or touch the new one.
        if (first == last)
        {
            if (Count == Capacity)
                return false;
            for (int i = Count; i > first; i--)
            {
                _ranges[i] = _ranges[i - 1];
                _stamps[i] = _stamps[i - 1];
            }
            Count++;
        }
        else
        {
            start = Seq.Min(start, _ranges[first].Start);
            end = Seq.Max(end, _ranges[last - 1].End);
            int removed = last - first - 1;
            for (int i = first + 1; i + removed < Count; i++)
            {
                _ranges[i] = _ranges[i + removed];
                _stamps[i] = _stamps[i + removed];
            }
            Count -= removed;
        }
        _ranges[first] = new SeqRange(start, end);
        _stamps[first] = ++_clock;
        return true;
    }

    /// <summary>Whether [start, end) is already held in full.</summary>
    public readonly bool Covers(uint start, uint end)
    {
        for (int i = 0; i < Count; i++)
            if (Seq.Le(_ranges[i].Start, start) && Seq.Le(end, _ranges[i].End))
                return true;
        return false;
    }

    /// <summary>Where the bytes already held from before <paramref name="seq"/> end, if a range starting before it
    /// holds it; else <paramref name="seq"/>.</summary>
    public readonly uint HeldPast(uint seq)
    {
        for (int i = 0; i < Count; i++)
            if (Seq.Lt(_ranges[i].Start, seq) && Seq.Lt(seq, _ranges[i].End))
                return _ranges[i].End;
        return seq;
    }

    /// <summary>RCV.NXT moved to <paramref name="rcvNxt"/>: ranges it reached are taken out, and the new RCV.NXT
    /// (past the end of the last one reached) is returned.</summary>
    public uint Advance(uint rcvNxt)
    {
        int taken = 0;
        while (taken < Count && Seq.Le(_ranges[taken].Start, rcvNxt))
        {
            rcvNxt = Seq.Max(rcvNxt, _ranges[taken].End);
            taken++;
        }
        if (taken > 0)
        {
            for (int i = 0; i + taken < Count; i++)
            {
                _ranges[i] = _ranges[i + taken];
                _stamps[i] = _stamps[i + taken];
            }
            Count -= taken;
        }
        return rcvNxt;
    }

    public void Clear() => Count = 0;

    /// <summary>Up to <paramref name="blocks"/>.Length ranges, most recently grown first (RFC 2018 §4: the first
    /// block holds the segment that triggered the ACK; the rest repeat the most recent).</summary>
    public readonly int MostRecent(Span<SeqRange> blocks)
    {
        int n = Math.Min(blocks.Length, Count);
        uint below = uint.MaxValue;
        for (int k = 0; k < n; k++)
        {
            int best = -1;
            for (int i = 0; i < Count; i++)
                if (_stamps[i] < below && (best < 0 || _stamps[i] > _stamps[best]))
                    best = i;
            blocks[k] = _ranges[best];
            below = _stamps[best];
        }
        return n;
    }

    [InlineArray(Capacity)]
    private struct Ranges
    {
        private SeqRange _e;
    }

    [InlineArray(Capacity)]
    private struct Stamps
    {
        private uint _e;
    }
}
