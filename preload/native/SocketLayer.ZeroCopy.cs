namespace Onload.Native;

/// <summary>Zero-copy TCP for the C API (NetStack.TcpZeroCopy.cs): pointers into the connection's rings.</summary>
internal sealed partial class SocketLayer
{
    public int ReceiveLend(int c, int max, out nint data)
    {
        lock (_lock)
        {
            PollStack();
            return _stack.TcpReceiveLend(c, max, out data);
        }
    }

    public int ReceiveReturn(int c, int n)
    {
        lock (_lock)
            return _stack.TcpReceiveReturn(c, n);
    }

    public int SendReserve(int c, out nint data, out long position)
    {
        lock (_lock)
        {
            PollStack();
            return _stack.TcpSendReserve(c, out data, out position);
        }
    }

    public int SendCommit(int c, int n)
    {
        lock (_lock)
            return _stack.TcpSendCommit(c, n);
    }

    public long SendAcked(int c)
    {
        lock (_lock)
        {
            PollStack();
            return _stack.TcpSendAcked(c);
        }
    }
}
