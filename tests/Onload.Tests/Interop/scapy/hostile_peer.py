#!/usr/bin/python3
"""A hostile TCP/UDP peer for HostilePeerInteropTests: one scenario against one target (the user-level stack, or a
kernel socket for the same script), from the kernel side of a namespace pair. It prints one JSON line: what it
saw (every TCP segment from the target, with times relative to the script's start) and the marks it made.

The namespace's kernel must not answer the target itself (the test drops its input to our port with nftables).
Every wait has a deadline; the script exits non-zero with a message on stderr when one passes.
"""
import argparse
import json
import queue
import sys
import threading
import time

from scapy.all import IP, TCP, UDP, ICMP, Raw, AsyncSniffer, conf
from scapy.supersocket import L3RawSocket

conf.verb = 0


class Peer:
    def __init__(self, a):
        self.a = a
        self.sock = L3RawSocket()
        self.q = queue.Queue()
        self.seen = []
        self.marks = {}
        self.mark_times = {}
        self.t0 = time.time()  # the clock of the sniffer's capture stamps
        started = threading.Event()
        target, port, sport = a.target, a.port, a.sport

        def ours(p):
            return IP in p and p[IP].src == target and (
                (TCP in p and p[TCP].sport == port and p[TCP].dport == sport) or ICMP in p)

        self.sniffer = AsyncSniffer(iface=a.iface, lfilter=ours, prn=self.q.put, store=False,
                                    started_callback=started.set)
        self.sniffer.start()
        if not started.wait(10):
            fail("the sniffer did not start")
        self.isn = 1000
        self.snd_nxt = self.isn
        self.irs = None
        self.rcv_nxt = None

    def now(self):
        return round(time.time() - self.t0, 6)

    def mark(self, name):
        self.marks[name] = len(self.seen)
        self.mark_times[name] = self.now()

    def send(self, pkt):
        self.sock.send(pkt)

    def tcp(self, flags, seq=None, ack=None, data=b"", window=65535, options=None):
        seq = self.snd_nxt if seq is None else seq
        ack = (self.rcv_nxt or 0) if ack is None else ack
        pkt = IP(dst=self.a.target) / TCP(sport=self.a.sport, dport=self.a.port, flags=flags, seq=seq, ack=ack,
                                           window=window, options=options or [])
        if data:
            pkt = pkt / Raw(data)
        return pkt

    def next_segment(self, deadline):
        """The next TCP segment from the target (None at the deadline), recorded in seen."""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                p = self.q.get(timeout=left)
            except queue.Empty:
                return None
            if TCP not in p:
                continue
            t = p[TCP]
            data = bytes(t.payload) if t.payload else b""
            if Raw in t:
                data = bytes(t[Raw].load)
            # Trailing Ethernet padding is not payload: the IP length says what is.
            data = data[:max(0, p[IP].len - p[IP].ihl * 4 - t.dataofs * 4)]
            rel_seq = (t.seq - self.irs) & 0xffffffff if self.irs is not None else 0
            rel_ack = (t.ack - self.isn) & 0xffffffff
            # When it was captured, not when this loop got to it: a burst waits in the queue.
            s = {"t": round(float(p.time) - self.t0, 6), "seq": rel_seq, "ack": rel_ack, "flags": str(t.flags), "win": t.window,
                 "len": len(data), "data": data.hex()}
            self.seen.append(s)
            return s, t, data

    def handshake(self, mss=1460, window=65535, fragment_syn=False):
        opts = [("MSS", mss)] if mss is not None else []
        syn = self.tcp("S", window=window, options=opts)
        if fragment_syn:
            send_fragments(self, syn, 8)
        else:
            self.send(syn)
        deadline = time.monotonic() + 5
        while True:
            got = self.next_segment(deadline)
            if got is None:
                fail("no SYN-ACK")
            s, t, _ = got
            if "S" in str(t.flags) and "A" in str(t.flags):
                self.irs = t.seq
                s["seq"] = 0
                break
        self.snd_nxt = self.isn + 1
        self.rcv_nxt = (self.irs + 1) & 0xffffffff
        self.send(self.tcp("A", window=window))

    def rel(self, offset):
        return (self.isn + 1 + offset) & 0xffffffff

    def drain(self, seconds):
        """Records what comes for a while (no answer)."""
        deadline = time.monotonic() + seconds
        while self.next_segment(deadline) is not None:
            pass

    def receive_all(self, deadline_s, window=65535, on_segment=None):
        """Acknowledges the target's data in order until its FIN, which it acknowledges too. Returns the bytes."""
        got = bytearray()
        fin = False
        deadline = time.monotonic() + deadline_s
        while not fin:
            seg = self.next_segment(deadline)
            if seg is None:
                fail("the target's FIN did not come (got %d bytes)" % len(got))
            s, t, data = seg
            if on_segment is not None and on_segment(s, t, data):
                continue
            if t.seq == self.rcv_nxt and data:
                got += data
                self.rcv_nxt = (self.rcv_nxt + len(data)) & 0xffffffff
            if "F" in str(t.flags) and (t.seq + len(data)) & 0xffffffff == self.rcv_nxt:
                self.rcv_nxt = (self.rcv_nxt + 1) & 0xffffffff
                fin = True
            if data or "F" in str(t.flags):
                self.send(self.tcp("A", window=window))
        return bytes(got)

    def close(self, deadline_s=5):
        """Sends our FIN after our data and waits until the target's FIN is acknowledged."""
        self.send(self.tcp("FA"))
        self.snd_nxt += 1
        self.receive_all(deadline_s)

    def close_after_fin(self):
        """After the target's FIN: ours, and wait (3 s at most) for its ACK; the target's application has closed."""
        self.send(self.tcp("FA"))
        self.snd_nxt += 1
        deadline = time.monotonic() + 3
        while True:
            seg = self.next_segment(deadline)
            if seg is None or "A" in str(seg[1].flags) and (seg[1].ack - self.snd_nxt) & 0xffffffff == 0:
                return

    def result(self, **extra):
        self.sniffer.stop()
        out = {"seen": self.seen, "marks": self.marks, "mark_times": self.mark_times}
        out.update(extra)
        print(json.dumps(out), flush=True)


