using System.Text.Json;
using Onload.Driverlink;
using Onload.Stack;
using Onload.StackDump;

namespace Onload.Native.Dump;

/// <summary>
/// Answers onload-stackdump: a thread of its own, started with the stack, that listens on
/// <c>@onload-stack/PID</c> and gives each client that is root or the program's own user one JSON
/// <see cref="StackSnapshot"/>, then closes. It touches the stack only inside <see cref="SocketLayer.CopyForDump"/>.
/// </summary>
/// <remarks>
/// The thread's socket calls never reach the stack, whichever way they go. <see cref="DriverlinkSocket"/> calls
/// libc through <c>LibraryImport("libc")</c>, which the runtime binds with <c>dlsym</c> on libc's own handle, past
/// the LD_PRELOADed shim (seen with LD_DEBUG=bindings: docs/PRELOAD-NOTES.md); and were they to reach the shim (this
/// thread never sets its reentrancy guard), it passes every call on an fd it did not accelerate straight to libc,
/// and it accelerates internet sockets only, never this AF_UNIX one.
/// </remarks>
internal sealed class StackDumpServer
{
    /// <summary>How long a client may take to read the snapshot before it is dropped.</summary>
    private const int SendTimeoutMs = 1000;

    private readonly SocketLayer _layer;
    private readonly DriverlinkSocket _listener;
    private readonly StackIdentity _identity;
    private readonly StackDumpRows _rows;

    private StackDumpServer(SocketLayer layer, DriverlinkSocket listener)
    {
        _layer = layer;
        _listener = listener;
        _identity = layer.DumpIdentity(CommandLine());
        _rows = layer.NewDumpRows();
    }

    /// <summary>Starts answering for <paramref name="layer"/>. A name already taken (a process of the same pid in
    /// another pid namespace sharing this network namespace) costs one warning: the program runs on undumped.</summary>
    public static void Start(SocketLayer layer)
    {
        string name = StackDumpProtocol.Name(Environment.ProcessId);
        StackDumpServer server;
        try
        {
            server = new StackDumpServer(layer, DriverlinkSocket.Listen(name, backlog: 8));
        }
        catch (DriverlinkSocketException e)
        {
            Console.Error.WriteLine($"onload: onload-stackdump will not see this process: {e.Message}");
            return;
        }
        // A background thread: it never keeps the process alive, and dies with it (the listener with it).
        new Thread(server.Run) { IsBackground = true, Name = "onload-stackdump" }.Start();
    }

    private void Run()
    {
        while (true)
        {
            DriverlinkSocket client;
            try
            {
                client = _listener.Accept();
            }
            catch (DriverlinkSocketException e) when ((Errno)e.Errno is Errno.EBADF or Errno.ENOTSOCK or Errno.EINVAL)
            {
                // The program closed our listener (some close every fd they did not open): stop, or this thread
                // could end up accepting on whatever the program opens next under the same number.
                return;
            }
            catch (DriverlinkSocketException)
            {
                // EMFILE and the like: the program's trouble, not ours to add to. Try again later.
                Thread.Sleep(100);
                continue;
            }
            using (client)
            {
                try
                {
                    Answer(client);
                }
                catch (Exception e)
                {
                    // Left to escape, it would end the program, which must outlive its dumps.
                    Console.Error.WriteLine($"onload: onload-stackdump: {e.GetType().Name}: {e.Message}");
                }
            }
        }
    }

    private void Answer(DriverlinkSocket client)
    {
        byte[] document;
        try
        {
            if (!client.PeerCredentials().IsRootOrSameUser)
                document = JsonSerializer.SerializeToUtf8Bytes(
                    new StackDumpRefusal($"permission denied: pid {Environment.ProcessId} shows its stack to its own user and root only"),
                    StackDumpJson.Default.StackDumpRefusal);
            else
            {
                var runtime = RuntimeFigures();
                _layer.CopyForDump(_rows);
                document = JsonSerializer.SerializeToUtf8Bytes(_rows.ToSnapshot(in _identity, runtime), StackDumpJson.Default.StackSnapshot);
            }
        }
        catch (DriverlinkSocketException)
        {
            return; // the client went before we could ask who it was
        }
        long deadline = Environment.TickCount64 + SendTimeoutMs;
        for (int at = 0; at < document.Length;)
        {
            var chunk = document.AsSpan(at, Math.Min(StackDumpProtocol.ChunkBytes, document.Length - at));
            int errno = client.Send(chunk, dontWait: true);
            if (errno == 0)
                at += chunk.Length;
            else if (errno != (int)Errno.EAGAIN
                || !client.WaitReady(writable: true, (int)Math.Max(0, deadline - Environment.TickCount64)))
                return; // gone, or not reading: the next client is not kept waiting for this one
        }
    }

    /// <summary>
    /// The runtime's figures, as <see cref="RuntimeSnapshot"/> says. Run on this thread, which has run nothing but
    /// the dump server since it started: what it ever allocated is what answering cost, and is taken off the total.
    /// </summary>
    private static RuntimeSnapshot RuntimeFigures()
    {
        // This thread's figure first: nothing between the two reads allocates, so none of this thread's bytes are
        // left in the difference.
        long ownBytes = GC.GetAllocatedBytesForCurrentThread();
        long allBytes = GC.GetTotalAllocatedBytes(precise: true);
        return new RuntimeSnapshot(allBytes - ownBytes, GC.CollectionCount(0), GC.CollectionCount(1), GC.CollectionCount(2),
            GC.GetTotalMemory(forceFullCollection: false), (long)GC.GetTotalPauseDuration().TotalMicroseconds);
    }

    /// <summary>/proc/self/cmdline with its NULs as spaces.</summary>
    private static string CommandLine()
    {
        try
        {
            return File.ReadAllText("/proc/self/cmdline").TrimEnd('\0').Replace('\0', ' ');
        }
        catch (IOException)
        {
            return "";
        }
    }
}
