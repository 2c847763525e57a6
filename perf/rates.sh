#!/usr/bin/env bash
# Issue 8's rates, kernel beside accelerated, one run: single-stream TCP throughput, small UDP messages per second,
# TCP connections per second, and what the accelerated programs' stacks allocated while they ran.
#
#   namespace olr-k (servers)                           namespace olr-c (clients)
#   olr-k0 10.83.0.1/24  iperf3 -s, sockperf server, <- veth ->  olr-c0 10.83.0.2/24  iperf3, sockperf tp, tcp_crr
#                        tcp_crr server                          shm VNICs 10.83.1.1 and .2 (row t5, both ends)
#   lo     127.0.0.1     iperf3 -s (row t6)
#
# Throughput, one TCP connection, Gbit/s of payload the receiving program read, for the row's time:
#   t1  kernel -> kernel over the veth, iperf3, veth offloads OFF: MTU-sized frames with checksums in software, the
#       way the stack sends (the baseline of the ratios)
#   t2  the same with veth offloads ON (TSO, GSO, GRO, checksum): the kernel's 64 KiB super-frames
#   t3  iperf3 -> iperf3, both under `onload-run --profile throughput` (driverlink, exclusive AF_XDP VNIC)
#   t4  the stack's own source and sink over the veth: onload-pingpong --tcp --stream -> onload-pingpong --server-mode
#       --tcp --sink, both driverlink (exclusive), busy-polling
#   t5  the same source and sink through shared-memory VNICs on one host (MTU 9000)
#   t6  kernel loopback, iperf3 (lo as it comes: MTU 65536, offloads on): what t5 is compared with
# Message rate, UDP 64 B, one sending thread on CPU 0, one receiving on CPU 1, for the row's time:
#   m1  kernel: sockperf throughput -> sockperf server
#   m2  the same sockperf binaries, both under `onload-run --profile latency`
#   The rate is sockperf's own (messages sent per second); the server's count at its end gives the share that
#   reached the receiving program (the rest was dropped at a full receive queue or ring).
# Connection rate: connect, 64 B request, 64 B reply, the server closes, close, one at a time (perf/tcp_crr.c,
# blocking calls):
#   c1  kernel client -> kernel server
#   c2  kernel client -> the same server program under `onload-run --profile latency` (an accelerated server)
#   c3  client and server both under `onload-run --profile latency`
# Allocation: in rows t3, m2 and c2, onload-stackdump --json asks the server's stack for its runtime's allocated
# bytes (its dump thread's own left out) and collections a quarter of the row's time (at most 1 s) after the
# client's measured time starts (the server's stack shows iperf3's connection, sockperf's "Starting test",
# tcp_crr at once) and again three quarters of the row's time after it; the report divides the bytes by the messages (TCP segments or UDP
# datagrams received) or connections (passive opens) between the two.
# Ratios: each row against t1, m1 or c1 of the same run; t5 also against t6.
#
# Kernel rows run before any onload-driverd starts: a daemon's XDP program on the veth would change the kernel's
# path. The accelerated rows then run with a daemon in each namespace (socket name onload-driverd-olr). Clients on
# CPU 0, servers and daemons on CPU 1 (taskset). Results: perf/results/rates.md and rates.json.
#
# Needs root, iproute2, ethtool, taskset, gcc, a built dist/ (make); installs iperf3, sockperf and jq if missing.
# Cleans up on exit, failure and Ctrl-C: kills what it started (by pid) and deletes its namespaces; sweeps what an
# earlier, killed run left first. Exits non-zero if a row failed. No thresholds.
#
# Usage: perf/rates.sh [--quick] [--seconds N] [--out DIR]
#   --quick      2 s per row (make bench-quick): proves the suite runs; figures not for quoting
#   --seconds N  measuring time per row (default 10; quick 2)
#   --out DIR    where rates.md and rates.json go (default perf/results)
# Reproduce: `sudo make bench-rates` on a quiet machine.
# Environment: PINGPONG, ONLOAD_RUN, DRIVERD, STACKDUMP (default dist/bin/...), CLIENT_CPU (0), SERVER_CPU (1).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=perf/lib.sh
source perf/lib.sh