def fail(why):
    print(why, file=sys.stderr, flush=True)
    sys.exit(2)


def send_fragments(peer, pkt, size):
    """pkt in IPv4 fragments carrying size bytes of its payload each (the last what is left)."""
    ip = IP(bytes(pkt[IP]))  # addresses and checksums filled in
    payload = bytes(ip.payload)
    for off in range(0, len(payload), size):
        piece = payload[off:off + size]
        more = off + size < len(payload)
        peer.send(IP(dst=ip.dst, id=ip.id or 4242, proto=ip.proto, flags="MF" if more else 0, frag=off // 8) / Raw(piece))


# Scenarios -----------------------------------------------------------------------------------------------------

OVERLAPS = [(0, "A", 100), (200, "C", 100), (250, "D", 100), (180, "E", 80), (50, "B", 100), (150, "F", 50),
            (400, "G", 50), (400, "H", 80), (410, "I", 20), (350, "J", 50)]


def overlap(p):
    """Overlapping retransmissions with other bytes; the SYN itself in 8-byte fragments. The target's application
    reads to the end and closes."""
    p.handshake(fragment_syn=True)
    for offset, fill, length in OVERLAPS:
        p.mark("%d%s" % (offset, fill))
        p.send(p.tcp("PA", seq=p.rel(offset), data=fill.encode() * length))
        p.drain(0.05)
    p.snd_nxt = p.rel(480)
    p.close()
    p.result()


def ack_unsent(p):
    """Data whose ACK acknowledges what the target never sent, then the same sequence with a good ACK."""
    p.handshake()
    p.mark("bad")
    p.send(p.tcp("PA", ack=(p.rcv_nxt + 100000) & 0xffffffff, data=b"X" * 10))
    p.drain(0.3)
    p.mark("good")
    p.send(p.tcp("PA", data=b"Y" * 10))
    p.snd_nxt = p.rel(10)
    p.drain(0.1)
    p.close()
    p.result()


def tiny_mss(p):
    """A SYN offering MSS a.mss and nothing else; the target's application sends its bytes and closes."""
    p.handshake(mss=p.a.mss)
    data = p.receive_all(15)
    p.close_after_fin()
    p.result(received=data.hex())


def icmp_quote(p):
    """While the target's first flight is unacknowledged: ICMP type a.type code a.code ("fragmentation needed" with
    MTU a.mtu, or another error) quoting another connection, then our connection with a sequence number never sent,
    then our connection as it is. Then we take the whole transfer."""
    p.handshake()
    deadline = time.monotonic() + 5
    first = None
    while first is None:
        seg = p.next_segment(deadline)
        if seg is None:
            fail("no data from the target")
        if seg[2]:
            first = seg[1]

    def quote(sport, seq):
        inner = IP(src=p.a.target, dst=p.a.me, flags="DF", len=1500, proto=6) / TCP(
            sport=p.a.port, dport=sport, seq=seq, ack=first.ack, flags="A")
        icmp = ICMP(type=p.a.type, code=p.a.code, nexthopmtu=p.a.mtu) if p.a.type == 3 else ICMP(type=p.a.type, code=p.a.code)
        return IP(dst=p.a.target) / icmp / Raw(bytes(inner)[:28])

    p.mark("other")
    p.send(quote(p.a.sport + 1, first.seq))
    p.mark("outside")
    p.send(quote(p.a.sport, (first.seq + 10_000_000) & 0xffffffff))
    p.drain(0.05)
    p.mark("valid")
    p.send(quote(p.a.sport, first.seq))
    data = p.receive_all(15)
    p.close_after_fin()
    p.result(received=data.hex())


def refuse_connect(p):
    """The target connects to us; its SYN is answered by ICMP type a.type code a.code quoting it: first with a
    sequence number it never sent, then as it is."""
    deadline = time.monotonic() + 5
    while True:
        seg = p.next_segment(deadline)
        if seg is None:
            fail("no SYN from the target")
        if "S" in str(seg[1].flags):
            syn = seg[1]
            break
    inner = IP(src=p.a.target, dst=p.a.me, proto=6) / TCP(sport=syn.sport, dport=syn.dport, seq=syn.seq, flags="S")
    wrong = IP(src=p.a.target, dst=p.a.me, proto=6) / TCP(sport=syn.sport, dport=syn.dport, seq=syn.seq + 5, flags="S")
    p.mark("outside")
    p.send(IP(dst=p.a.target) / ICMP(type=p.a.type, code=p.a.code) / Raw(bytes(wrong)[:28]))
    p.drain(0.2)
    p.mark("valid")
    p.send(IP(dst=p.a.target) / ICMP(type=p.a.type, code=p.a.code) / Raw(bytes(inner)[:28]))
    p.drain(0.3)
    p.result()


def zero_window(p):
    """The target's application sends its bytes; we take the first segment, then hold the window at zero for a.hold
    seconds, answering every probe, then open it and take the rest."""
    p.handshake(mss=1000, window=1000)
    probes = []
    opened = [False]
    t_zero = [None]

    def on_segment(s, t, data):
        if opened[0]:
            return False
        if t_zero[0] is None:
            if data and t.seq == p.rcv_nxt:
                p.rcv_nxt = (p.rcv_nxt + len(data)) & 0xffffffff
                p.send(p.tcp("A", window=0))
                t_zero[0] = time.monotonic()
                p.mark("zero")
            return True
        if s["t"] >= p.mark_times["zero"]:  # not a segment of the flight, sent before the window closed
            probes.append(s["t"])
        p.send(p.tcp("A", window=0))
        if time.monotonic() - t_zero[0] >= p.a.hold:
            opened[0] = True
            p.mark("open")
            p.send(p.tcp("A", window=65535))
        return True

    # Probes come at backed-off intervals: if none comes when the hold is over, open anyway.
    def opener():
        while not opened[0]:
            time.sleep(0.05)
            if t_zero[0] is not None and time.monotonic() - t_zero[0] >= p.a.hold + 0.5 and not opened[0]:
                opened[0] = True
                p.mark("open")
                p.send(p.tcp("A", window=65535))
    threading.Thread(target=opener, daemon=True).start()
    data = p.receive_all(p.a.hold + 20, on_segment=on_segment)
    p.close_after_fin()
    first = bytes.fromhex(p.seen[[i for i, s in enumerate(p.seen) if s["len"] > 0][0]]["data"])
    p.result(received=(first + data).hex(), probes=probes)


def shrink(p):
    """We offer 8000 bytes, take the target's first 1000 and retract the right edge to 3000 for half a second,
    then open the window and take the rest."""
    p.handshake(mss=1000, window=8000)
    state = {"shrunk": None, "opened": False}

    def on_segment(s, t, data):
        if state["opened"]:
            return False
        if state["shrunk"] is None:
            if data and t.seq == p.rcv_nxt:
                p.first = bytes(data)
                p.rcv_nxt = (p.rcv_nxt + len(data)) & 0xffffffff
                p.send(p.tcp("A", window=2000))  # right edge 1000 + 2000, where it was 8000
                state["shrunk"] = time.monotonic()
                p.mark("shrunk")
            return True
        if time.monotonic() - state["shrunk"] >= 0.5:
            state["opened"] = True
        return True

    def opener():
        while state["shrunk"] is None or time.monotonic() - state["shrunk"] < 0.5:
            time.sleep(0.02)
        state["opened"] = True
        p.mark("open")
        p.send(p.tcp("A", window=65535))
    threading.Thread(target=opener, daemon=True).start()
    # From the mark on we acknowledge from 1000: what we got in [1000, 8000) before it is dropped as a receiver
    # that shrank its window may; the target sends it again.
    data = p.receive_all(20, on_segment=on_segment)
    p.close_after_fin()
    p.result(received=(p.first + data).hex())


def fragments(p):
    """UDP datagrams in hostile fragments to the target's port: each is tagged; the application reports which came
    and with what bytes."""
    ident = [7000]

    def frags(pieces, label):
        ident[0] += 1
        p.mark(label)
        for off, data, more in pieces:
            p.send(IP(dst=p.a.target, id=ident[0], proto=17, flags="MF" if more else 0, frag=off // 8) / Raw(data))
        time.sleep(0.02)

    def udp(payload):
        return bytes(IP(src=p.a.me, dst=p.a.target) / UDP(sport=p.a.sport, dport=p.a.port) / Raw(payload))[20:]

    tiny = udp(b"tiny-" + b"t" * 59)  # 72 bytes: nine 8-byte fragments
    frags([(o, tiny[o:o + 8], o + 8 < len(tiny)) for o in range(0, len(tiny), 8)], "tiny")
    # Overlapping with other bytes: [0, 24) then [16, 40) partly over it.
    a = udp(b"ovl1-" + b"a" * 35)
    b = bytearray(a)
    b[16:40] = b"b" * 24
    frags([(0, a[:24], True), (16, bytes(b[16:40]), True), (40, a[40:48], False)], "overlap")
    # A copy inside a run we hold, with other bytes: Linux ignores it as a duplicate.
    c = udp(b"dup1-" + b"c" * 35)
    frags([(0, c[:8], True), (8, c[8:16], True), (16, c[16:24], True), (8, b"d" * 8, True), (24, c[24:48], False)], "inside")
    # Inside the run but straddling two fragments of it.
    e = udp(b"dup2-" + b"e" * 35)
    frags([(0, e[:8], True), (8, e[8:16], True), (16, e[16:24], True), (8, b"f" * 16, True), (24, e[24:48], False)], "straddle")
    # The last fragment first, then the rest in order.
    g = udp(b"back-" + b"g" * 35)
    frags([(40, g[40:48], False), (0, g[:16], True), (16, g[16:40], True)], "reverse")
    frags([(0, udp(b"end"), False)], "end")
    p.result()


SCENARIOS = {"overlap": overlap, "ack-unsent": ack_unsent, "tiny-mss": tiny_mss, "icmp-quote": icmp_quote,
             "refuse-connect": refuse_connect, "zero-window": zero_window, "shrink": shrink, "fragments": fragments}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("scenario", choices=SCENARIOS)
    ap.add_argument("--iface", required=True)
    ap.add_argument("--me", required=True)
    ap.add_argument("--target", required=True)
    ap.add_argument("--port", type=int, required=True, help="the target's port")
    ap.add_argument("--sport", type=int, required=True, help="ours")
    ap.add_argument("--mss", type=int, default=1460)
    ap.add_argument("--mtu", type=int, default=1000)
    ap.add_argument("--type", type=int, default=3)
    ap.add_argument("--code", type=int, default=3)
    ap.add_argument("--hold", type=float, default=4.0)
    a = ap.parse_args()
    p = Peer(a)
    print("ready", file=sys.stderr, flush=True)
    SCENARIOS[a.scenario](p)


if __name__ == "__main__":
    main()
