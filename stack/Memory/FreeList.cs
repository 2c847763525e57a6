namespace Onload.Stack.Memory;

/// <summary>
/// The free rows of a fixed table, first in first out: taking and returning a row are O(1), and a freed row goes
/// to the back, so a handle just closed is the last to be handed out again (a stale handle does not at once name
/// a new socket). Starts with every row free, in index order.
/// </summary>
public sealed class FreeList
{
    /// <summary>The next free row after each free row, or -1.</summary>
    private readonly int[] _next;
    private int _head;
    private int _tail;

    public FreeList(int rows)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(rows, 1);
        _next = new int[rows];
        for (int i = 0; i < rows; i++)
            _next[i] = i + 1 < rows ? i + 1 : -1;
        _head = 0;
        _tail = rows - 1;
    }

    /// <summary>The oldest free row, now taken, or -1 when every row is in use.</summary>
    public int Take()
    {
        int i = _head;
        if (i < 0)
            return -1;
        _head = _next[i];
        if (_head < 0)
            _tail = -1;
        _next[i] = -1;
        return i;
    }

    /// <summary>Gives a row back (the caller returns each taken row once).</summary>
    public void Return(int row)
    {
        _next[row] = -1;
        if (_tail >= 0)
            _next[_tail] = row;
        else
            _head = row;
        _tail = row;
    }
}
