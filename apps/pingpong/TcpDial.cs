using System.Diagnostics;
using Onload.Stack;
using Onload.Stack.Tcp;
using Onload.Stack.Wire;

namespace Onload.Apps.PingPong;

/// <summary>
/// Opening and closing one TCP connection by busy-polling: what a blocking connect() and close() would wait for,
/// on the stack's non-blocking calls (connect returns -EINPROGRESS; the handshake completes inside Poll).
/// </summary>
internal static class TcpDial
{
    /// <summary>connect() with TCP_NODELAY (as sockperf sets it), polled until the handshake completes, fails or
    /// <paramref name="timeoutTicks"/> pass. Returns the connection, or a negated errno (ETIMEDOUT on the timeout).</summary>
    public static int Connect(NetStack stack, Ipv4Endpoint server, ushort localPort, long timeoutTicks)
    {
        int c = stack.TcpOpen();
        if (c < 0)
            return c;
        int rc = 0;
        if (localPort != 0)
            rc = stack.TcpBind(c, new Ipv4Endpoint(Ipv4Address.Any, localPort));
        if (rc == 0)
            rc = stack.TcpSetNoDelay(c, true);
        if (rc == 0)
            rc = stack.TcpConnect(c, server);
        if (rc == -(int)Errno.EINPROGRESS)
            rc = WaitConnected(stack, c, Stopwatch.GetTimestamp() + timeoutTicks);
        if (rc < 0)
        {
            stack.TcpClose(c);
            return rc;
        }
        return c;
    }

    private static int WaitConnected(NetStack stack, int c, long deadline)
    {
        while (true)
        {
            stack.Poll();
            if (stack.TcpIsConnected(c))
                return 0;
            int error = stack.TcpTakeError(c);
            if (error != 0)
                return -Math.Abs(error);
            if (stack.TcpStateOf(c) == TcpState.Closed)
                return -(int)Errno.ECONNREFUSED;
            if (Stopwatch.GetTimestamp() >= deadline)
                return -(int)Errno.ETIMEDOUT;
        }
    }

    /// <summary>close(), then polls until our FIN is acknowledged (or <paramref name="timeoutTicks"/> pass), so that
    /// the process may exit without leaving the peer retransmitting to an address nobody answers for.</summary>
    public static void Close(NetStack stack, int c, long timeoutTicks)
    {
        stack.TcpClose(c);
        long deadline = Stopwatch.GetTimestamp() + timeoutTicks;
        // Once closed, the row is freed (Closed) or waits out 2MSL in TIME_WAIT or, orphaned, in FIN_WAIT_2.
        while (stack.TcpStateOf(c) is not (TcpState.Closed or TcpState.TimeWait or TcpState.FinWait2)
               && Stopwatch.GetTimestamp() < deadline)
            stack.Poll();
    }
}