NAME=rates
name_veth_pair olr
PREFIX=24
ADDR_K=10.83.0.1
ADDR_C=10.83.0.2
SHM_NET=10.83.1
PORT_IPERF=14201       # kernel iperf3 -s (t1, t2)
PORT_IPERF_LO=14202    # iperf3 -s on lo (t6)
PORT_IPERF_ONLOAD=14203
PORT_SINK=14204        # onload-pingpong --sink (t4, t5)
PORT_UDP=14301         # kernel sockperf server (m1)
PORT_UDP_ONLOAD=14302
PORT_CRR=14401         # kernel tcp_crr server (c1)
PORT_CRR_ONLOAD=14402
SIZE=64
DRIVERD_SOCKET=onload-driverd-olr

parse_args -- "$@"

check_host bench-rates ip ethtool taskset ss gcc
check_built "$ONLOAD_RUN" "$DRIVERD" "$STACKDUMP"
install_missing iperf3 sockperf jq

set_pinning "clients on CPU $CLIENT_CPU, servers and onload-driverd on CPU $SERVER_CPU (taskset)"
mkdir -p "$out"
start_workdir

# ---------------------------------------------------------------------------------------------
# Results: one entry per row. VALUE is the row's figure (Gbit/s, messages/s, connections/s).

declare -A R_STATUS R_NOTE R_VALUE R_EXTRA A_UNITS A_BYTES A_GCS A_NOTE
declare -A ROW_DESC=(
    [t1]="kernel → kernel over veth, iperf3, offloads off"
    [t2]="kernel → kernel over veth, iperf3, offloads on (TSO/GSO/GRO)"
    [t3]="iperf3 → iperf3 over veth, both under onload-run --profile throughput"
    [t4]="stack → stack over veth, onload-pingpong --stream → --sink (driverlink, exclusive)"
    [t5]="stack → stack through shared-memory VNICs, onload-pingpong --stream → --sink"
    [t6]="kernel loopback (lo), iperf3"
    [m1]="kernel → kernel over veth, sockperf throughput → sockperf server"
    [m2]="sockperf → sockperf over veth, both under onload-run --profile latency"
    [c1]="kernel tcp_crr client → kernel tcp_crr server"
    [c2]="kernel tcp_crr client → tcp_crr server under onload-run --profile latency"
    [c3]="tcp_crr client → tcp_crr server, both under onload-run --profile latency"
)
declare -A ROW_BASE=([t2]=t1 [t3]=t1 [t4]=t1 [t5]=t1 [t6]=t1 [m2]=m1 [c2]=c1 [c3]=c1)
set_onload_run

# ---------------------------------------------------------------------------------------------
# Processes.

# A server under onload-run: its socket is on the stack, where ss does not see it, so onload-stackdump must show
# FILTER holding (on_stack). Sets $server_pid; returns 1 with the row failed if it never does.
onload_server() {  # key port jq-filter command...
    local key=$1 port=$2 filter=$3
    shift 3
    start_server "$key-server" "$@"
    server_pid=$last_pid
    if ! server_vnic=$(on_stack "$NS_K" "$server_pid" "$port" "$filter"); then
        record_fail "$key" "onload-stackdump never showed the server's socket on the stack ($(tail -n 2 \
            "$workdir/$key-server.log" | tr '\n' ' '))"
        stop_pid "$server_pid"
        return 1
    fi
}

# Starts a client in olr-c on CPU $CLIENT_CPU; sets $client_pid and $client_log.
start_client() {  # key command...
    local key=$1
    shift
    client_log=$workdir/$key.log
    echo "row $key: $*"
    start_bg "$client_log" ip netns exec "$NS_C" "${pin_client[@]}" "$@"
    client_pid=$last_pid
}

# Waits for the client started last; returns its status and prints its output indented.
finish_client() {
    local rc=0
    wait_for "$client_pid" $((seconds + 60)) || rc=$?
    sed 's/^/    /' "$client_log"
    return "$rc"
}

# What onload-stackdump says about PID's stack in olr-k: its last line, an error when there is one.
stackdump_says() { { ip netns exec "$NS_K" "$STACKDUMP" --pid "$1" 2>&1 || true; } | tail -n 1; }

