#!/usr/bin/env bash
# TCP: the Linux kernel against the user-level stack over one veth pair, all from one run.
#
#   namespace olp-k (kernel servers)                  namespace olp-c (clients)
#   olp-k0 10.87.0.1/24  sockperf, iperf3, socat,  <- veth ->  olp-c0 10.87.0.2/24  the kernel's client address
#                        tcp_crr servers                              10.87.0.3     the stack (AF_PACKET rows)
#                                                                             10.87.0.4     the stack (AF_XDP rows)
#
#   ping-pong, 64 B messages, TCP_NODELAY, one in flight, half round trip (µs):
#     a  kernel -> kernel: sockperf ping-pong --tcp -> sockperf server --tcp (both block in the kernel)
#     b  stack AF_PACKET, busy-polling -> the same sockperf server        (onload-pingpong --tcp --sockperf)
#     c  stack AF_XDP, busy-polling -> the same sockperf server
#   bulk throughput, one connection, for the row's time (Gbit/s):
#     d  kernel -> kernel: iperf3 -> iperf3 -s
#     e  stack AF_PACKET, busy-polling -> socat sink (reads into /dev/null, closes at the end of the stream)
#     f  stack AF_XDP, busy-polling -> socat sink
#     g  reference: kernel -> kernel, iperf3, with veth offloads ON (TSO/GSO/GRO, checksum): what the kernel
#        gets from 64 KiB super-frames the stack does not use
#   connection set-up rate: connect, 64 B request, 64 B reply, the server closes, close (connections/s):
#     h  kernel -> kernel: tcp_crr client -> tcp_crr server (perf/tcp_crr.c, blocking calls)
#     i  stack AF_PACKET, busy-polling -> the same tcp_crr server  (onload-pingpong --tcp --connect-rate)
#     j  stack AF_XDP, busy-polling -> the same tcp_crr server
# Ratios: each stack row against its kernel row (a, d, h). Offloads are OFF on both veth ends for every row but g
# (the stack computes its own checksums and sends MTU-sized segments; the kernel then does likewise).
# Clients run on CPU 0, servers and sinks on CPU 1 (taskset). A row whose VNIC kind this build of onload-pingpong
# cannot open prints "skipped" and the run carries on.
#
# Results: a Markdown table on stdout and in perf/results/tcp.md, and perf/results/tcp.json.
# Needs root (namespaces, AF_PACKET, AF_XDP), iproute2, ethtool, taskset, gcc; installs sockperf, iperf3 and socat
# if missing. Cleans up on exit, failure and Ctrl-C: kills what it started (by pid) and deletes its namespaces;
# sweeps what an earlier, killed run left first. Exits non-zero if a row that should have run failed.
#
# Usage: perf/tcp.sh [--quick] [--seconds N] [--out DIR]
#   --quick      2 s per row (make bench-quick)
#   --seconds N  measuring time per row (default 10; quick 2)
#   --out DIR    where tcp.md and tcp.json go (default perf/results)
# Environment: PINGPONG (default dist/bin/onload-pingpong), CLIENT_CPU (0), SERVER_CPU (1).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=perf/lib.sh
source perf/lib.sh

NAME=tcp
# olp: a prefix of its own (the tests sweep olt, theirs).
name_veth_pair olp
NET=10.87.0
PREFIX=24
ADDR_K=$NET.1          # kernel, server side
ADDR_C=$NET.2          # kernel, client side
ADDR_STACK=$NET.3      # the stack's address on olp-c0, AF_PACKET rows
ADDR_STACK_XDP=$NET.4  # and AF_XDP rows: see stack_addr
PORT_PP=12111          # sockperf server --tcp
PORT_IPERF=12201       # iperf3 -s
PORT_SINK=12202        # socat sink, one per stack row
PORT_CRR=12301         # tcp_crr server
SIZE=64

parse_args -- "$@"

check_host bench-tcp ip ethtool taskset ss gcc
install_missing sockperf iperf3 socat

set_pinning "clients on CPU $CLIENT_CPU, servers and sinks on CPU $SERVER_CPU (taskset)"
mkdir -p "$out"
start_workdir

# ---------------------------------------------------------------------------------------------
# Results: one entry per row. VALUE is the row's main figure (median µs, Gbit/s, connections/s).

