#!/usr/bin/env bash
# The user-level stack answering the Linux kernel across a veth pair:
#
#   namespace oldemo-k (kernel)                 namespace oldemo-s (user-level stack)
#   oldemo-k0 10.99.0.1/24  <------ veth ------>  oldemo-s0, no kernel address;
#                                                 dist/bin/onload-echo owns 10.99.0.2/24
#                                                 through AF_PACKET, echoes UDP and TCP on port 7,
#                                                 sinks TCP on port 9
#
# From the kernel side: ping, a UDP and a TCP echo with socat, 50 MB of TCP into a sink (SHA-256 checked), and
# the neighbour entry the kernel learnt for the stack's address. Then onload-echo is stopped with SIGINT and prints its counters.
# Then driverlink mode: the stack side's kernel takes 10.99.0.2 itself, and onload-echo --interface accelerates
# only its own ports on that address through onload-driverd, which it starts on demand; the kernel keeps answering
# ping there, a 1 MB TCP echo goes through the stack, and the daemon leaves (detaching its XDP program) a second
# after onload-echo stops. Last, the product's main job: an unmodified iperf3 server run by onload-run, its
# connections on the stack (onload-stackdump shows them while the kernel's iperf3 client sends for 2 s).
# Exits non-zero if ping lost a packet or an echo or the sink did not get its bytes intact.
#
# Needs root (network namespaces), iproute2, ethtool, iputils-ping, socat, iperf3; `make demo` builds
# dist/ first. Environment: ECHO_BIN (default dist/bin/onload-echo), READY_TIMEOUT seconds (10).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

NS_K=oldemo-k
NS_S=oldemo-s
IF_K=oldemo-k0
IF_S=oldemo-s0
ADDR_K=10.99.0.1
ADDR_S=10.99.0.2
PREFIX=24
UDP_PORT=7
TCP_PORT=7
SINK_PORT=9
ECHO_BIN=${ECHO_BIN:-dist/bin/onload-echo}
DRIVERD_BIN=${DRIVERD_BIN:-dist/bin/onload-driverd}
READY_TIMEOUT=${READY_TIMEOUT:-10}

say() { printf '\n== %s\n' "$*"; }
die() { echo "demo: $*" >&2; exit 1; }

if [[ $(id -u) -ne 0 ]]; then
    die "must run as root: it creates network namespaces and a veth pair (try: sudo make demo)"
fi
for tool in ip ethtool ping socat iperf3; do
    command -v "$tool" >/dev/null || die "$tool not found (make deps installs it)"
done
[[ -x $ECHO_BIN ]] || die "$ECHO_BIN not found or not executable (run make first)"

workdir=$(mktemp -d "${TMPDIR:-/tmp}/oldemo.XXXXXX")
echo_log=$workdir/onload-echo.log
echo_pid=""

# Removes what this demo makes; also run first, to sweep what an earlier, killed run left.
sweep() {
    local ns pid
    for ns in "$NS_K" "$NS_S"; do
        # An onload-driverd started on demand (setsid: no child of ours) would keep the namespace alive.
        for pid in $(ip netns pids "$ns" 2>/dev/null); do
            kill -KILL "$pid" 2>/dev/null || true
        done
    done
    ip netns del "$NS_K" 2>/dev/null || true
    ip netns del "$NS_S" 2>/dev/null || true
    # A veth left in the root namespace (a run killed between creating and moving it).
    ip link del "$IF_K" 2>/dev/null || true
    ip link del "$IF_S" 2>/dev/null || true
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [[ -n $echo_pid ]] && kill -0 "$echo_pid" 2>/dev/null; then
        kill -TERM "$echo_pid" 2>/dev/null || true
        for _ in $(seq 20); do
            kill -0 "$echo_pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$echo_pid" 2>/dev/null || true
        wait "$echo_pid" 2>/dev/null || true
    fi
    sweep
    rm -rf "$workdir"
    exit "$rc"
}
trap cleanup EXIT
trap 'echo "demo: interrupted" >&2; exit 130' INT
trap 'echo "demo: terminated" >&2; exit 143' TERM

say "setting up namespaces $NS_K (kernel) and $NS_S (stack)"
sweep
ip netns add "$NS_K"
ip netns add "$NS_S"
ip link add "$IF_K" type veth peer name "$IF_S"
ip link set "$IF_K" netns "$NS_K"
ip link set "$IF_S" netns "$NS_S"

