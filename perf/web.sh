#!/usr/bin/env bash
# Issue 9's web figures, one run: wrk against onload-web-sample (ASP.NET Core, Kestrel, NativeAOT) served from kernel
# sockets and from the user-level stack, over the same veth pair, with the server process's allocation per request.
#
#   namespace olw-k (server)                                   namespace olw-c (client)
#   olw-k0 10.84.0.1/24  onload-web-sample --urls http://*:8080  <- veth ->  olw-c0 10.84.0.2/24  wrk
#          10.84.0.3     (row a: the stack's own address, direct mode)
#
# Rows, each `wrk -t1 -c<connections> -d<row time>s --latency http://SERVER:8080/` (GET /: a one-line text answer,
# HTTP/1.1 keep-alive), after a 1 s warm-up run:
#   k  --transport kernel: Kestrel's own socket transport on the kernel's TCP (the baseline of the ratios)
#   x  --transport onload --interface olw-k0 --mode exclusive: driverlink, an AF_XDP VNIC of the server's own
#   s  --transport onload --interface olw-k0 --mode shared: driverlink, frames through onload-driverd's forwarder
#   a  --transport onload --vnic af_xdp:olw-k0 --addr 10.84.0.3/24: direct mode (no daemon; the stack does its ARP)
# Figures: requests per second, latency median and p99 (wrk's --latency distribution, µs); ratios to row k. Socket
# errors and non-2xx answers are reported (a row with either fails).
# Allocation: GET /stats (GC.GetTotalAllocatedBytes and collection counts of the server process) just before and just
# after the measured run; bytes per request = the growth / wrk's requests. Kestrel, routing and the minimal API
# allocate per request too: the comparison with row k shows what the transport adds.
#
# Kernel row first, before any onload-driverd starts (a daemon's XDP program on the veth would change the kernel's
# path). The server (and the daemon) on CPU 1, wrk on CPU 0 (taskset). Results: perf/results/web.md and web.json.
#
# Needs root, iproute2, ethtool, taskset, curl, a built dist/ (make); installs wrk and jq if missing. Cleans up on
# exit, failure and Ctrl-C: kills what it started (by pid) and deletes its namespaces; sweeps what an earlier, killed
# run left first. Exits non-zero if a row failed. No thresholds.
#
# Usage: perf/web.sh [--quick] [--seconds N] [--connections N] [--out DIR]
#   --quick          2 s per row (make bench-quick): proves the suite runs; figures not for quoting
#   --seconds N      measuring time per row (default 10; quick 2)
#   --connections N  wrk's connections (default 32)
#   --out DIR        where web.md and web.json go (default perf/results)
# Reproduce: `sudo make bench-web` on a quiet machine.
# Environment: WEB_SAMPLE, DRIVERD (default dist/bin/...), CLIENT_CPU (0), SERVER_CPU (1).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=perf/lib.sh
source perf/lib.sh

NAME=web
name_veth_pair olw
PREFIX=24
ADDR_K=10.84.0.1
ADDR_C=10.84.0.2
ADDR_DIRECT=10.84.0.3
PORT=8080
DRIVERD_SOCKET=onload-driverd-olw
WEB_SAMPLE=${WEB_SAMPLE:-dist/bin/onload-web-sample}
connections=32

parse_args connections -- "$@"
[[ $connections =~ ^[0-9]+$ && $connections -ge 1 ]] || die "--connections must be a whole number >= 1"

NEEDS_PINGPONG=0
check_host bench-web ip ethtool taskset curl
check_built "$WEB_SAMPLE" "$DRIVERD"
install_missing wrk jq

set_pinning "wrk on CPU $CLIENT_CPU, onload-web-sample and onload-driverd on CPU $SERVER_CPU (taskset)"
mkdir -p "$out"
start_workdir

declare -A R_STATUS R_NOTE R_RPS R_MEDIAN R_P99 R_REQUESTS R_ALLOC R_GCS
declare -A ROW_DESC=(
    [k]="kernel sockets (Kestrel's socket transport)"
    [x]="the stack, driverlink, exclusive AF_XDP VNIC"
    [s]="the stack, driverlink, shared (onload-driverd forwards)"
    [a]="the stack, direct mode, AF_XDP on its own address"
)
ROWS=(k x s a)

