namespace Onload.Tests.Managed;

/// <summary>Small kernel-side peers, as python3 programs (python3 -c SCRIPT PORT ...).</summary>
internal static class PeerScripts
{
    /// <summary>Reads until the client's FIN, answers "got N\n" and closes: a half-close peer.</summary>
    public const string CountThenAnswer = """
        import socket, sys
        s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(('0.0.0.0', int(sys.argv[1]))); s.listen(8)
        while True:
            c, _ = s.accept(); n = 0
            while True:
                b = c.recv(65536)
                if not b: break
                n += len(b)
            c.sendall(b'got %d\n' % n); c.close()
        """;

    /// <summary>A UDP echo server.</summary>
    public const string UdpEcho = """
        import socket, sys
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('0.0.0.0', int(sys.argv[1])))
        while True:
            b, a = s.recvfrom(65536); s.sendto(b, a)
        """;

    /// <summary>A UDP client: sends each size to HOST PORT, checks the echo's bytes and sender, prints "ok N".</summary>
    public const string UdpClient = """
        import os, socket, sys
        host, port = sys.argv[1], int(sys.argv[2]); s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(5)
        for size in map(int, sys.argv[3:]):
            data = os.urandom(size); s.sendto(data, (host, port)); b, a = s.recvfrom(65536)
            assert b == data, 'echo of %d bytes differs' % size
            assert a == (host, port), 'reply from %s' % (a,)
            print('ok', size, flush=True)
        """;

    /// <summary>A line protocol: ECHO x → x, REV x → x reversed, LEN x → len(x), BYE → "bye" and our FIN; then it
    /// reads to the client's FIN and closes. One client at a time.</summary>
    public const string LineServer = """
        import socket, sys
        s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(('0.0.0.0', int(sys.argv[1]))); s.listen(8)
        while True:
            c, _ = s.accept(); f = c.makefile('rb')
            for line in f:
                cmd, _, arg = line.rstrip(b'\n').partition(b' ')
                if cmd == b'ECHO': c.sendall(arg + b'\n')
                elif cmd == b'REV': c.sendall(arg[::-1] + b'\n')
                elif cmd == b'LEN': c.sendall(b'%d\n' % len(arg))
                elif cmd == b'BYE':
                    c.sendall(b'bye\n'); c.shutdown(socket.SHUT_WR)
                else: c.sendall(b'?\n')
            f.close(); c.close()
        """;

    /// <summary>Per connection: reads a line; "RST" → closes with SO_LINGER 0 (a reset); "WAIT" → reads until the
    /// connection ends and prints how ("peer fin" or "peer reset").</summary>
    public const string ResetServer = """
        import socket, struct, sys
        s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(('0.0.0.0', int(sys.argv[1]))); s.listen(8)
        while True:
            c, _ = s.accept()
            try:
                line = c.makefile('rb').readline().strip()
                if line == b'RST':
                    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0)); c.close(); continue
                while c.recv(65536): pass
                print('peer fin', flush=True)
            except ConnectionResetError:
                print('peer reset', flush=True)
            c.close()
        """;
}