# Kernel side: an address, no IPv6 chatter, and no offloads, so that every frame the stack sees
# carries real checksums and is no larger than the MTU.
ip netns exec "$NS_K" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
ip -n "$NS_K" link set lo up
ip -n "$NS_K" addr add "$ADDR_K/$PREFIX" dev "$IF_K"
ip netns exec "$NS_K" ethtool -K "$IF_K" tx off tso off gso off gro off >/dev/null
ip -n "$NS_K" link set "$IF_K" up

# Stack side: up, with no kernel address; the user-level stack owns $ADDR_S.
ip netns exec "$NS_S" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
ip -n "$NS_S" link set lo up
ip -n "$NS_S" link set "$IF_S" up
ip -n "$NS_K" -brief addr show dev "$IF_K"
ip -n "$NS_S" -brief link show dev "$IF_S"

say "starting $ECHO_BIN in $NS_S"
# With job control on, the background job keeps SIGINT (a script's background jobs otherwise start
# with SIGINT and SIGQUIT ignored) and gets a process group of its own.
set -m
ip netns exec "$NS_S" "$ECHO_BIN" --vnic "af_packet:$IF_S" --addr "$ADDR_S/$PREFIX" --udp "$UDP_PORT" \
    --tcp "$TCP_PORT" --tcp-sink "$SINK_PORT" >"$echo_log" 2>&1 &
echo_pid=$!
set +m

deadline=$((SECONDS + READY_TIMEOUT))
until grep -q ready "$echo_log" 2>/dev/null; do
    if ! kill -0 "$echo_pid" 2>/dev/null; then
        wait "$echo_pid" && rc=0 || rc=$?
        echo_pid=""
        cat "$echo_log" >&2
        die "onload-echo exited (status $rc) before it was ready"
    fi
    if ((SECONDS >= deadline)); then
        cat "$echo_log" >&2
        die "onload-echo not ready after ${READY_TIMEOUT}s"
    fi
    sleep 0.05
done
cat "$echo_log"

failed=0

say "ping -c 20 -i 0.01 $ADDR_S (from $NS_K)"
# ping exits 0 when any reply came back: count them from its summary instead.
ping_out=$(ip netns exec "$NS_K" ping -c 20 -i 0.01 -W 1 "$ADDR_S" 2>&1 || true)
echo "$ping_out"
received=$(sed -n 's/.* \([0-9]*\) received.*/\1/p' <<<"$ping_out")
if [[ ${received:-0} -ne 20 ]]; then
    echo "demo: FAILED: ping: ${received:-0} of 20 replies" >&2
    failed=1
fi

say "UDP echo: 'hello' to $ADDR_S:$UDP_PORT with socat (from $NS_K)"
reply=$(echo hello | ip netns exec "$NS_K" socat -t 1 - "UDP:$ADDR_S:$UDP_PORT" || true)
printf 'sent:     %s\nreceived: %s\n' hello "${reply:-(nothing)}"
if [[ $reply != hello ]]; then
    echo "demo: FAILED: the UDP echo did not come back intact" >&2
    failed=1
fi

say "TCP echo: 1 MB through socat to $ADDR_S:$TCP_PORT and back (from $NS_K), compared by SHA-256"
blob=$(mktemp)
head -c 1000000 /dev/urandom >"$blob"
sent_sum=$(sha256sum <"$blob" | cut -d' ' -f1)
start_ns=$(date +%s%N)
back_sum=$(ip netns exec "$NS_K" socat -b 65536 -t 10 - "TCP:$ADDR_S:$TCP_PORT" <"$blob" | sha256sum | cut -d' ' -f1 || true)
elapsed_ms=$((($(date +%s%N) - start_ns) / 1000000))
printf 'sent:     %s
received: %s (%d ms)
' "$sent_sum" "$back_sum" "$elapsed_ms"
if [[ $back_sum != "$sent_sum" ]]; then
    echo "demo: FAILED: the TCP echo did not come back intact" >&2
    failed=1
fi

