#!/usr/bin/env bash
# UDP ping-pong latency: the Linux kernel against the user-level stack, all from one run.
#
#   namespace olb-k (kernel server side)             namespace olb-c (client side)
#   olb-k0 10.88.0.1/24 sockperf servers  <- veth ->  olb-c0 10.88.0.2/24 the kernel's client address
#          10.88.0.4    stack server (rows j, k)              10.88.0.3    the stack's address (AF_PACKET/AF_XDP)
#
# The issue's rows (for each size in --sizes; 64 B, and 1 KiB in a full run):
#   a  kernel -> kernel over veth: sockperf ping-pong -> sockperf server          (the baseline of the ratios)
#   b  stack, AF_PACKET, busy-polling -> the same kernel sockperf server          (onload-pingpong --sockperf)
#   c  stack, AF_XDP, busy-polling -> the same kernel sockperf server
#   d  stack -> stack over shared memory (shm:NAME), both busy-polling, in olb-c
#   e  kernel loopback: sockperf ping-pong -> sockperf server on lo, in olb-k     (64 B only)
# Reference rows, 64 B only, to show where the time goes:
#   f  kernel -> kernel over veth, unpinned (where the scheduler puts them)
#   g  kernel -> kernel over veth, both ends spinning on non-blocking recvfrom (sockperf --nonblocked)
#   h  stack AF_PACKET -> kernel sockperf server spinning (--nonblocked)
#   i  stack AF_XDP -> kernel sockperf server spinning
#   j  stack -> stack over veth, AF_PACKET both ends, both busy-polling
#   k  stack -> stack over veth, AF_XDP both ends, both busy-polling
# Clients run on CPU 0 and servers on CPU 1 (taskset), except row f. A row whose VNIC kind this build of
# onload-pingpong cannot open (af_xdp, shm) prints "skipped" and the run carries on.
#
# Half round trip (RTT/2) in microseconds: sockperf's own percentiles for kernel rows (exact, from its
# samples), HdrHistogram's for stack rows (3 significant digits). Results: a Markdown table on stdout and in
# perf/results/latency.md, and perf/results/latency.json.
#
# Needs root (namespaces, AF_PACKET, AF_XDP), iproute2, ethtool, taskset; installs sockperf if missing.
# Cleans up on exit, failure and Ctrl-C: kills what it started (by pid) and deletes its namespaces; sweeps
# what an earlier, killed run left first. Exits non-zero if a row that should have run failed.
#
# Usage: perf/latency.sh [--quick] [--seconds N] [--sizes "64 1024"] [--out DIR]
#   --quick      2 s per row, 64 B only (make bench-quick)
#   --seconds N  measuring time per row (default 10; quick 2)
#   --sizes L    UDP payload sizes in bytes (default "64 1024"; quick "64")
#   --out DIR    where latency.md and latency.json go (default perf/results)
# Environment: PINGPONG (default dist/bin/onload-pingpong), CLIENT_CPU (0), SERVER_CPU (1).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=perf/lib.sh
source perf/lib.sh

NAME=latency
name_veth_pair olb
NET=10.88.0
PREFIX=24
ADDR_K=$NET.1          # kernel, server side
ADDR_C=$NET.2          # kernel, client side
ADDR_STACK_C=$NET.3    # the stack's client address on olb-c0
ADDR_STACK_K=$NET.4    # the stack's server address on olb-k0 (rows g, h)
SHM_NET=10.89.0        # shared-memory link (row d)
PORT=11111             # sockperf server, pinned
PORT_FREE=11112        # sockperf server, unpinned (row f)
PORT_LO=11113          # sockperf server on lo (row e)
PORT_STACK=11114       # onload-pingpong --server-mode
PORT_SPIN=11115        # sockperf server --nonblocked, pinned (rows g, h, i; only while they run)

sizes=""
parse_args sizes -- "$@"
if ((quick)); then
    sizes=${sizes:-64}
else
    sizes=${sizes:-64 1024}
fi

check_host bench-latency ip ethtool taskset
install_missing sockperf
SOCKPERF=$(command -v sockperf)

set_pinning "client on CPU $CLIENT_CPU, server on CPU $SERVER_CPU (taskset)"
mkdir -p "$out"
start_workdir