declare -A R_STATUS R_NOTE R_VALUE R_MEDIAN R_P99 R_P999 R_MAX R_COUNT R_EXTRA
declare -A ROW_DESC=(
    [a]="kernel → kernel (sockperf --tcp → sockperf server --tcp)"
    [b]="stack AF_PACKET, busy-polling → kernel sockperf server --tcp"
    [c]="stack AF_XDP, busy-polling → kernel sockperf server --tcp"
    [d]="kernel → kernel (iperf3 → iperf3 -s)"
    [e]="stack AF_PACKET, busy-polling → kernel socat sink"
    [f]="stack AF_XDP, busy-polling → kernel socat sink"
    [g]="reference: kernel → kernel (iperf3), veth offloads ON"
    [h]="kernel → kernel (tcp_crr client → tcp_crr server)"
    [i]="stack AF_PACKET, busy-polling → kernel tcp_crr server"
    [j]="stack AF_XDP, busy-polling → kernel tcp_crr server"
)
declare -A ROW_BASE=([b]=a [c]=a [e]=d [f]=d [g]=d [i]=h [j]=h)
# Runs a client in olp-c on CPU $CLIENT_CPU and waits for it; returns its status, its output in $workdir/KEY.log.
run_client() {  # key command...
    local key=$1
    shift
    echo "row $key: $*"
    start_bg "$workdir/$key.log" ip netns exec "$NS_C" "${pin_client[@]}" "$@"
    local rc=0
    wait_for "$last_pid" $((seconds + 60)) || rc=$?
    sed 's/^/    /' "$workdir/$key.log"
    return "$rc"
}

# One address per backend. Each onload-pingpong process draws new ISN and timestamp keys, and the kernel server
# holds TIME_WAIT for every connection of row i: a SYN of row j from the same address reusing one of those ports
# would carry an older timestamp, be refused (RFC 7323 PAWS) and wait a 1 s SYN retransmission.
stack_addr() { [[ $1 == af_xdp:* ]] && echo "$ADDR_STACK_XDP" || echo "$ADDR_STACK"; }

pingpong() {  # key spec args...: onload-pingpong on the stack's address in olp-c
    local key=$1 spec=$2
    shift 2
    run_client "$key" "$PINGPONG" --vnic "$spec" --addr "$(stack_addr "$spec")/$PREFIX" --label "$key" \
        --json "$workdir/$key.json" "$@"
}

# --- ping-pong

sockperf_row() {  # key
    local key=$1
    if ! run_client "$key" sockperf ping-pong --tcp -i "$ADDR_K" -p "$PORT_PP" -m "$SIZE" -t "$seconds"; then
        record_fail "$key" "sockperf ping-pong --tcp failed ($(tail -n 2 "$workdir/$key.log" | tr '\n' ' '))"
        return 0
    fi
    if ! read_sockperf "$workdir/$key.log"; then
        record_fail "$key" "could not read sockperf's percentiles"
        return 0
    fi
    R_STATUS[$key]=ok; R_VALUE[$key]=$sp_median; R_P99[$key]=$sp_p99; R_P999[$key]=$sp_p999; R_MAX[$key]=$sp_max
    R_COUNT[$key]=$sp_samples; R_EXTRA[$key]="errors 0"
}

stack_pingpong_row() {  # key kind
    local key=$1 kind=$2 json=$workdir/$1.json
    have_kind "$kind" || { record_skip "$key" "$kind backend not built"; return 0; }
    if ! pingpong "$key" "$kind:$IF_C" --tcp --sockperf --server "$ADDR_K:$PORT_PP" --size "$SIZE" --warmup 2000 \
        --seconds "$seconds"; then
        record_fail "$key" "onload-pingpong --tcp failed ($(tail -n 1 "$workdir/$key.log"))"
        return 0
    fi
    [[ -s $json ]] || { record_fail "$key" "onload-pingpong wrote no results"; return 0; }
    R_STATUS[$key]=ok; R_VALUE[$key]=$(json_field "$json" median); R_P99[$key]=$(json_field "$json" p99)
    R_P999[$key]=$(json_field "$json" p99_9); R_MAX[$key]=$(json_field "$json" max)
    R_COUNT[$key]=$(json_field "$json" samples)
    R_EXTRA[$key]="errors $(json_field "$json" errors), late $(json_field "$json" lost)"
}

# --- bulk throughput

iperf3_row() {  # key
    local key=$1
    if ! run_client "$key" iperf3 -c "$ADDR_K" -p "$PORT_IPERF" -t "$seconds" -f m; then
        record_fail "$key" "iperf3 failed ($(tail -n 2 "$workdir/$key.log" | tr '\n' ' '))"
        return 0
    fi
    read_iperf3 "$workdir/$key.log" || { record_fail "$key" "could not read iperf3's receiver line"; return 0; }
    R_STATUS[$key]=ok; R_VALUE[$key]=$ip_gbit; R_COUNT[$key]=$ip_moved; R_EXTRA[$key]="retransmitted $ip_retr"
}