# The server stack's allocation while the client runs (see the header), timed from when the client's log shows
# PATTERN (its measured time begins: attaching a stack and warming up can take seconds; "" for now): records A_*
# for KEY, or A_NOTE.
measure_allocation() {  # key server-pid counter unit-name pattern
    local key=$1 pid=$2 counter=$3 start before after b0 g0 u0 b1 g1 u1
    if [[ -n $5 ]] && ! wait_log "$client_pid" "$client_log" "$5"; then
        A_NOTE[$key]="the client never printed '$5'"
        return 0
    fi
    start=$(now_ms)
    nap_until $((start + $(first_dump_ms)))
    if ! before=$(runtime_figures "$NS_K" "$pid" "$counter"); then
        A_NOTE[$key]="onload-stackdump did not answer: $(stackdump_says "$pid")"
        return 0
    fi
    nap_until $((start + seconds * 750))
    if ! after=$(runtime_figures "$NS_K" "$pid" "$counter"); then
        A_NOTE[$key]="onload-stackdump did not answer: $(stackdump_says "$pid")"
        return 0
    fi
    read -r b0 g0 u0 <<<"$before"
    read -r b1 g1 u1 <<<"$after"
    A_UNITS[$key]="$((u1 - u0)) $4"; A_BYTES[$key]=$((b1 - b0)); A_GCS[$key]=$((g1 - g0))
    echo "    allocation: the server's stack allocated ${A_BYTES[$key]} B over ${A_UNITS[$key]}, ${A_GCS[$key]} GCs"
}

# ---------------------------------------------------------------------------------------------
# Throughput rows.

# Starts an iperf3 client for the row's time (--forceflush: its log grows each second, not at exit).
iperf3_row() {  # key port address [wrapper...]
    local key=$1 port=$2 addr=$3 ns=$NS_C
    shift 3
    [[ $addr == 127.0.0.1 ]] && ns=$NS_K
    echo "row $key: ${*:+$* }iperf3 -c $addr -p $port -t $seconds"
    client_log=$workdir/$key.log
    start_bg "$client_log" ip netns exec "$ns" "${pin_client[@]}" "$@" iperf3 -c "$addr" -p "$port" -t "$seconds" -f m \
        --forceflush
    client_pid=$last_pid
}

finish_iperf3_row() {  # key
    local key=$1
    if ! finish_client; then
        record_fail "$key" "iperf3 failed ($(tail -n 2 "$client_log" | tr '\n' ' '))"
    elif ! read_iperf3 "$client_log"; then
        record_fail "$key" "could not read iperf3's receiver line"
    else
        R_STATUS[$key]=ok; R_VALUE[$key]=$ip_gbit; R_EXTRA[$key]="$ip_moved, retransmitted $ip_retr"
    fi
}

row_iperf3_kernel() {  # key port address
    iperf3_row "$@"
    finish_iperf3_row "$1"
}

row_iperf3_onload() {  # key
    local key=$1
    onload_server "$key" "$PORT_IPERF_ONLOAD" 'any(.tcp[]; .state == "LISTEN" and .localPort == $port)' \
        "${onload[@]}" --profile throughput --interface "$IF_K" iperf3 -s -B "$ADDR_K" -p "$PORT_IPERF_ONLOAD" -1 || return 0
    iperf3_row "$key" "$PORT_IPERF_ONLOAD" "$ADDR_K" "${onload[@]}" --profile throughput --interface "$IF_C"
    # iperf3 prints nothing until its first second is over: the server's stack says when the test has begun.
    if on_stack "$NS_K" "$server_pid" 0 'any(.tcp[]; .state == "ESTABLISHED")' >/dev/null; then
        measure_allocation "$key" "$server_pid" TcpInSegs segments ""
    else
        A_NOTE[$key]="the server's stack never showed the client's connection"
    fi
    finish_iperf3_row "$key"
    [[ ${R_STATUS[$key]} == ok ]] && R_EXTRA[$key]+=", server VNIC $server_vnic"
    stop_pid "$server_pid"
}