# ---------------------------------------------------------------------------------------------
# Results: one entry per (size, row).

declare -A R_STATUS R_NOTE R_MEDIAN R_P99 R_P999 R_MAX R_SAMPLES R_LOST
MAIN_ROWS=(a b c d e)
REF_ROWS=(f g h i j k)
declare -A ROW_DESC=(
    [a]="kernel → kernel over veth (sockperf → sockperf server)"
    [b]="stack AF_PACKET, busy-polling → kernel sockperf server"
    [c]="stack AF_XDP, busy-polling → kernel sockperf server"
    [d]="stack → stack over shared memory, both busy-polling"
    [e]="kernel loopback, lo (sockperf → sockperf server)"
    [f]="kernel → kernel over veth, unpinned"
    [g]="kernel → kernel over veth, both spinning (sockperf --nonblocked)"
    [h]="stack AF_PACKET → kernel sockperf server spinning"
    [i]="stack AF_XDP → kernel sockperf server spinning"
    [j]="stack AF_PACKET → stack AF_PACKET over veth, both busy-polling"
    [k]="stack AF_XDP → stack AF_XDP over veth, both busy-polling"
)
parse_sockperf() {  # key log
    local key=$1 log=$2
    if ! read_sockperf "$log"; then
        record_fail "$key" "could not read sockperf's percentiles (log: $(tail -n 3 "$log" | tr '\n' ' '))"
        return 1
    fi
    record_sockperf_latency "$key"
}

parse_pingpong() {  # key json log
    local key=$1 json=$2 log=$3
    if [[ ! -s $json ]]; then
        record_fail "$key" "onload-pingpong wrote no results ($(tail -n 2 "$log" | tr '\n' ' '))"
        return 1
    fi
    record_pingpong_latency "$key" "$json"
}

# ---------------------------------------------------------------------------------------------
# The rows.

sockperf_client() {  # key ns size addr port pin|nopin [sockperf options...]
    local key=$1 ns=$2 size=$3 addr=$4 port=$5 pin=$6
    shift 6
    local log=$workdir/$key.log
    local pin_args=()
    [[ $pin == pin ]] && pin_args=("${pin_client[@]}")
    echo "row $key: ${pin_args[*]:+${pin_args[*]} }sockperf ping-pong -i $addr -p $port -m $size -t $seconds${*:+ $*}"
    start_bg "$log" ip netns exec "$ns" "${pin_args[@]}" "$SOCKPERF" ping-pong -i "$addr" -p "$port" -m "$size" \
        -t "$seconds" "$@"
    if ! wait_for "$last_pid" $((seconds + 30)); then
        record_fail "$key" "sockperf ping-pong failed ($(tail -n 2 "$log" | tr '\n' ' '))"
        return 0
    fi
    parse_sockperf "$key" "$log" || true
}

pingpong_client() {  # key ns size spec addr server
    local key=$1 ns=$2 size=$3 spec=$4 addr=$5 server=$6
    local log=$workdir/$key.log json=$workdir/$key.json rc=0
    pingpong_client_run "$key" "$log" "$json" "$ns" "$server" "$size" --vnic "$spec" --addr "$addr" || rc=$?
    if ((rc != 0)); then
        record_fail "$key" "onload-pingpong exited with status $rc ($(tail -n 1 "$log"))"
        return 0
    fi
    parse_pingpong "$key" "$json" "$log" || true
}

row_stack_to_kernel() {  # key size kind port
    local key=$1 size=$2 kind=$3 port=$4
    if ! have_kind "$kind"; then
        record_skip "$key" "$kind backend not built"
        return 0
    fi
    pingpong_client "$key" "$NS_C" "$size" "$kind:$IF_C" "$ADDR_STACK_C/$PREFIX" "$ADDR_K:$port"
}

# Starts a sockperf server in olb-k and waits until its port is bound; sets $last_pid.
sockperf_server() {  # name addr port pin|nopin [sockperf options...]
    local name=$1 addr=$2 port=$3 pin=$4
    shift 4
    local pin_args=()
    [[ $pin == pin ]] && pin_args=("${pin_server[@]}")
    start_bg "$workdir/$name.log" ip netns exec "$NS_K" "${pin_args[@]}" "$SOCKPERF" server -i "$addr" -p "$port" "$@"
    wait_port "$NS_K" udp "$port" "$last_pid" || die "sockperf server did not start: $(cat "$workdir/$name.log")"
}