# wrk's latency figures come as 512.00us, 1.23ms or 1.01s; in µs.
to_us() {
    awk -v v="$1" 'BEGIN {
        n = v + 0
        if (v ~ /us$/) f = 1; else if (v ~ /ms$/) f = 1000; else if (v ~ /s$/) f = 1000000; else f = 1
        printf "%.1f", n * f }'
}

# The server's GC figures: "allocated-bytes collections" (gen0 counts every collection).
server_stats() {  # url
    ip netns exec "$NS_C" curl -sS --fail --max-time 5 "$1/stats" | jq -er '[.gcAllocatedBytes, .gen0Collections] | @tsv'
}

# Starts onload-web-sample in olw-k with the row's options, runs wrk from olw-c and records the row.
row() {  # key address [sample options...]
    local key=$1 address=$2 log=$workdir/$1-server.log url before after wrk_log=$workdir/$1-wrk.log
    shift 2
    url=http://$address:$PORT
    echo "row $key: onload-web-sample --urls http://*:$PORT $*"
    start_bg "$log" ip netns exec "$NS_K" "${pin_server[@]}" env "ONLOAD_DRIVERD_SOCKET=$DRIVERD_SOCKET" \
        ONLOAD_DRIVERD_AUTOSTART=0 "$WEB_SAMPLE" --urls "http://*:$PORT" "$@"
    local server=$last_pid
    if ! wait_log "$server" "$log" "onload-web-sample: ready"; then
        record_fail "$key" "the server did not start ($(tail -n 3 "$log" | tr '\n' ' '))"
        stop_pid "$server"
        return 0
    fi
    # Warm-up: connections, JIT-free but cold caches, the stack's tables and the pools filled.
    ip netns exec "$NS_C" "${pin_client[@]}" wrk -t1 -c"$connections" -d1s "$url/" >/dev/null 2>&1 || true
    if ! before=$(server_stats "$url"); then
        record_fail "$key" "GET /stats failed before the run"
        stop_pid "$server"
        return 0
    fi
    echo "    wrk -t1 -c$connections -d${seconds}s --latency $url/"
    if ! ip netns exec "$NS_C" "${pin_client[@]}" wrk -t1 -c"$connections" -d"${seconds}s" --latency --timeout 5s "$url/" \
        >"$wrk_log" 2>&1; then
        record_fail "$key" "wrk failed: $(tail -n 2 "$wrk_log" | tr '\n' ' ')"
        stop_pid "$server"
        return 0
    fi
    after=$(server_stats "$url") || after=""
    sed 's/^/    /' "$wrk_log"
    local requests rps median p99 errors non2xx
    requests=$(sed -n 's/^ *\([0-9]*\) requests in.*/\1/p' "$wrk_log")
    rps=$(sed -n 's/^Requests\/sec: *\([0-9.]*\).*/\1/p' "$wrk_log")
    median=$(sed -n 's/^ *50% *\([0-9.]*[a-z]*\).*/\1/p' "$wrk_log")
    p99=$(sed -n 's/^ *99% *\([0-9.]*[a-z]*\).*/\1/p' "$wrk_log")
    errors=$(sed -n 's/.*Socket errors: \(.*\)/\1/p' "$wrk_log")
    non2xx=$(sed -n 's/.*Non-2xx or 3xx responses: *\([0-9]*\).*/\1/p' "$wrk_log")
    if [[ -z $requests || -z $rps || -z $median || -z $p99 ]]; then
        record_fail "$key" "could not read wrk's output"
    elif [[ -n $errors || -n $non2xx ]]; then
        record_fail "$key" "wrk saw socket errors (${errors:-none}) or non-2xx answers (${non2xx:-0})"
    else
        R_STATUS[$key]=ok
        R_REQUESTS[$key]=$requests
        R_RPS[$key]=$rps
        R_MEDIAN[$key]=$(to_us "$median")
        R_P99[$key]=$(to_us "$p99")
        if [[ -n $after ]]; then
            R_ALLOC[$key]=$(per_message $(($(cut -f1 <<<"$after") - $(cut -f1 <<<"$before"))) "$requests")
            R_GCS[$key]=$(($(cut -f2 <<<"$after") - $(cut -f2 <<<"$before")))
        fi
    fi
    stop_pid "$server"
}

# ---------------------------------------------------------------------------------------------
say "setting up namespaces $NS_K (server) and $NS_C (client), veth $IF_K <-> $IF_C"
make_veth_pair

started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
load_start=$(cut -d' ' -f1-3 /proc/loadavg)