stack_stream_row() {  # key kind
    local key=$1 kind=$2 json=$workdir/$1.json sink_pid
    have_kind "$kind" || { record_skip "$key" "$kind backend not built"; return 0; }
    # One socat per row: it reads everything into /dev/null and exits at the end of the stream, closing.
    kernel_server "$key-sink" tcp "$PORT_SINK" socat -u -b 131072 "TCP-LISTEN:$PORT_SINK,bind=$ADDR_K,reuseaddr" OPEN:/dev/null
    sink_pid=$last_pid
    if ! pingpong "$key" "$kind:$IF_C" --tcp --stream --server "$ADDR_K:$PORT_SINK" --seconds "$seconds"; then
        record_fail "$key" "onload-pingpong --tcp --stream failed ($(tail -n 1 "$workdir/$key.log"))"
        stop_pid "$sink_pid"
        return 0
    fi
    stop_pid "$sink_pid"
    [[ -s $json ]] || { record_fail "$key" "onload-pingpong wrote no results"; return 0; }
    R_STATUS[$key]=ok; R_VALUE[$key]=$(json_field "$json" gbit_per_s)
    R_COUNT[$key]=$(stream_moved "$json")
    R_EXTRA[$key]="retransmitted $(json_field "$json" retransmitted)"
}

# --- connection set-up rate

crr_row() {  # key
    local key=$1 json=$workdir/$1.json
    if ! run_client "$key" "$workdir/tcp_crr" client "$ADDR_K" "$PORT_CRR" "$SIZE" "$seconds" 100 "$json"; then
        record_fail "$key" "tcp_crr client failed ($(tail -n 1 "$workdir/$key.log"))"
        return 0
    fi
    crr_record "$key" "$json"
}

stack_crr_row() {  # key kind
    local key=$1 kind=$2
    have_kind "$kind" || { record_skip "$key" "$kind backend not built"; return 0; }
    if ! pingpong "$key" "$kind:$IF_C" --tcp --connect-rate --server "$ADDR_K:$PORT_CRR" --size "$SIZE" --warmup 100 \
        --seconds "$seconds"; then
        record_fail "$key" "onload-pingpong --tcp --connect-rate failed ($(tail -n 1 "$workdir/$key.log"))"
        return 0
    fi
    crr_record "$key" "$workdir/$key.json"
}

crr_record() {  # key json
    local key=$1 json=$2
    [[ -s $json ]] || { record_fail "$key" "no results written"; return 0; }
    R_STATUS[$key]=ok; R_VALUE[$key]=$(json_field "$json" per_second); R_P99[$key]=$(json_field "$json" p99)
    R_MEDIAN[$key]=$(json_field "$json" median); R_MAX[$key]=$(json_field "$json" max)
    R_COUNT[$key]=$(json_field "$json" connections); R_EXTRA[$key]="errors $(json_field "$json" errors)"
}

# ---------------------------------------------------------------------------------------------
say "setting up namespaces $NS_K (kernel servers) and $NS_C (clients), veth $IF_K <-> $IF_C"
gcc -std=c11 -O2 -Wall -Wextra -Werror -o "$workdir/tcp_crr" perf/tcp_crr.c
make_veth_pair

say "starting kernel servers in $NS_K on CPU $SERVER_CPU (blocking calls)"
kernel_server sockperf-server tcp "$PORT_PP" sockperf server --tcp -i "$ADDR_K" -p "$PORT_PP"
kernel_server iperf3-server tcp "$PORT_IPERF" iperf3 -s -B "$ADDR_K" -p "$PORT_IPERF"
kernel_server crr-server tcp "$PORT_CRR" "$workdir/tcp_crr" server "$ADDR_K" "$PORT_CRR" "$SIZE"
echo "VNIC kinds in $PINGPONG: $("$PINGPONG" --list-kinds | tr '\n' ' ')"

started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
say "ping-pong, $SIZE B, $seconds s per row"
sockperf_row a
stack_pingpong_row b af_packet
stack_pingpong_row c af_xdp
say "bulk throughput, one connection, $seconds s per row, offloads off"
iperf3_row d
stack_stream_row e af_packet
stack_stream_row f af_xdp
say "connection set-up rate, $SIZE B each way, $seconds s per row"
crr_row h
stack_crr_row i af_packet
stack_crr_row j af_xdp
say "reference: bulk throughput kernel -> kernel with veth offloads on"
offloads on
iperf3_row g
offloads off
load_end=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------------------------------------
# The report.