row_stack_to_stack_veth() {  # key size kind
    local key=$1 size=$2 kind=$3
    if ! have_kind "$kind"; then
        record_skip "$key" "$kind backend not built"
        return 0
    fi
    if ! pingpong_server "$workdir/$key-server.log" "$NS_K" --sockperf --vnic "$kind:$IF_K" \
        --addr "$ADDR_STACK_K/$PREFIX" --port "$PORT_STACK"; then
        record_fail "$key" "$server_error"
        return 0
    fi
    pingpong_client "$key" "$NS_C" "$size" "$kind:$IF_C" "$ADDR_STACK_C/$PREFIX" "$ADDR_STACK_K:$PORT_STACK"
    stop_pid "$server_pid"
    sed 's/^/    /' "$workdir/$key-server.log" | tail -n 1
}

row_shm() {  # key size
    local key=$1 size=$2
    if ! have_kind shm; then
        record_skip "$key" "shm backend not built"
        return 0
    fi
    # Both ends in olb-c: the shm rendezvous is an abstract Unix socket, which belongs to a network namespace.
    local name="olb-lat-$$-$size"
    if ! pingpong_server "$workdir/$key-server.log" "$NS_C" --sockperf --vnic "shm:$name" --addr "$SHM_NET.1/$PREFIX" \
        --port "$PORT_STACK"; then
        record_fail "$key" "$server_error"
        return 0
    fi
    pingpong_client "$key" "$NS_C" "$size" "shm:$name" "$SHM_NET.2/$PREFIX" "$SHM_NET.1:$PORT_STACK"
    stop_pid "$server_pid"
    sed 's/^/    /' "$workdir/$key-server.log" | tail -n 1
}

# ---------------------------------------------------------------------------------------------
say "setting up namespaces $NS_K (kernel server) and $NS_C (clients), veth $IF_K <-> $IF_C"
make_veth_pair

say "starting sockperf servers in $NS_K (they sleep in recvfrom between messages)"
sockperf_server server "$ADDR_K" "$PORT" pin
sockperf_server server-free "$ADDR_K" "$PORT_FREE" nopin
sockperf_server server-lo 127.0.0.1 "$PORT_LO" pin
"$SOCKPERF" --version 2>&1 | head -n 1
echo "VNIC kinds in $PINGPONG: $("$PINGPONG" --list-kinds | tr '\n' ' ')"

started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
for size in $sizes; do
    say "$size B, $seconds s per row"
    sockperf_client "$size:a" "$NS_C" "$size" "$ADDR_K" "$PORT" pin
    row_stack_to_kernel "$size:b" "$size" af_packet "$PORT"
    row_stack_to_kernel "$size:c" "$size" af_xdp "$PORT"
    row_shm "$size:d" "$size"
    [[ $size == 64 ]] || continue
    sockperf_client "$size:e" "$NS_K" "$size" 127.0.0.1 "$PORT_LO" pin

    say "$size B, reference rows, $seconds s per row"
    sockperf_client "$size:f" "$NS_C" "$size" "$ADDR_K" "$PORT_FREE" nopin
    # A spinning server takes CPU $SERVER_CPU whole: it runs only for these three rows.
    sockperf_server server-spin "$ADDR_K" "$PORT_SPIN" pin --nonblocked
    spin_pid=$last_pid
    sockperf_client "$size:g" "$NS_C" "$size" "$ADDR_K" "$PORT_SPIN" pin --nonblocked
    row_stack_to_kernel "$size:h" "$size" af_packet "$PORT_SPIN"
    row_stack_to_kernel "$size:i" "$size" af_xdp "$PORT_SPIN"
    stop_pid "$spin_pid"
    row_stack_to_stack_veth "$size:j" "$size" af_packet
    row_stack_to_stack_veth "$size:k" "$size" af_xdp
done
load_end=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------------------------------------
# The report.