# onload-pingpong --stream into onload-pingpong --sink, on the VNICs given by the sink's and source's options.
row_stream() {  # key sink-ns source-ns [sink options...] -- [source options...]
    local key=$1 sink_ns=$2 source_ns=$3 json=$workdir/$1.json before after
    shift 3
    split_args "$@"
    # Driverlink VNICs ask this script's daemons.
    local -x ONLOAD_DRIVERD_SOCKET=$DRIVERD_SOCKET
    if ! pingpong_server "$workdir/$key-sink.log" "$sink_ns" --tcp --sink --port "$PORT_SINK" "${before[@]}"; then
        record_fail "$key" "onload-pingpong --sink did not start ($(tail -n 2 "$workdir/$key-sink.log" | tr '\n' ' '))"
        return 0
    fi
    echo "row $key: onload-pingpong --tcp --stream ${after[*]} --seconds $seconds"
    client_log=$workdir/$key.log
    start_bg "$client_log" ip netns exec "$source_ns" "${pin_client[@]}" "$PINGPONG" --tcp --stream --seconds "$seconds" \
        --json "$json" --label "$key" "${after[@]}"
    client_pid=$last_pid
    if ! finish_client || [[ ! -s $json ]]; then
        record_fail "$key" "onload-pingpong --stream failed ($(tail -n 1 "$client_log"))"
    elif [[ $(json_field "$json" confirmed) != true ]]; then
        record_fail "$key" "the sink did not confirm it read the whole stream"
    else
        R_STATUS[$key]=ok; R_VALUE[$key]=$(json_field "$json" gbit_per_s)
        R_EXTRA[$key]="$(stream_moved "$json"), retransmitted $(json_field "$json" retransmitted)"
    fi
    stop_pid "$server_pid"
}

# ---------------------------------------------------------------------------------------------
# Message-rate rows: sockperf throughput for the row's time into a sockperf server, which prints its count on SIGINT.

