using System.Net;
using Onload.Sockets;
using Onload.Tests.Netns;

namespace Onload.Tests.Managed;

/// <summary>
/// A transport under test on one end of a <see cref="NamespacePair"/>, a kernel on the other. "onload": an
/// <see cref="OnloadStack"/> in this process owning <see cref="NamespacePair.StackAddress"/> on the stack side's veth
/// (AF_XDP); "kernel": a <see cref="KernelTransport"/> whose sockets are made in the stack side's namespace, whose
/// kernel then holds that same address. Either way the transport's address and the peer's are the same, so the two
/// transports' transcripts can be compared. Dispose closes the transport, then removes the namespaces.
/// </summary>
public sealed class TransportPair : IAsyncDisposable
{
    public const string Onload = "onload";
    public const string Kernel = "kernel";

    /// <summary>Both kinds, for TestFixtureSource.</summary>
    public static readonly string[] Kinds = [Kernel, Onload];

    private readonly NamespacePair _pair;

    private TransportPair(string kind, NamespacePair pair, ITransport transport, OnloadStack? stack)
    {
        Kind = kind;
        _pair = pair;
        Transport = transport;
        Stack = stack;
    }

    public static TransportPair Create(string kind)
    {
        Netns.Netns.RequireRoot();
        var pair = new NamespacePair();
        try
        {
            if (kind == Onload)
            {
                var stack = pair.Stack.Run(() => OnloadStack.Open(new OnloadStackOptions
                {
                    Vnic = "af_xdp:" + pair.StackIf,
                    Address = IPAddress.Parse(pair.StackAddress),
                    PrefixLength = pair.PrefixLength,
                    // A short TIME_WAIT, so that a test can see every row go back to the table.
                    ConfigureStack = o => o with { TcpMslNs = 100_000_000 },
                }));
                return new TransportPair(kind, pair, stack, stack);
            }
            if (kind != Kernel)
                throw new ArgumentException($"no transport '{kind}'", nameof(kind));
            pair.Stack.Ip($"addr add {pair.StackAddress}/{pair.PrefixLength} dev {pair.StackIf}");
            pair.Stack.Exec($"ethtool -K {pair.StackIf} tx off tso off gso off gro off");
            return new TransportPair(kind, pair, new InNamespace(pair.StackNs, new KernelTransport()), null);
        }
        catch
        {
            pair.Dispose();
            throw;
        }
    }

    public string Kind { get; }

    public ITransport Transport { get; }

    /// <summary>The Onload stack, or null for the kernel transport.</summary>
    public OnloadStack? Stack { get; }

    public NamespacePair Namespaces => _pair;

    /// <summary>The kernel peer's namespace.</summary>
    public TestNamespace Peer => _pair.Kernel;

    public IPAddress PeerAddress => IPAddress.Parse(_pair.KernelAddress);

    public IPAddress LocalAddress => IPAddress.Parse(_pair.StackAddress);

    public IPEndPoint PeerEndPoint(int port) => new(PeerAddress, port);

    /// <summary>Starts a program in the peer's namespace and waits until it listens on <paramref name="port"/>.</summary>
    public NsProcess StartPeerServer(string protocol, int port, string program, params string[] args)
    {
        var p = _pair.Kernel.Start(program, args);
        string flag = protocol == "tcp" ? "-tln" : "-uln";
        Poll.Until(() => _pair.Kernel.Exec($"ss -H {flag}").Contains($":{port} ", StringComparison.Ordinal) || p.HasExited,
            TimeSpan.FromSeconds(10), $"{program} listening on {protocol} {port}");
        if (p.HasExited)
            NUnit.Framework.Assert.Fail($"{p.CommandLine} exited: {p.Stderr}");
        return p;
    }

    public async ValueTask DisposeAsync()
    {
        try
        {
            await Transport.DisposeAsync().ConfigureAwait(false);
        }
        finally
        {
            _pair.Dispose();
        }
    }

    /// <summary>
    /// Makes a kernel transport's sockets in a namespace: socket(2) takes the calling thread's namespace, so each
    /// call that makes one runs on a thread that joined <paramref name="ns"/> (accepted sockets are the listener's).
    /// </summary>
    private sealed class InNamespace(string ns, ITransport inner) : ITransport
    {
        public ValueTask<IPipeListener> ListenAsync(IPEndPoint local, int backlog = 512, CancellationToken cancellationToken = default) =>
            Netns.Netns.RunInNamespace(ns, () => inner.ListenAsync(local, backlog, cancellationToken));

        public ValueTask<IPipeConnection> ConnectAsync(IPEndPoint remote, CancellationToken cancellationToken = default) =>
            Netns.Netns.RunInNamespace(ns, () => inner.ConnectAsync(remote, cancellationToken));

        public ValueTask<IDatagramSocket> BindUdpAsync(IPEndPoint local, CancellationToken cancellationToken = default) =>
            Netns.Netns.RunInNamespace(ns, () => inner.BindUdpAsync(local, cancellationToken));

        public ValueTask DisposeAsync() => inner.DisposeAsync();
    }
}