table() {  # size rows...
    local size=$1 base="$1:a" r key
    shift
    echo "| row | client → server | median | p99 | p99.9 | max | samples | lost | median ÷ a | p99 ÷ a |"
    echo "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    for r in "$@"; do
        key="$size:$r"
        [[ -n ${R_STATUS[$key]:-} ]] || continue
        if [[ ${R_STATUS[$key]} == ok ]]; then
            latency_ratios "$key" "$base"
            echo "| $r | ${ROW_DESC[$r]} | $(fmt "${R_MEDIAN[$key]}") | $(fmt "${R_P99[$key]}") |" \
                "$(fmt "${R_P999[$key]}") | $(fmt "${R_MAX[$key]}") | ${R_SAMPLES[$key]} | ${R_LOST[$key]} | $median_ratio | $p99_ratio |"
        else
            echo "| $r | ${ROW_DESC[$r]} | ${R_STATUS[$key]}: ${R_NOTE[$key]//|/\\|} | | | | | | | |"
        fi
    done
}

machine_facts
sockperf_version=$("$SOCKPERF" --version 2>&1 | sed -n 's/.*version \([^ ]*\).*/\1/p' | head -n 1)
md=$workdir/latency.md
{
    echo "# UDP ping-pong latency"
    echo
    echo "One run of \`perf/latency.sh$( ((quick)) && echo " --quick")\`, $started: Linux $kernel, $cpu, $ncpu cores (a VM);"
    echo "load average $load_start at the start, $load_end at the end."
    echo "Half round trip (RTT/2) in µs, one message in flight, ${seconds} s per row after warm-up."
    echo "Kernel rows: sockperf $sockperf_version (\`sockperf ping-pong\` against \`sockperf server\`, blocking in recvfrom unless"
    echo "the row says spinning; sockperf's own percentiles). Stack rows: \`onload-pingpong --sockperf\`, busy-polling"
    echo "(never sleeps; HdrHistogram percentiles), against the same unmodified \`sockperf server\` processes."
    echo "Pinning: $pinning, except row f. veth offloads off on both ends; IPv6 off."
    echo "Ratios: the row's value divided by row a's at the same size (below 1 = lower latency than the kernel)."
    echo "Lost: for stack rows, messages without a reply within 1 s (not in the percentiles); for kernel rows, sockperf's"
    echo "sent minus received."
    for size in $sizes; do
        echo
        echo "## $size B UDP, half round trip, µs (busy-polling for stack rows, sockperf for kernel rows, $ncpu cores)"
        echo
        table "$size" "${MAIN_ROWS[@]}"
        if [[ -n ${R_STATUS[$size:f]:-} ]]; then
            echo
            echo "Reference rows, $size B: where the time goes"
            echo
            table "$size" "${REF_ROWS[@]}"
        fi
    done
} >"$md"

latency_json_fields() {
    printf '  "metric": "half round trip",\n  "unit": "us",\n  "sockperf": %s,\n' "$(json_str "$sockperf_version")"
}

# A row of latency.json, by SIZE:ROW: its percentiles and, with row a's of the same size, its ratios to them.
json_row() {  # key
    local key=$1 size=${1%%:*} r=${1#*:}
    printf '"row": "%s", "size": %s, "description": %s, "status": "%s"' \
        "$r" "$size" "$(json_str "${ROW_DESC[$r]}")" "${R_STATUS[$key]}"
    [[ ${R_STATUS[$key]} == ok ]] || return 0
    printf ', "median": %s, "p99": %s, "p99_9": %s, "max": %s, "samples": %s, "lost": %s' \
        "${R_MEDIAN[$key]}" "${R_P99[$key]}" "${R_P999[$key]}" "${R_MAX[$key]}" "${R_SAMPLES[$key]}" "${R_LOST[$key]}"
    if [[ ${R_STATUS[$size:a]:-} == ok ]]; then
        latency_ratios "$key" "$size:a"
        printf ', "median_ratio_to_a": %s, "p99_ratio_to_a": %s' "${median_ratio:-null}" "${p99_ratio:-null}"
    fi
}

json=$workdir/latency.json
keys=()
for size in $sizes; do
    for r in "${MAIN_ROWS[@]}" "${REF_ROWS[@]}"; do keys+=("$size:$r"); done
done
write_json "$json" latency_json_fields json_row "${keys[@]}"

publish "$out" "$md" "$json"