say "TCP bulk: 50 MB from the kernel into the stack's sink on $ADDR_S:$SINK_PORT"
head -c 50000000 /dev/urandom >"$blob"
sent_sum=$(sha256sum <"$blob" | cut -d' ' -f1)
start_ns=$(date +%s%N)
ip netns exec "$NS_K" socat -u -b 65536 - "TCP:$ADDR_S:$SINK_PORT" <"$blob" || true
deadline=$((SECONDS + 30))
until grep -q "sink received" "$echo_log" 2>/dev/null || ((SECONDS >= deadline)); do
    sleep 0.05
done
elapsed_ms=$((($(date +%s%N) - start_ns) / 1000000))
sink_line=$(grep "sink received" "$echo_log" | tail -1 || true)
echo "${sink_line:-(no report from the sink)}"
if [[ $sink_line != *"50000000 bytes sha256 $sent_sum"* ]]; then
    echo "demo: FAILED: the sink did not report the 50 MB intact" >&2
    failed=1
else
    echo "50 MB in $elapsed_ms ms: $((50000 * 8 / (elapsed_ms > 0 ? elapsed_ms : 1))) Mbit/s, SHA-256 equal at both ends"
fi
rm -f "$blob"

say "ip -n $NS_K neigh (the kernel's entry for the stack)"
ip -n "$NS_K" neigh show dev "$IF_K"

say "stopping onload-echo (SIGINT): its counters"
lines_before=$(wc -l <"$echo_log")
kill -INT "$echo_pid"
echo_rc=0
for _ in $(seq 50); do
    kill -0 "$echo_pid" 2>/dev/null || break
    sleep 0.1
done
if kill -0 "$echo_pid" 2>/dev/null; then
    echo "demo: FAILED: onload-echo still running 5s after SIGINT" >&2
    failed=1
else
    wait "$echo_pid" || echo_rc=$?
    echo_pid=""
    if ((echo_rc != 0)); then
        echo "demo: FAILED: onload-echo exited with status $echo_rc" >&2
        failed=1
    fi
fi
tail -n +"$((lines_before + 1))" "$echo_log"

say "driverlink mode: $NS_S's kernel takes $ADDR_S; onload-echo --interface $IF_S accelerates its ports there"
ip -n "$NS_S" addr add "$ADDR_S/$PREFIX" dev "$IF_S"
ip netns exec "$NS_S" ethtool -K "$IF_S" tx off tso off gso off gro off >/dev/null
dl_log=$workdir/onload-echo-driverlink.log
set -m
ip netns exec "$NS_S" env ONLOAD_DRIVERD="$(realpath "$DRIVERD_BIN")" ONLOAD_DRIVERD_GRACE=1 \
    ONLOAD_DRIVERD_LOG="$workdir/onload-driverd.log" "$ECHO_BIN" --interface "$IF_S" --tcp "$TCP_PORT" >"$dl_log" 2>&1 &
echo_pid=$!
set +m
deadline=$((SECONDS + READY_TIMEOUT))
until grep -q "onload-echo: ready" "$dl_log" 2>/dev/null; do
    kill -0 "$echo_pid" 2>/dev/null || die "onload-echo --interface exited before it was ready: $(cat "$dl_log")"
    ((SECONDS < deadline)) || die "onload-echo --interface not ready after ${READY_TIMEOUT}s"
    sleep 0.05
done
cat "$dl_log"
echo "onload-driverd (started on demand): $(grep -m1 "VNIC" "$workdir/onload-driverd.log" || true)"
ping_out=$(ip netns exec "$NS_K" ping -c 10 -i 0.01 -W 1 "$ADDR_S" 2>&1 || true)
echo "$ping_out" | tail -n 2
if [[ $ping_out != *"10 packets transmitted, 10 received"* ]]; then
    echo "demo: FAILED: the kernel did not answer every ping on its own address" >&2
    failed=1
fi
head -c 1000000 /dev/urandom >"$blob"
sent_sum=$(sha256sum <"$blob" | cut -d' ' -f1)
back_sum=$(ip netns exec "$NS_K" socat -b 65536 -t 10 - "TCP:$ADDR_S:$TCP_PORT" <"$blob" | sha256sum | cut -d' ' -f1 || true)
if [[ $back_sum != "$sent_sum" ]]; then
    echo "demo: FAILED: the 1 MB echo through driverlink came back different" >&2
    failed=1