row_message_rate() {  # key port [wrapper for both ends...]
    local key=$1 port=$2 sent received rate wrap_server=() wrap_client=()
    shift 2
    if (($#)); then
        wrap_server=("$@" --interface "$IF_K")
        wrap_client=("$@" --interface "$IF_C")
        onload_server "$key" "$port" 'any(.udp[]; .localPort == $port)' \
            "${wrap_server[@]}" sockperf server -i "$ADDR_K" -p "$port" || return 0
    else
        kernel_server "$key-server" udp "$port" sockperf server -i "$ADDR_K" -p "$port"
        server_pid=$last_pid
    fi
    start_client "$key" "${wrap_client[@]}" sockperf throughput -i "$ADDR_K" -p "$port" -m "$SIZE" -t "$seconds"
    (($#)) && measure_allocation "$key" "$server_pid" UdpInDatagrams datagrams "Starting test"
    if ! finish_client; then
        record_fail "$key" "sockperf throughput failed ($(tail -n 2 "$client_log" | tr '\n' ' '))"
        stop_pid "$server_pid"
        return 0
    fi
    kill -INT "$server_pid" 2>/dev/null || true
    wait_log "$server_pid" "$workdir/$key-server.log" "messages received" || true
    stop_pid "$server_pid"
    # "sockperf: Total of 451820 messages sent in 3.000 sec" / "Summary: Message Rate is 150583 [msg/sec]"
    sent=$(sed -n 's/.*Total of \([0-9]*\) messages sent.*/\1/p' "$client_log" | tail -n 1)
    rate=$(sed -n 's/.*Message Rate is \([0-9]*\).*/\1/p' "$client_log" | tail -n 1)
    received=$(sed -n 's/.*Total \([0-9]*\) messages received.*/\1/p' "$workdir/$key-server.log" | tail -n 1)
    if [[ -z $rate || -z $sent || -z $received ]]; then
        record_fail "$key" "could not read sockperf's message counts"
        return 0
    fi
    R_STATUS[$key]=ok; R_VALUE[$key]=$rate
    R_EXTRA[$key]="$sent sent, the server received $received ($(awk -v r="$received" -v s="$sent" \
        'BEGIN { printf "%.1f", (s > 0 ? 100 * r / s : 0) }')%; its count includes sockperf's warm-up)"
}

# ---------------------------------------------------------------------------------------------
# Connection-rate rows.

row_crr() {  # key port [wrapper for both ends...]: the wrapper is for the server, and for the client with c3
    local key=$1 port=$2 json=$workdir/$1.json wrap_client=()
    shift 2
    if (($#)); then
        onload_server "$key" "$port" 'any(.tcp[]; .state == "LISTEN" and .localPort == $port)' \
            "$@" --interface "$IF_K" "$workdir/tcp_crr" server "$ADDR_K" "$port" "$SIZE" || return 0
        [[ $key == c3 ]] && wrap_client=("$@" --interface "$IF_C")
    else
        kernel_server "$key-server" tcp "$port" "$workdir/tcp_crr" server "$ADDR_K" "$port" "$SIZE"
        server_pid=$last_pid
    fi
    start_client "$key" "${wrap_client[@]}" "$workdir/tcp_crr" client "$ADDR_K" "$port" "$SIZE" "$seconds" 100 "$json"
    [[ $key == c2 ]] && measure_allocation "$key" "$server_pid" TcpPassiveOpens connections ""
    if ! finish_client || [[ ! -s $json ]]; then
        record_fail "$key" "tcp_crr client failed ($(tail -n 1 "$client_log"))"
    else
        R_STATUS[$key]=ok; R_VALUE[$key]=$(json_field "$json" per_second)
        R_EXTRA[$key]="one connection median $(fmt "$(json_field "$json" median)") µs, p99 $(fmt "$(json_field "$json" p99)")"
        R_EXTRA[$key]+=" µs, max $(fmt "$(json_field "$json" max)") µs; $(json_field "$json" connections) connections,"
        R_EXTRA[$key]+=" errors $(json_field "$json" errors)"
    fi
    stop_pid "$server_pid"
}

# ---------------------------------------------------------------------------------------------
say "setting up namespaces $NS_K (servers) and $NS_C (clients), veth $IF_K <-> $IF_C"
gcc -std=c11 -O2 -Wall -Wextra -Werror -o "$workdir/tcp_crr" perf/tcp_crr.c
make_veth_pair

started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
load_start=$(cut -d' ' -f1-3 /proc/loadavg)

say "kernel rows, $seconds s each (no onload-driverd yet)"
kernel_server iperf3 tcp "$PORT_IPERF" iperf3 -s -B "$ADDR_K" -p "$PORT_IPERF"
kernel_iperf3=$last_pid
kernel_server iperf3-lo tcp "$PORT_IPERF_LO" iperf3 -s -B 127.0.0.1 -p "$PORT_IPERF_LO"
kernel_iperf3_lo=$last_pid
row_iperf3_kernel t1 "$PORT_IPERF" "$ADDR_K"
offloads on
row_iperf3_kernel t2 "$PORT_IPERF" "$ADDR_K"
offloads off
row_iperf3_kernel t6 "$PORT_IPERF_LO" 127.0.0.1
stop_pids "$kernel_iperf3" "$kernel_iperf3_lo"
row_message_rate m1 "$PORT_UDP"
row_crr c1 "$PORT_CRR"

say "accelerated rows over the veth, $seconds s each, an onload-driverd in each namespace"
daemons=()
if start_driverd "$NS_K" "$IF_K" && start_driverd "$NS_C" "$IF_C"; then
    row_iperf3_onload t3
    row_stream t4 "$NS_K" "$NS_C" --interface "$IF_K" --mode exclusive -- --interface "$IF_C" --mode exclusive \
        --server "$ADDR_K:$PORT_SINK"
    row_message_rate m2 "$PORT_UDP_ONLOAD" "${onload[@]}" --profile latency
    row_crr c2 "$PORT_CRR_ONLOAD" "${onload[@]}" --profile latency
    row_crr c3 "$PORT_CRR_ONLOAD" "${onload[@]}" --profile latency
else
    for r in t3 t4 m2 c2 c3; do
        record_fail "$r" "onload-driverd did not start ($(tail -q -n 2 "$workdir"/driverd-*.log | tr '\n' ' '))"
    done
fi
stop_driverds "${daemons[@]}"
say "shared-memory VNICs, $seconds s"
row_stream t5 "$NS_C" "$NS_C" --vnic "shm:olr-$$" --addr "$SHM_NET.1/$PREFIX" -- --vnic "shm:olr-$$" --addr "$SHM_NET.2/$PREFIX" \
    --server "$SHM_NET.1:$PORT_SINK"
load_end=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------------------------------------
# The report.

base_ratio() {  # key [base]
    local key=$1 base=${2:-${ROW_BASE[$1]:-}}
    [[ -n $base && ${R_STATUS[$base]:-} == ok ]] && ratio "${R_VALUE[$key]}" "${R_VALUE[$base]}"
    return 0
}

section() {  # title unit rows...
    local title=$1 unit=$2 r
    shift 2
    echo
    echo "## $title"
    echo
    echo "| row | what | $unit | ÷ ${ROW_BASE[$2]:-$1} | notes |"
    echo "| --- | --- | ---: | ---: | --- |"
    for r in "$@"; do
        [[ -n ${R_STATUS[$r]:-} ]] || continue
        if [[ ${R_STATUS[$r]} == ok ]]; then
            echo "| $r | ${ROW_DESC[$r]} | $(fmt "${R_VALUE[$r]}") | $(base_ratio "$r") | ${R_EXTRA[$r]//|/\\|} |"
        else
            echo "| $r | ${ROW_DESC[$r]} | ${R_STATUS[$r]}: ${R_NOTE[$r]//|/\\|} | | |"
        fi
    done
}

machine_facts
md=$workdir/rates.md
{
    echo "# Throughput, message rate and connection rate, kernel beside accelerated (issue 8)"
    echo
    echo "One run of \`perf/rates.sh$( ((quick)) && echo " --quick")\`, $started: Linux $kernel, $cpu, $ncpu cores (a VM);"
    echo "load average $load_start at the start, $load_end at the end$( ((quick)) && echo "; --quick: 2 s rows, to prove the suite runs, not figures to quote")."
    echo "$seconds s per row. Pinning: $pinning. veth offloads off in every row but t2; lo as it comes (t6)."
    echo "Accelerated rows: driverlink (an onload-driverd per namespace), exclusive AF_XDP VNICs; the stack has no"
    echo "segmentation or checksum offload of its own, and sends MTU-sized segments (9000 B MTU on shm)."
    section "Single-stream TCP throughput (Gbit/s the receiving program read)" Gbit/s t1 t2 t3 t4 t5 t6
    if [[ ${R_STATUS[t5]:-} == ok && ${R_STATUS[t6]:-} == ok ]]; then
        echo
        echo "Shared memory (t5) against kernel loopback (t6): $(base_ratio t5 t6)."
    fi
    section "UDP $SIZE B message rate (messages sent per second by one thread)" "messages/s" m1 m2
    section "TCP connection rate: connect, $SIZE B each way, the server closes, close" "connections/s" c1 c2 c3
    echo
    echo "## Allocation by the accelerated server's stack during the row"
    echo
    echo "Bytes its runtime allocated (the dump thread's own left out) and collections it ran between two"
    echo "onload-stackdump dumps a quarter (at most 1 s) and three quarters of the row in. The target is 0 B and 0 GCs."
    echo
    echo "| row | between the dumps | bytes allocated | bytes each | GCs |"
    echo "| --- | ---: | ---: | ---: | ---: |"
    for r in t3 m2 c2; do
        [[ -n ${R_STATUS[$r]:-} ]] || continue
        if [[ -z ${A_BYTES[$r]:-} ]]; then
            echo "| $r | not measured: ${A_NOTE[$r]:-the row did not get that far} | | | |"
        else
            echo "| $r | ${A_UNITS[$r]} | ${A_BYTES[$r]} | $(per_message "${A_BYTES[$r]}" "${A_UNITS[$r]%% *}") | ${A_GCS[$r]} |"
        fi
    done
} >"$md"

# A row of rates.json: its figure, named for its unit, that against its base row, and the server stack's allocation.
json_row() {  # key
    local r=$1 unit rv
    printf '"row": "%s", "description": %s, "status": "%s"' "$r" "$(json_str "${ROW_DESC[$r]}")" "${R_STATUS[$r]}"
    [[ ${R_STATUS[$r]} == ok ]] || return 0
    case $r in t*) unit=gbit_per_s ;; m*) unit=messages_per_s ;; *) unit=connections_per_s ;; esac
    rv=$(base_ratio "$r")
    printf ', "%s": %s, "ratio_to_%s": %s, "notes": %s' "$unit" "${R_VALUE[$r]}" "${ROW_BASE[$r]:-$r}" "${rv:-1}" \
        "$(json_str "${R_EXTRA[$r]}")"
    if [[ -n ${A_BYTES[$r]:-} ]]; then
        printf ', "allocation": {"%s": %s, "bytes": %s, "gcs": %s}' "${A_UNITS[$r]#* }" "${A_UNITS[$r]%% *}" \
            "${A_BYTES[$r]}" "${A_GCS[$r]}"
    fi
}

json=$workdir/rates.json
write_json "$json" : json_row t1 t2 t3 t4 t5 t6 m1 m2 c1 c2 c3
jq empty "$json" || die "wrote invalid JSON: $json"
publish "$out" "$md" "$json"
