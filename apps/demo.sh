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
# Exits non-zero if ping lost a packet or an echo or the sink did not get its bytes intact.
#
# Needs root (network namespaces), iproute2, ethtool, iputils-ping, socat; `make demo` builds
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
READY_TIMEOUT=${READY_TIMEOUT:-10}

say() { printf '\n== %s\n' "$*"; }
die() { echo "demo: $*" >&2; exit 1; }

if [[ $(id -u) -ne 0 ]]; then
    die "must run as root: it creates network namespaces and a veth pair (try: sudo make demo)"
fi
for tool in ip ethtool ping socat; do
    command -v "$tool" >/dev/null || die "$tool not found (make deps installs it)"
done
[[ -x $ECHO_BIN ]] || die "$ECHO_BIN not found or not executable (run make first)"

workdir=$(mktemp -d "${TMPDIR:-/tmp}/oldemo.XXXXXX")
echo_log=$workdir/onload-echo.log
echo_pid=""

# Removes what this demo makes; also run first, to sweep what an earlier, killed run left.
sweep() {
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

if ((failed)); then
    say "demo FAILED"
    exit 1
fi
say "demo passed: 20/20 pings answered, UDP and TCP echoes intact, 50 MB into the TCP sink intact, onload-echo stopped cleanly"