say "kernel row, $seconds s (no onload-driverd yet)"
row k "$ADDR_K" --transport kernel

say "driverlink rows, $seconds s each, an onload-driverd in $NS_K"
daemons=()
if start_driverd "$NS_K" "$IF_K"; then
    row x "$ADDR_K" --transport onload --interface "$IF_K" --mode exclusive
    row s "$ADDR_K" --transport onload --interface "$IF_K" --mode shared
else
    for r in x s; do
        record_fail "$r" "onload-driverd did not start ($(tail -n 2 "$workdir"/driverd-*.log | tr '\n' ' '))"
    done
fi
stop_driverds "${daemons[@]}"

say "direct-mode row, $seconds s"
row a "$ADDR_DIRECT" --transport onload --vnic "af_xdp:$IF_K" --addr "$ADDR_DIRECT/$PREFIX"
load_end=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------------------------------------
# The report.

base_rps_ratio() {  # key: requests/s over row k's, or "" without row k
    [[ ${R_STATUS[k]:-} == ok ]] && ratio "${R_RPS[$1]}" "${R_RPS[k]}"
    return 0
}

machine_facts
md=$workdir/web.md
{
    echo "# HTTP/1.1 on onload-web-sample: kernel sockets beside the stack (issue 9)"
    echo
    echo "One run of \`perf/web.sh$( ((quick)) && echo " --quick")\`, $started: Linux $kernel, $cpu, $ncpu cores (a VM);"
    echo "load average $load_start at the start, $load_end at the end$( ((quick)) && echo "; --quick: 2 s rows, to prove the suite runs, not figures to quote")."
    echo "Each row: \`wrk -t1 -c$connections -d${seconds}s --latency http://SERVER:$PORT/\` (GET /, keep-alive) after a 1 s"
    echo "warm-up. Pinning: $pinning. veth offloads off. The same NativeAOT binary in every row."
    echo
    echo "| row | server | requests/s | ÷ k | median µs | ÷ k | p99 µs | ÷ k | B allocated per request | GCs |"
    echo "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    for r in "${ROWS[@]}"; do
        [[ -n ${R_STATUS[$r]:-} ]] || continue
        if [[ ${R_STATUS[$r]} == ok ]]; then
            latency_ratios "$r" k
            echo "| $r | ${ROW_DESC[$r]} | $(fmt "${R_RPS[$r]}") | $(base_rps_ratio "$r") | $(fmt "${R_MEDIAN[$r]}") | $median_ratio |" \
                "$(fmt "${R_P99[$r]}") | $p99_ratio | ${R_ALLOC[$r]:-} | ${R_GCS[$r]:-} |"
        else
            echo "| $r | ${ROW_DESC[$r]} | ${R_STATUS[$r]}: ${R_NOTE[$r]//|/\\|} | | | | | | | |"
        fi
    done
    echo
    echo "Allocation: the server process's GC.GetTotalAllocatedBytes growth over the measured run (GET /stats before"
    echo "and after) divided by wrk's requests; Kestrel, routing and the minimal API's own share is in every row."
} >"$md"

json_row() {  # key
    local r=$1
    printf '"row": "%s", "description": %s, "status": "%s"' "$r" "$(json_str "${ROW_DESC[$r]}")" "${R_STATUS[$r]}"
    [[ ${R_STATUS[$r]} == ok ]] || return 0
    latency_ratios "$r" k
    local rv
    rv=$(base_rps_ratio "$r")
    printf ', "requests": %s, "requests_per_s": %s, "median_us": %s, "p99_us": %s' \
        "${R_REQUESTS[$r]}" "${R_RPS[$r]}" "${R_MEDIAN[$r]}" "${R_P99[$r]}"
    printf ', "ratio_to_k": {"requests_per_s": %s, "median": %s, "p99": %s}' \
        "${rv:-null}" "${median_ratio:-null}" "${p99_ratio:-null}"
    [[ -n ${R_ALLOC[$r]:-} ]] && printf ', "allocated_bytes_per_request": %s, "gcs": %s' "${R_ALLOC[$r]}" "${R_GCS[$r]}"
    return 0
}
own_fields() { printf '  "connections": %s,\n' "$connections"; }

json=$workdir/web.json
write_json "$json" own_fields json_row "${ROWS[@]}"
jq empty "$json" || die "wrote invalid JSON: $json"
publish "$out" "$md" "$json"
