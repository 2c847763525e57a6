#!/usr/bin/env bash
# Driverlink modes against the kernel, from one run: what the daemon's shared mode costs beside the exclusive
# mode and beside the kernel, on an interface whose address the kernel holds (issue 6).
#
#   namespace old-k (kernel server side)             namespace old-c (client side, onload-driverd here)
#   old-k0 10.87.0.1/24 sockperf server   <- veth ->  old-c0 10.87.0.2/24 the kernel's address, used by every row
#
# Rows (64 B UDP ping-pong, half round trip, against the same pinned `sockperf server`):
#   a  kernel sockperf client -> server                                    (the baseline of the ratios)
#   b  onload-pingpong, driverlink exclusive mode: the queue's AF_XDP socket in the client, busy-polling
#   c  onload-pingpong, driverlink shared mode: the daemon forwards between its AF_XDP socket and the
#      client's shm rings (its forwarder busy-polls 200 us after each frame, then sleeps)
#   d  onload-pingpong, direct AF_XDP (its own address 10.87.0.3), for reference
# The client runs on CPU 0; the sockperf server and onload-driverd on CPU 1.
#
# Needs root, iproute2, ethtool, taskset; installs sockperf if missing. Results in perf/results/driverlink.md
# and .json. Cleans up on exit and Ctrl-C (kills by pid, deletes its namespaces; sweeps an earlier run's).
#
# Usage: perf/driverlink.sh [--quick] [--seconds N] [--out DIR]
# Environment: PINGPONG (dist/bin/onload-pingpong), DRIVERD (dist/bin/onload-driverd), CLIENT_CPU (0), SERVER_CPU (1).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=perf/lib.sh
source perf/lib.sh

NAME=driverlink
name_veth_pair old
PREFIX=24
ADDR_K=10.87.0.1
ADDR_C=10.87.0.2
ADDR_DIRECT=10.87.0.3
PORT=11211
DRIVERD_SOCKET=onload-driverd-bench
SIZE=64

parse_args -- "$@"
check_host bench-driverlink ip ethtool taskset
check_built "$DRIVERD"
install_missing sockperf
SOCKPERF=$(command -v sockperf)
set_pinning "client on CPU $CLIENT_CPU, sockperf server and onload-driverd on CPU $SERVER_CPU (taskset)"
mkdir -p "$out"
start_workdir

declare -A R_STATUS R_NOTE R_MEDIAN R_P99 R_P999 R_MAX R_SAMPLES R_LOST
ROWS=(a b c d)
declare -A ROW_DESC=(
    [a]="kernel → kernel over veth (sockperf → sockperf server)"
    [b]="stack, driverlink exclusive (its own AF_XDP socket), busy-polling → kernel sockperf server"
    [c]="stack, driverlink shared (daemon forwards into its shm rings), busy-polling → kernel sockperf server"
    [d]="stack, direct AF_XDP, busy-polling → kernel sockperf server (reference)"
)

row_kernel() {
    local log=$workdir/a.log
    echo "row a: sockperf ping-pong -i $ADDR_K -p $PORT -m $SIZE -t $seconds"
    start_bg "$log" ip netns exec "$NS_C" "${pin_client[@]}" "$SOCKPERF" ping-pong -i "$ADDR_K" -p "$PORT" -m "$SIZE" -t "$seconds"
    if ! wait_for "$last_pid" $((seconds + 30)) || ! read_sockperf "$log"; then
        record_fail a "sockperf failed ($(tail -n 2 "$log" | tr '\n' ' '))"
        return 0
    fi
    record_sockperf_latency a
}

row_pingpong() {  # key pingpong-options...
    local key=$1 log=$workdir/$1.log json=$workdir/$1.json rc=0
    shift
    # A driverlink client asks this script's daemon, and never starts one of its own.
    local -x ONLOAD_DRIVERD_SOCKET=$DRIVERD_SOCKET ONLOAD_DRIVERD_AUTOSTART=0
    pingpong_client_run "$key" "$log" "$json" "$NS_C" "$ADDR_K:$PORT" "$SIZE" "$@" || rc=$?
    if ((rc != 0)) || [[ ! -s $json ]]; then
        record_fail "$key" "onload-pingpong exited with status $rc ($(tail -n 1 "$log"))"
        return 0
    fi
    record_pingpong_latency "$key" "$json"
}