not_ok() { echo "| $1 | ${ROW_DESC[$1]} | ${R_STATUS[$1]}: ${R_NOTE[$1]//|/\\|} |"; }
base_ratio() {  # key field-array-name
    local key=$1 base=${ROW_BASE[$1]:-}
    local -n field=$2
    [[ -n $base && ${R_STATUS[$base]:-} == ok ]] && ratio "${field[$key]}" "${field[$base]}"
    return 0
}

machine_facts
md=$workdir/tcp.md
{
    echo "# TCP: kernel against the stack over one veth pair"
    echo
    echo "One run of \`perf/tcp.sh$( ((quick)) && echo " --quick")\`, $started: Linux $kernel, $cpu, $ncpu cores (a VM);"
    echo "load average $load_start at the start, $load_end at the end. $seconds s per row. Pinning: $pinning."
    echo "Offloads: OFF on both veth ends (tx checksum, TSO, GSO, GRO) for every row but g, so both stacks send"
    echo "MTU-sized (1500 B) frames with checksums computed in software; the stack has no offloads of its own."
    echo "Kernel servers and sinks block in the kernel; stack clients busy-poll (never sleep)."
    echo
    echo "## Ping-pong, $SIZE B messages, TCP_NODELAY, half round trip (µs)"
    echo
    echo "| row | client → server | median | p99 | p99.9 | max | samples | median ÷ a | p99 ÷ a | notes |"
    echo "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
    for r in a b c; do
        if [[ ${R_STATUS[$r]:-} == ok ]]; then
            echo "| $r | ${ROW_DESC[$r]} | $(fmt "${R_VALUE[$r]}") | $(fmt "${R_P99[$r]}") | $(fmt "${R_P999[$r]}") |" \
                "$(fmt "${R_MAX[$r]}") | ${R_COUNT[$r]} | $(base_ratio $r R_VALUE) | $(base_ratio $r R_P99) | ${R_EXTRA[$r]} |"
        elif [[ -n ${R_STATUS[$r]:-} ]]; then not_ok $r; fi
    done
    echo
    echo "## Bulk throughput, one connection (Gbit/s of payload the receiver read)"
    echo
    echo "| row | sender → receiver | Gbit/s | moved | ÷ d | notes |"
    echo "| --- | --- | ---: | ---: | ---: | --- |"
    for r in d e f g; do
        if [[ ${R_STATUS[$r]:-} == ok ]]; then
            echo "| $r | ${ROW_DESC[$r]} | $(fmt "${R_VALUE[$r]}") | ${R_COUNT[$r]} | $(base_ratio $r R_VALUE) | ${R_EXTRA[$r]} |"
        elif [[ -n ${R_STATUS[$r]:-} ]]; then not_ok $r; fi
    done
    echo
    echo "## Connection set-up rate: connect, $SIZE B request, $SIZE B reply, server closes, close"
    echo
    echo "| row | client → server | connections/s | ÷ h | one connection median µs | p99 µs | max µs | connections | notes |"
    echo "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
    for r in h i j; do
        if [[ ${R_STATUS[$r]:-} == ok ]]; then
            echo "| $r | ${ROW_DESC[$r]} | $(fmt "${R_VALUE[$r]}") | $(base_ratio $r R_VALUE) | $(fmt "${R_MEDIAN[$r]}") |" \
                "$(fmt "${R_P99[$r]}") | $(fmt "${R_MAX[$r]}") | ${R_COUNT[$r]} | ${R_EXTRA[$r]} |"
        elif [[ -n ${R_STATUS[$r]:-} ]]; then not_ok $r; fi
    done
} >"$md"

# A row of tcp.json: its main figure, named for its unit, and that against its kernel row.
json_row() {  # key
    local r=$1 unit rv
    printf '"row": "%s", "description": %s, "status": "%s"' "$r" "$(json_str "${ROW_DESC[$r]}")" "${R_STATUS[$r]}"
    [[ ${R_STATUS[$r]} == ok ]] || return 0
    case $r in a|b|c) unit=us_half_round_trip_median ;; d|e|f|g) unit=gbit_per_s ;; *) unit=connections_per_s ;; esac
    rv=$(base_ratio "$r" R_VALUE)
    printf ', "%s": %s, "ratio_to_kernel": %s' "$unit" "${R_VALUE[$r]}" "${rv:-null}"
}

json=$workdir/tcp.json
write_json "$json" : json_row a b c d e f g h i j
publish "$out" "$md" "$json"
