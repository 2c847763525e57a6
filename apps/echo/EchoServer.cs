using Onload.Stack;
using Onload.Stack.Wire;
using Onload.Vnic;

namespace Onload.Apps.Echo;

/// <summary>
/// The echo loop: poll the stack, answer every queued datagram, then spin for a while and sleep on the VNIC.
/// ICMP echo needs nothing here: the stack answers ping inside <see cref="NetStack.Poll"/>.
/// </summary>
internal sealed class EchoServer(NetStack stack, Settings settings)
{
    private readonly List<int> _sockets = [];
    private readonly byte[] _buffer = new byte[65536];
    private volatile bool _stop;

    public bool Stopped => _stop;

    public int AddUdpPort(ushort port)
    {
        int s = stack.UdpOpen();
        if (s < 0)
            return s;
        int rc = stack.UdpBind(s, new Ipv4Endpoint(Ipv4Address.Any, port));
        if (rc < 0)
        {
            stack.UdpClose(s);
            return rc;
        }
        _sockets.Add(s);
        return 0;
    }

    public void Stop() => _stop = true;

    public void Run()
    {
        long spinNs = settings.SpinMicroseconds * 1000L;
        long idleSince = MonotonicClock.Instance.NowNanoseconds;
        while (!_stop)
        {
            int work = stack.Poll();
            foreach (int s in _sockets)
                work += EchoAll(s);
            long now = MonotonicClock.Instance.NowNanoseconds;
            if (work > 0)
            {
                idleSince = now;
                continue;
            }
            if (now - idleSince < spinNs)
                continue;
            // Sleep until a frame arrives or the next timer, but wake at least every 100 ms to notice a signal.
            long untilTimer = stack.NextTimerNs == long.MaxValue ? long.MaxValue : stack.NextTimerNs - now;
            int timeoutMs = (int)Math.Clamp(untilTimer / 1_000_000, 0, 100);
            VnicWait.Wait(stack.Vnic, timeoutMs);
        }
    }

    private int EchoAll(int s)
    {
        int n = 0;
        while (true)
        {
            int len = stack.UdpReceiveFrom(s, _buffer, out var from);
            if (len == -(int)Errno.EAGAIN)
                return n;
            n++;
            if (len < 0)
                continue; // an error for this socket (e.g. ECONNREFUSED), reported once
            stack.UdpSendTo(s, _buffer.AsSpan(0, len), from);
        }
    }
}