else
    echo "1 MB echoed through the stack in driverlink mode, SHA-256 equal"
fi
rm -f "$blob"
kill -INT "$echo_pid"
wait "$echo_pid" 2>/dev/null || true
echo_pid=""
deadline=$((SECONDS + 10))
until [[ -z $(ip netns pids "$NS_S" 2>/dev/null) ]] || ((SECONDS >= deadline)); do
    sleep 0.1
done
tail -n 3 "$workdir/onload-driverd.log"
if [[ -n $(ip netns pids "$NS_S" 2>/dev/null) ]]; then
    echo "demo: FAILED: onload-driverd still running 10 s after its last client left" >&2
    failed=1
elif ip -n "$NS_S" -d link show dev "$IF_S" | grep -q "prog/xdp"; then
    echo "demo: FAILED: an XDP program is still attached after the daemon left" >&2
    failed=1
else
    echo "onload-driverd left a second after its last client, and nothing is attached to $IF_S"
fi

say "onload-run: an unmodified iperf3 server in $NS_S on the stack, a kernel iperf3 client in $NS_K for 2 s"
passive_opens() { ip netns exec "$NS_S" awk '/^Tcp:/ { if (!names) { for (i = 1; i <= NF; i++) col[$i] = i; names = 1 } else print $col["PassiveOpens"] }' /proc/net/snmp; }
opens_before=$(passive_opens)
run_log=$workdir/iperf3-server.log
set -m
ip netns exec "$NS_S" env ONLOAD_DRIVERD_GRACE=1 ONLOAD_DRIVERD_LOG="$workdir/onload-driverd-run.log" \
    dist/bin/onload-run --interface "$IF_S" iperf3 -s -1 -p 5201 -B "$ADDR_S" >"$run_log" 2>&1 &
echo_pid=$!
set +m
# Its listener shows on its stack (iperf3's own "listening" line waits in its stdout buffer).
deadline=$((SECONDS + READY_TIMEOUT))
until ip netns exec "$NS_S" dist/bin/onload-stackdump 2>/dev/null | grep -q LISTEN; do
    kill -0 "$echo_pid" 2>/dev/null || die "iperf3 under onload-run exited before it listened: $(cat "$run_log")"
    ((SECONDS < deadline)) || die "iperf3 under onload-run not listening on its stack after ${READY_TIMEOUT}s: $(cat "$run_log")"
    sleep 0.05
done
client_log=$workdir/iperf3-client.log
ip netns exec "$NS_K" iperf3 -c "$ADDR_S" -p 5201 -t 2 -f m >"$client_log" 2>&1 &
client_pid=$!
# While the test runs, the server's sockets are on its stack: onload-stackdump reads them from the running process.
deadline=$((SECONDS + READY_TIMEOUT))
dump=""
until [[ $dump == *ESTAB* ]] || ((SECONDS >= deadline)); do
    dump=$(ip netns exec "$NS_S" dist/bin/onload-stackdump 2>&1 || true)
    sleep 0.2
done
echo "$dump" | sed -n '1,/UDP:/p' | grep -v "UDP:"
client_rc=0
wait "$client_pid" || client_rc=$?
wait "$echo_pid" 2>/dev/null || true
echo_pid=""
grep -E "sender|receiver" "$client_log" || true
if ((client_rc != 0)) || ! grep -q receiver "$client_log"; then
    echo "demo: FAILED: the kernel iperf3 client against the accelerated server: $(tail -n 3 "$client_log")" >&2
    failed=1
elif [[ $dump != *ESTAB* ]]; then
    echo "demo: FAILED: onload-stackdump never showed iperf3's connections on its stack" >&2
    failed=1
elif [[ $(passive_opens) != "$opens_before" ]]; then
    echo "demo: FAILED: the stack side's kernel accepted a connection: iperf3 was not accelerated" >&2
    failed=1
else
    echo "iperf3 ran unmodified on the stack: its connections were the stack's (onload-stackdump), none the kernel's"
fi

if ((failed)); then
    say "demo FAILED"
    exit 1
fi
say "demo passed: 20/20 pings answered, UDP and TCP echoes intact, 50 MB into the TCP sink intact, onload-echo stopped cleanly; in driverlink mode the kernel kept its address and the stack echoed its port; an unmodified iperf3 ran on the stack under onload-run"