say "setting up namespaces $NS_K and $NS_C, veth $IF_K <-> $IF_C"
make_veth_pair
kernel_server sockperf-server udp "$PORT" "$SOCKPERF" server -i "$ADDR_K" -p "$PORT"
daemons=()
start_driverd "$NS_C" "$IF_C" || die "onload-driverd did not start: $(cat "$workdir/driverd-$NS_C.log")"

started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
say "$SIZE B, $seconds s per row"
row_kernel
row_pingpong b --interface "$IF_C" --mode exclusive
row_pingpong c --interface "$IF_C" --mode shared
stop_pids "${daemons[@]}"   # direct mode attaches its own program: the daemon's must be gone
row_pingpong d --vnic "af_xdp:$IF_C" --addr "$ADDR_DIRECT/$PREFIX"
load_end=$(cut -d' ' -f1-3 /proc/loadavg)
sed 's/^/    driverd: /' "$workdir/driverd-$NS_C.log" | tail -n 4

md=$workdir/driverlink.md
{
    echo "# Driverlink modes: UDP ping-pong latency"
    echo
    echo "One run of \`perf/driverlink.sh$( ((quick)) && echo " --quick")\`, $started: Linux $(uname -r), $ncpu cores (a VM);"
    echo "load average $load_start at the start, $load_end at the end. $SIZE B UDP, half round trip (RTT/2) in µs,"
    echo "one message in flight, $seconds s per row after warm-up, against one pinned \`sockperf server\` (it sleeps in"
    echo "recvfrom). Pinning: $pinning. Ratios: the row's value divided by row a's."
    echo
    echo "| row | client → server | median | p99 | p99.9 | max | samples | lost | median ÷ a | p99 ÷ a |"
    echo "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    for r in "${ROWS[@]}"; do
        if [[ ${R_STATUS[$r]:-} == ok ]]; then
            latency_ratios "$r" a
            echo "| $r | ${ROW_DESC[$r]} | $(fmt "${R_MEDIAN[$r]}") | $(fmt "${R_P99[$r]}") | $(fmt "${R_P999[$r]}") |" \
                "$(fmt "${R_MAX[$r]}") | ${R_SAMPLES[$r]} | ${R_LOST[$r]} | $median_ratio | $p99_ratio |"
        else
            echo "| $r | ${ROW_DESC[$r]} | ${R_STATUS[$r]:-not run}: ${R_NOTE[$r]:-} | | | | | | | |"
        fi
    done
} >"$md"
json=$workdir/driverlink.json
{
    printf '{\n  "generated": "%s",\n  "quick": %s,\n  "seconds_per_row": %s,\n  "size": %s,\n  "unit": "us",\n  "rows": [' \
        "$started" "$( ((quick)) && echo true || echo false)" "$seconds" "$SIZE"
    sep=""
    for r in "${ROWS[@]}"; do
        printf '%s\n    {"row": "%s", "description": %s, "status": "%s"' "$sep" "$r" "$(json_str "${ROW_DESC[$r]}")" "${R_STATUS[$r]:-not run}"
        [[ ${R_STATUS[$r]:-} == ok ]] && printf ', "median": %s, "p99": %s, "p99_9": %s, "max": %s, "samples": %s, "lost": %s' \
            "${R_MEDIAN[$r]}" "${R_P99[$r]}" "${R_P999[$r]}" "${R_MAX[$r]}" "${R_SAMPLES[$r]}" "${R_LOST[$r]}"
        printf '}'
        sep=","
    done
    printf '\n  ]\n}\n'
} >"$json"
publish "$out" "$md" "$json"
