namespace Onload.Stack.Memory;

/// <summary>
/// Per port, the rows of a fixed table bound to it, most recently bound first (Linux's bind bucket and its owners):
/// one row, or several sharing the port through SO_REUSEADDR or SO_REUSEPORT. Finding a port's rows is O(1) and
/// walking them costs one step per row on the port; the TCP and UDP tables each keep one.
/// </summary>
public sealed class PortLists
{
    /// <summary>Per port, the row bound to it most recently + 1 (0: none).</summary>
    private readonly short[] _first = new short[65536];
    /// <summary>The next row on the same port after each bound row, or -1.</summary>
    private readonly int[] _next;

    public PortLists(int rows)
    {
        if (rows > short.MaxValue - 1)
            throw new ArgumentOutOfRangeException(nameof(rows));
        _next = new int[rows];
    }

    /// <summary>The row bound to <paramref name="port"/> most recently, or -1.</summary>
    public int First(ushort port) => _first[port] - 1;

    /// <summary>The row after <paramref name="row"/> on its port, or -1.</summary>
    public int Next(int row) => _next[row];

    public bool InUse(ushort port) => _first[port] != 0;

    public void Add(int row, ushort port)
    {
        _next[row] = _first[port] - 1;
        _first[port] = (short)(row + 1);
    }

    /// <summary>Takes <paramref name="row"/>, bound to <paramref name="port"/>, off the port's list.</summary>
    public void Remove(int row, ushort port)
    {
        if (_first[port] == row + 1)
            _first[port] = (short)(_next[row] + 1);
        else
        {
            int p = _first[port] - 1;
            while (_next[p] != row)
                p = _next[p];
            _next[p] = _next[row];
        }
        _next[row] = -1;
    }
}
