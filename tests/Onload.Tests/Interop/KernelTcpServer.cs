using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using Onload.Tests.Netns;

namespace Onload.Tests.Interop;

/// <summary>
/// A kernel TCP server run by this process: its listening socket is made on a thread inside a namespace, so it and
/// every connection it accepts belong to that namespace's kernel, while the serving runs on the thread pool. Cheaper
/// than a socat fork per connection when a test opens thousands, and each connection's handling is checked C#.
/// Dispose closes the listener and every connection still open.
/// </summary>
public sealed class KernelTcpServer : IDisposable
{
    private readonly Socket _listener;
    private readonly Func<Socket, Task> _serve;
    private readonly ConcurrentDictionary<Socket, bool> _open = new();
    private readonly ConcurrentQueue<string> _errors = new();
    private readonly Task _acceptLoop;
    private int _served;

    public KernelTcpServer(TestNamespace ns, string address, int port, Func<Socket, Task> serve)
    {
        ArgumentNullException.ThrowIfNull(ns);
        _serve = serve;
        _listener = ns.Run(() =>
        {
            var s = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            s.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReuseAddress, true);
            s.Bind(new IPEndPoint(IPAddress.Parse(address), port));
            s.Listen(4096); // clamped to the namespace's net.core.somaxconn
            return s;
        });
        _acceptLoop = Task.Run(AcceptLoop);
    }

    /// <summary>Connections whose handler finished without an error.</summary>
    public int Served => Volatile.Read(ref _served);

    /// <summary>What went wrong in handlers, one line each.</summary>
    public IReadOnlyCollection<string> Errors => _errors;

    private async Task AcceptLoop()
    {
        while (true)
        {
            Socket s;
            try
            {
                s = await _listener.AcceptAsync().ConfigureAwait(false);
            }
            catch (Exception e) when (e is SocketException or ObjectDisposedException)
            {
                return; // the listener was closed
            }
            _open[s] = true;
            _ = Task.Run(() => Serve(s));
        }
    }

    private async Task Serve(Socket s)
    {
        try
        {
            await _serve(s).ConfigureAwait(false);
            Interlocked.Increment(ref _served);
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException or IOException or InvalidDataException)
        {
            _errors.Enqueue($"{SafeRemote(s)}: {e.GetType().Name}: {e.Message}");
        }
        finally
        {
            _open.TryRemove(s, out _);
            s.Dispose();
        }
    }

    private static string SafeRemote(Socket s)
    {
        try
        {
            return s.RemoteEndPoint?.ToString() ?? "?";
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException)
        {
            return "?";
        }
    }

    /// <summary>Echoes everything until the client's FIN, then closes its own side.</summary>
    public static async Task Echo(Socket s)
    {
        ArgumentNullException.ThrowIfNull(s);
        var buffer = new byte[16384];
        int n;
        while ((n = await s.ReceiveAsync(buffer, SocketFlags.None).ConfigureAwait(false)) > 0)
            await s.SendAsync(buffer.AsMemory(0, n), SocketFlags.None).ConfigureAwait(false);
        s.Shutdown(SocketShutdown.Send);
    }

    /// <summary>Reads exactly <paramref name="buffer"/>'s length; InvalidDataException at an early end of stream.</summary>
    public static async Task ReceiveExactly(Socket s, Memory<byte> buffer)
    {
        ArgumentNullException.ThrowIfNull(s);
        for (int got = 0; got < buffer.Length;)
        {
            int n = await s.ReceiveAsync(buffer[got..], SocketFlags.None).ConfigureAwait(false);
            if (n == 0)
                throw new InvalidDataException($"end of stream after {got} of {buffer.Length} bytes");
            got += n;
        }
    }

    public void Dispose()
    {
        _listener.Dispose();
        _acceptLoop.Wait(TimeSpan.FromSeconds(5));
        foreach (var s in _open.Keys)
            s.Dispose();
    }
}
