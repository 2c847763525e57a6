using System.Runtime.InteropServices;
using BenchmarkDotNet.Attributes;
using Onload.Stack;
using Onload.Stack.Tcp;
using Onload.Stack.Wire;
using Onload.Vnic;
using Onload.Vnic.Sim;

namespace Onload.Perf.Stack;

/// <summary>
/// TCP per segment, two stacks over the in-memory link: one full-sized segment sent, received, read and
/// acknowledged. The "Allocated" column must read 0 B: no allocation per segment.
/// </summary>
[MemoryDiagnoser]
public unsafe class TcpBenchmarks
{
    private VirtualClock _clock = null!;
    private SimLink _link = null!;
    private NetStack _a = null!;
    private NetStack _b = null!;
    private int _client;
    private int _server;
    private readonly byte[] _segment = new byte[1448];
    private readonly byte[] _read = new byte[65536];
    private byte* _mirrorA;
    private byte* _mirrorB;

    /// <summary>Both stacks keep a <see cref="ConnectionMirror"/> (driverlink mode's copy for the daemon).</summary>
    [Params(false, true)]
    public bool Mirror { get; set; }

    private ConnectionMirror? NewMirror(ref byte* region)
    {
        if (!Mirror)
            return null;
        const int connections = 256;
        nuint size = ConnectionMirror.RegionSize(connections);
        region = (byte*)NativeMemory.AlignedAlloc(size, 64);
        return new ConnectionMirror(region, size, connections);
    }

    [GlobalSetup]
    public void Setup()
    {
        _clock = new VirtualClock();
        _link = new SimLink(1, _clock);
        _a = new NetStack(_link.A, new StackOptions { Address = Ipv4Cidr.Parse("10.4.0.1/24"), ConnectionMirror = NewMirror(ref _mirrorA) }, _clock, new SeededRandom(1));
        _b = new NetStack(_link.B, new StackOptions { Address = Ipv4Cidr.Parse("10.4.0.2/24"), ConnectionMirror = NewMirror(ref _mirrorB) }, _clock, new SeededRandom(2));
        int listener = _b.TcpOpen();
        _b.TcpBind(listener, new Ipv4Endpoint(Ipv4Address.Any, 80));
        _b.TcpListen(listener, 4);
        _client = _a.TcpOpen();
        _a.TcpSetNoDelay(_client, true);
        _a.TcpConnect(_client, new Ipv4Endpoint(_b.Address, 80));
        _server = -1;
        for (int i = 0; i < 1000 && (_server < 0 || !_a.TcpIsConnected(_client)); i++)
        {
            Step();
            if (_server < 0)
                _server = _b.TcpAccept(listener, out _);
        }
        if (_server < 0 || !_a.TcpIsConnected(_client))
            throw new InvalidOperationException("no connection");
    }

    private void Step()
    {
        _clock.Advance(2_000);
        _a.Poll();
        _b.Poll();
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _a.Dispose();
        _b.Dispose();
        _link.Dispose();
        NativeMemory.AlignedFree(_mirrorA);
        NativeMemory.AlignedFree(_mirrorB);
        _mirrorA = _mirrorB = null;
    }

    [Benchmark(Description = "TCP 1448 B segment: send, receive, read, ACK back")]
    public int SegmentRoundTrip()
    {
        _a.TcpSend(_client, _segment);
        Step();
        int n = _b.TcpReceive(_server, _read);
        _clock.Advance(50_000_000); // past the delayed-ACK timer: every segment is acknowledged
        _b.Poll();
        _a.Poll();
        return n;
    }
}
