#!/usr/bin/env bash
# The issue 8 latency table: sockperf ping-pong, kernel beside accelerated, UDP and TCP, 64 B and 1 KiB, one run.
#
#   namespace olq-k (servers)                        namespace olq-c (clients)
#   olq-k0 10.86.0.1/24  sockperf servers  <- veth ->  olq-c0 10.86.0.2/24  sockperf clients
#   lo     127.0.0.1     sockperf servers (row 5)      shm VNICs 10.86.1.1 and .2 (row 4, both ends here)
#
# Rows, for each protocol (UDP, TCP) and size (64, 1024 B); half round trip (RTT/2), one message in flight:
#   1  kernel -> kernel over the veth: sockperf ping-pong -> sockperf server       (the baseline of the ratios)
#   2  the same with the kernel's busy polling: both ends `--lls 50` (SO_BUSY_POLL, 50 us), GRO on for the row
#      (busy polling polls the socket's NAPI instance, and a veth has one only with GRO or XDP on)
#   3  accelerated -> accelerated over the same veth: the same sockperf binaries, client and server, each under
#      `onload-run --profile latency` (driverlink mode on the kernel's addresses, exclusive VNIC mode from the
#      profile); each namespace runs its own onload-driverd on its veth end, started for the row and stopped after
#      it (its XDP program would otherwise sit under the kernel rows). onload-stackdump --json, in both namespaces
#      during the row, must show sockperf's socket on the stack, or the row fails: it did not measure the stack.
#      The table says the VNIC mode stackdump reported. Allocation, from the same row: onload-stackdump --json asks
#      both stacks for their runtime's figures (bytes allocated, its own dump thread's left out; collections) once a
#      quarter of the measured time (at most 1 s) after sockperf's "Starting test", and again 0.5 s before the
#      measured time ends; the report gives, per side, the bytes per message (divided by the messages that stack
#      received between the two: UDP datagrams, or TCP segments, TcpInSegs) and the collections between them. Each
#      dump holds the stack's lock for a copy and stops the runtime's threads for a moment (as an exact allocation
#      count needs), and the dumping process takes a CPU from the two spinning ends for a few tens of ms.
#   4  stack -> stack through shared-memory VNICs on one host: onload-pingpong client and server (busy-polling,
#      sockperf's message format), not sockperf: onload-run carries a program on driverlink only, and there is no
#      shm interface for it to attach to.
#   5  kernel loopback: sockperf ping-pong -> sockperf server on lo, in olq-k
# Ratios: each row's median and p99 divided by row 1's of the same protocol and size, same run.
#
# Busy polling and namespaces: net.core.busy_read and busy_poll are not per network namespace on this kernel (a
# namespace has no /proc/sys/net/core/busy_read), so setting them would change the host's every socket. Row 2 uses
# their per-socket form instead (sockperf --lls sets SO_BUSY_POLL; sockperf blocks in recvfrom, where it applies);
# nothing outside the two sockperf processes changes.
#
# Percentiles: sockperf's own (exact, from its samples) for sockperf rows, HdrHistogram's (3 significant digits)
# for onload-pingpong's. Clients on CPU 0, servers and the daemons on CPU 1 (taskset); veth offloads off (but
# GRO in row 2). Results in perf/results/: sockperf.md, sockperf.json, and one PNG per protocol and size,
# sockperf-PROTO-SIZE.png: the rows' percentile curves (latency against percentile, log scales; made with gnuplot,
# installed from Debian's gnuplot-nox if missing, else the plots are skipped with a message).
#
# Needs root, iproute2, ethtool, taskset, a built dist/ (make); installs sockperf, jq and gnuplot-nox if missing.
# Cleans up on exit, failure and Ctrl-C: kills what it started (by pid), deletes its namespaces (and the veth with
# them); sweeps what an earlier, killed run left first. Exits non-zero if a row failed. No thresholds.
#
# Usage: perf/sockperf.sh [--quick] [--seconds N] [--sizes "64 1024"] [--protocols "udp tcp"] [--out DIR]
#   --quick        every row, 2 s each (make bench-quick): proves the suite runs; figures not for quoting
#   --seconds N    measuring time per row (default 10; quick 2)
#   --sizes L      payload sizes in bytes (default "64 1024")
#   --protocols L  "udp tcp" (default), or either
#   --out DIR      where the results go (default perf/results)
# Reproduce: `sudo make bench-sockperf` (SOCKPERF_ARGS="--seconds 30" to pass options), on a quiet machine.
# Environment: PINGPONG, ONLOAD_RUN, DRIVERD, STACKDUMP (default dist/bin/...), CLIENT_CPU (0), SERVER_CPU (1).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=perf/lib.sh
source perf/lib.sh

NAME=sockperf
name_veth_pair olq
PREFIX=24
ADDR_K=10.86.0.1       # server side (the kernel's address, also the accelerated server's in row 3)
ADDR_C=10.86.0.2       # client side
SHM_NET=10.86.1        # shared-memory link (row 4)
PORT_KERNEL=13111      # sockperf server (row 1), UDP and TCP
PORT_BUSY=13112        # sockperf server --lls (row 2)
PORT_ONLOAD=13113      # sockperf server under onload-run (row 3)
PORT_SHM=13114         # onload-pingpong --server-mode (row 4)
PORT_LO=13115          # sockperf server on lo (row 5)
LLS_US=50              # busy-polling time per blocking read (net.core.busy_read's usual setting)
DRIVERD_SOCKET=onload-driverd-olq

sizes="64 1024"
protocols="udp tcp"
parse_args sizes protocols -- "$@"
for p in $protocols; do [[ $p == udp || $p == tcp ]] || { echo "$NAME: --protocols: udp or tcp, not '$p'" >&2; exit 2; }; done

check_host bench-sockperf ip ethtool taskset ss
check_built "$ONLOAD_RUN" "$DRIVERD" "$STACKDUMP"
set_onload_run
install_missing sockperf jq
install_missing gnuplot:gnuplot-nox || true   # plots are a bonus: the tables stand without them
SOCKPERF=$(command -v sockperf)

set_pinning "clients on CPU $CLIENT_CPU, servers and onload-driverd on CPU $SERVER_CPU (taskset)"
mkdir -p "$out"
start_workdir

# ---------------------------------------------------------------------------------------------
# Results: one entry per PROTO:SIZE:ROW; R_CURVE names a file of "percentile value" lines.

declare -A R_STATUS R_NOTE R_MEDIAN R_P99 R_P999 R_MAX R_SAMPLES R_TOOL R_CURVE R_VNIC
# Row 3's allocation, per PROTO:SIZE:3:SIDE (client, server): between the two dumps, the messages the stack received,
# the bytes its runtime allocated and its collections; A_NOTE per PROTO:SIZE:3 when it could not be measured.
declare -A A_MSGS A_BYTES A_GCS A_NOTE
ROWS=(1 2 3 4 5)
declare -A ROW_DESC=(
    [1]="kernel → kernel over veth"
    [2]="kernel → kernel over veth, busy polling (SO_BUSY_POLL ${LLS_US} µs both ends, GRO on)"
    [3]="accelerated → accelerated over veth (onload-run --profile latency, driverlink)"
    [4]="stack → stack through shared-memory VNICs, one host"
    [5]="kernel loopback (lo)"
)

record_ok() {  # key median p99 p999 max samples tool curve-file
    R_STATUS[$1]=ok; R_MEDIAN[$1]=$2; R_P99[$1]=$3; R_P999[$1]=$4; R_MAX[$1]=$5; R_SAMPLES[$1]=$6; R_TOOL[$1]=$7
    R_CURVE[$1]=$8
}

# ---------------------------------------------------------------------------------------------
# Processes. The loop below sets $proto and $size; $tcp_opt is (--tcp) for TCP.

# Starts a sockperf server in NS on CPU $SERVER_CPU, the wrapper before sockperf (onload-run for row 3) and the
# options after it. Sets $last_pid.
start_sockperf_server() {  # name ns addr port [wrapper...] [-- sockperf options...]
    local name=$1 ns=$2 addr=$3 port=$4 before after
    shift 4
    split_args "$@"
    start_bg "$workdir/$name.log" ip netns exec "$ns" "${pin_server[@]}" "${before[@]}" "$SOCKPERF" server \
        "${tcp_opt[@]}" -i "$addr" -p "$port" "${after[@]}"
}

# A kernel sockperf server, once its port is bound (dies if it is not).
sockperf_server() {  # name ns addr port [-- sockperf options...]
    start_sockperf_server "$@"
    wait_port "$2" "$proto" "$4" "$last_pid" || die "$1 did not start: $(tail -n 3 "$workdir/$1.log")"
}

# Starts sockperf ping-pong in NS on CPU $CLIENT_CPU for the row's time and size; sets $client_pid, $client_log.
start_sockperf_client() {  # key ns addr port [wrapper...] [-- sockperf options...]
    local key=$1 ns=$2 addr=$3 port=$4 before after
    shift 4
    split_args "$@"
    client_log=$workdir/${key//:/-}.log
    echo "row $key: ${before[*]:+${before[*]} }sockperf ping-pong ${tcp_opt[*]} -i $addr -p $port -m $size -t $seconds${after[*]:+ ${after[*]}}"
    start_bg "$client_log" ip netns exec "$ns" "${pin_client[@]}" "${before[@]}" "$SOCKPERF" ping-pong \
        "${tcp_opt[@]}" -i "$addr" -p "$port" -m "$size" -t "$seconds" "${after[@]}"
    client_pid=$last_pid
}

# Waits for the client started last and records its percentiles (or the failure).
finish_sockperf_client() {  # key tool
    local key=$1 tool=$2 curve
    if ! wait_for "$client_pid" $((seconds + 30)); then
        record_fail "$key" "sockperf ping-pong failed ($(tail -n 2 "$client_log" | tr '\n' ' '))"
        return 1
    fi
    if ! read_sockperf "$client_log"; then
        record_fail "$key" "could not read sockperf's percentiles ($(tail -n 2 "$client_log" | tr '\n' ' '))"
        return 1
    fi
    curve=${client_log%.log}.curve
    sockperf_curve "$client_log" >"$curve"
    record_ok "$key" "$sp_median" "$sp_p99" "$sp_p999" "$sp_max" "$sp_samples" "$tool" "$curve"
}

sockperf_row() {  # key ns addr port [-- sockperf options...]
    local key=$1
    start_sockperf_client "$@"
    finish_sockperf_client "$key" sockperf || true
}

# The jq filter over a stack's snapshot (with $port) that shows the row's socket on it: a TCP listener on the port
# or a connection to it, or a UDP socket on the port or one that has received.
socket_filter() {  # server|client
    case $proto:$1 in
        tcp:server) echo 'any(.tcp[]; .state == "LISTEN" and .localPort == $port)' ;;
        tcp:client) echo 'any(.tcp[]; .state == "ESTABLISHED" and .remotePort == $port)' ;;
        udp:server) echo 'any(.udp[]; .localPort == $port)' ;;
        udp:client) echo 'any(.udp[]; .inDatagrams > 0)' ;;
    esac
}

# Records in A_* for KEY:SIDE what one stack received, allocated and collected between two runtime_figures.
allocation_between() {  # key:side before after
    local b0 g0 m0 b1 g1 m1
    read -r b0 g0 m0 <<<"$2"
    read -r b1 g1 m1 <<<"$3"
    A_MSGS[$1]=$((m1 - m0)); A_BYTES[$1]=$((b1 - b0)); A_GCS[$1]=$((g1 - g0))
}

# Row 3's allocation (see the header): both stacks' runtime_figures after the warm-up and before the row's end,
# while the client runs; records the differences in A_*, or why not in A_NOTE.
measure_allocation() {  # key measured-time-start-ms server-pid
    local key=$1 start=$2 server=$3 c0 s0 c1 s1
    nap_until $((start + $(first_dump_ms)))
    local counter=UdpInDatagrams
    [[ $proto == tcp ]] && counter=TcpInSegs
    if ! c0=$(runtime_figures "$NS_C" "$client_pid" $counter) || ! s0=$(runtime_figures "$NS_K" "$server" $counter); then
        A_NOTE[$key]="onload-stackdump did not answer after the warm-up"
        return 0
    fi
    nap_until $((start + seconds * 1000 - 500))
    if ! c1=$(runtime_figures "$NS_C" "$client_pid" $counter) || ! s1=$(runtime_figures "$NS_K" "$server" $counter); then
        A_NOTE[$key]="onload-stackdump did not answer before the row's end"
        return 0
    fi
    allocation_between "$key:client" "$c0" "$c1"
    allocation_between "$key:server" "$s0" "$s1"
    echo "    allocation: client ${A_BYTES[$key:client]} B over ${A_MSGS[$key:client]} messages, ${A_GCS[$key:client]} GCs;" \
        "server ${A_BYTES[$key:server]} B over ${A_MSGS[$key:server]} messages, ${A_GCS[$key:server]} GCs"
}

# ---------------------------------------------------------------------------------------------
# Rows 2, 3 and 4 (rows 1 and 5 are a plain sockperf_row).

row_busy_poll() {  # key
    offloads on gro
    sockperf_row "$1" "$NS_C" "$ADDR_K" "$PORT_BUSY" -- --lls "$LLS_US"
    offloads off gro
}

row_onload() {  # key
    local key=$1 daemons=() server_pid mode_server mode_client measured_start
    if ! start_driverd "$NS_K" "$IF_K" || ! start_driverd "$NS_C" "$IF_C"; then
        record_fail "$key" "onload-driverd did not start ($(tail -q -n 2 "$workdir"/driverd-*.log | tr '\n' ' '))"
        stop_driverds "${daemons[@]}"
        return 0
    fi
    # Its listener is on the stack, not in the kernel (ss does not show it): onload-stackdump says when it is up.
    start_sockperf_server "onload-server-$proto-$size" "$NS_K" "$ADDR_K" "$PORT_ONLOAD" "${onload[@]}" --profile latency \
        --interface "$IF_K"
    server_pid=$last_pid
    if ! mode_server=$(on_stack "$NS_K" "$server_pid" "$PORT_ONLOAD" "$(socket_filter server)"); then
        record_fail "$key" "onload-stackdump never showed the sockperf server's socket on the stack ($(tail -n 2 \
            "$workdir/onload-server-$proto-$size.log" | tr '\n' ' '))"
        stop_pid "$server_pid"
        stop_driverds "${daemons[@]}"
        return 0
    fi
    start_sockperf_client "$key" "$NS_C" "$ADDR_K" "$PORT_ONLOAD" "${onload[@]}" --profile latency \
        --interface "$IF_C"
    # sockperf's measured time starts after its warm-up messages (with attaching, seconds after it started).
    wait_log "$client_pid" "$client_log" "Starting test" && measured_start=$(now_ms) || measured_start=""
    mode_client=$(on_stack "$NS_C" "$client_pid" "$PORT_ONLOAD" "$(socket_filter client)") || mode_client=""
    if [[ -z $mode_client ]]; then
        A_NOTE[$key]="the client's socket was not on the stack"
    elif [[ -z $measured_start ]]; then
        A_NOTE[$key]="sockperf never said it started its test"
    else
        measure_allocation "$key" "$measured_start" "$server_pid"
    fi
    if finish_sockperf_client "$key" sockperf && [[ -z $mode_client ]]; then
        record_fail "$key" "onload-stackdump never showed the sockperf client's socket on the stack: it measured the kernel"
    fi
    stop_pid "$server_pid"
    stop_driverds "${daemons[@]}"
    [[ -n $mode_client ]] && echo "    VNIC: client $mode_client, server $mode_server"
    if [[ ${R_STATUS[$key]} == ok ]]; then
        R_VNIC[$key]="client $mode_client, server $mode_server"
        if [[ ${mode_client%% *} == "${mode_server%% *}" ]]; then
            R_TOOL[$key]="sockperf under onload-run both ends, VNIC $mode_client"
        else
            R_TOOL[$key]="sockperf under onload-run, VNIC client $mode_client, server $mode_server"
        fi
    fi
}

row_shm() {  # key
    local key=$1 name="olq-$$-$proto-$size" json log curve rc=0
    if ! have_kind shm; then
        record_skip "$key" "not yet: this build of onload-pingpong has no shm VNIC kind"
        return 0
    fi
    log=$workdir/${key//:/-}.log
    json=${log%.log}.json
    # Both ends in olq-c: the shm rendezvous is an abstract Unix socket, which belongs to a network namespace.
    if ! pingpong_server "$log.server" "$NS_C" --sockperf --vnic "shm:$name" --addr "$SHM_NET.1/$PREFIX" \
        --port "$PORT_SHM" "${tcp_opt[@]}"; then
        record_fail "$key" "$server_error"
        return 0
    fi
    pingpong_client_run "$key" "$log" "$json" "$NS_C" "$SHM_NET.1:$PORT_SHM" "$size" "${tcp_opt[@]}" \
        --vnic "shm:$name" --addr "$SHM_NET.2/$PREFIX" || rc=$?
    stop_pid "$server_pid"
    if ((rc != 0)) || [[ ! -s $json ]]; then
        record_fail "$key" "onload-pingpong exited with status $rc ($(tail -n 1 "$log"))"
        return 0
    fi
    curve=${log%.log}.curve
    printf '0 %s\n50 %s\n90 %s\n99 %s\n99.9 %s\n99.99 %s\n100 %s\n' "$(json_field "$json" min)" \
        "$(json_field "$json" median)" "$(json_field "$json" p90)" "$(json_field "$json" p99)" \
        "$(json_field "$json" p99_9)" "$(json_field "$json" p99_99)" "$(json_field "$json" max)" >"$curve"
    record_ok "$key" "$(json_field "$json" median)" "$(json_field "$json" p99)" "$(json_field "$json" p99_9)" \
        "$(json_field "$json" max)" "$(json_field "$json" samples)" \
        "onload-pingpong both ends (not sockperf: onload-run has no shm VNIC), busy-polling" "$curve"
}

# ---------------------------------------------------------------------------------------------
say "setting up namespaces $NS_K (servers) and $NS_C (clients), veth $IF_K <-> $IF_C"
make_veth_pair
"$SOCKPERF" --version 2>&1 | head -n 1

started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
for proto in $protocols; do
    tcp_opt=()
    [[ $proto == tcp ]] && tcp_opt=(--tcp)
    say "$proto: kernel sockperf servers in $NS_K (they sleep in recvfrom between messages)"
    sockperf_server "server-$proto" "$NS_K" "$ADDR_K" "$PORT_KERNEL"
    kernel_pids=("$last_pid")
    sockperf_server "server-busy-$proto" "$NS_K" "$ADDR_K" "$PORT_BUSY" -- --lls "$LLS_US"
    kernel_pids+=("$last_pid")
    sockperf_server "server-lo-$proto" "$NS_K" 127.0.0.1 "$PORT_LO"
    kernel_pids+=("$last_pid")
    for size in $sizes; do
        say "$proto, $size B, $seconds s per row"
        sockperf_row "$proto:$size:1" "$NS_C" "$ADDR_K" "$PORT_KERNEL"
        row_busy_poll "$proto:$size:2"
        row_onload "$proto:$size:3"
        row_shm "$proto:$size:4"
        sockperf_row "$proto:$size:5" "$NS_K" 127.0.0.1 "$PORT_LO"
    done
    stop_pids "${kernel_pids[@]}"
done
load_end=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------------------------------------
# The report.

tool_of() {  # key
    if [[ -n ${R_TOOL[$1]:-} && ${R_TOOL[$1]} != sockperf ]]; then echo "${R_TOOL[$1]}"; else echo "sockperf both ends"; fi
}

table() {  # proto size
    local base="$1:$2:1" r key
    echo "| row | client → server | tools | median | p99 | p99.9 | max | samples | median ÷ 1 | p99 ÷ 1 |"
    echo "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    for r in "${ROWS[@]}"; do
        key="$1:$2:$r"
        [[ -n ${R_STATUS[$key]:-} ]] || continue
        if [[ ${R_STATUS[$key]} == ok ]]; then
            latency_ratios "$key" "$base"
            echo "| $r | ${ROW_DESC[$r]} | $(tool_of "$key") | $(fmt "${R_MEDIAN[$key]}") | $(fmt "${R_P99[$key]}") |" \
                "$(fmt "${R_P999[$key]}") | $(fmt "${R_MAX[$key]}") | ${R_SAMPLES[$key]} | $median_ratio | $p99_ratio |"
        else
            echo "| $r | ${ROW_DESC[$r]} | ${R_STATUS[$key]}: ${R_NOTE[$key]//|/\\|} | | | | | | | |"
        fi
    done
}

# One PNG per protocol and size: each row's percentile curve. x is -log10(1 - percentile/100), so 90, 99, 99.9 ...
# are evenly spaced; the max sits at 1 - 1/samples, and percentiles beyond it (sockperf prints 99.999 of 20,000
# samples: the max again) are left out.
plot() {  # proto size png
    local proto=$1 size=$2 png=$3 data=$workdir/plot-$1-$2.dat r key plots=() i=0
    : >"$data"
    for r in "${ROWS[@]}"; do
        key="$proto:$size:$r"
        [[ ${R_STATUS[$key]:-} == ok ]] || continue
        awk -v n="${R_SAMPLES[$key]}" '
            { p = $1 >= 100 ? 1 - 1 / n : $1 / 100 }
            p < 1 - 1 / n || $1 >= 100 { printf "%.6f %s\n", -log(1 - p) / log(10), $2 }' \
            "${R_CURVE[$key]}" >>"$data"
        printf '\n\n' >>"$data"
        plots+=("'$data' index $i using 1:2 with linespoints title '$r: ${ROW_DESC[$r]//\'/}'")
        i=$((i + 1))
    done
    ((i > 0)) || return 0
    gnuplot <<EOF
set terminal pngcairo size 1100,700 font ",10" noenhanced
set output '$png'
set title "${proto^^} ${size} B ping-pong, half round trip (one run of perf/sockperf.sh$( ((quick)) && echo " --quick"), $started)"
set xlabel "percentile"
set ylabel "µs"
set logscale y
set grid
set key outside below
set xtics ("0" 0, "90" 1, "99" 2, "99.9" 3, "99.99" 4, "99.999" 5, "99.9999" 6)
plot $(IFS=,; echo "${plots[*]}")
EOF
}

machine_facts
sockperf_version=$("$SOCKPERF" --version 2>&1 | sed -n 's/.*version #*\([^ ]*\).*/\1/p' | head -n 1)
pngs=()
if command -v gnuplot >/dev/null; then
    for proto in $protocols; do
        for size in $sizes; do
            png=$workdir/sockperf-$proto-$size.png
            if plot "$proto" "$size" "$png" && [[ -s $png ]]; then
                pngs+=("$png")
            else
                echo "$NAME: gnuplot made no plot for $proto $size B" >&2
            fi
        done
    done
else
    echo "$NAME: gnuplot is not installed and could not be (Debian package gnuplot-nox): no plots" >&2
fi

md=$workdir/sockperf.md
{
    echo "# Ping-pong latency, kernel beside accelerated (issue 8)"
    echo
    echo "One run of \`perf/sockperf.sh$( ((quick)) && echo " --quick")\`, $started: Linux $kernel, $cpu, $ncpu cores (a VM);"
    echo "load average $load_start at the start, $load_end at the end$( ((quick)) && echo "; --quick: 2 s rows, to prove the suite runs, not figures to quote")."
    echo "Half round trip (RTT/2) in µs, one message in flight, $seconds s per row after warm-up. sockperf $sockperf_version"
    echo "(its own percentiles, exact) unless the row names onload-pingpong (HdrHistogram, 3 significant digits)."
    echo "Pinning: $pinning. veth offloads off on both ends (GRO on in row 2 alone); IPv6 off."
    echo "Row 2: \`--lls $LLS_US\` on both sockperf ends, the per-socket form of net.core.busy_read (the sysctls are not per"
    echo "namespace on this kernel; the host's are untouched). Row 3: both sockperf processes under \`onload-run --profile"
    echo "latency\` (ONLOAD_SPIN_US=100000, ONLOAD_VNIC_MODE=exclusive), each namespace with its own onload-driverd;"
    echo "onload-stackdump showed both sockets on the stack and the VNIC mode in the tools column."
    echo "Ratios: the row's value divided by row 1's of the same protocol and size (below 1: lower latency than the kernel)."
    for proto in $protocols; do
        for size in $sizes; do
            echo
            echo "## ${proto^^} $size B, half round trip, µs"
            echo
            table "$proto" "$size"
            [[ " ${pngs[*]} " == *"/sockperf-$proto-$size.png "* ]] && { echo; echo "![${proto^^} $size B percentile curves](sockperf-$proto-$size.png)"; }
        done
    done
    echo
    echo "## Allocation in row 3"
    echo
    echo "What each sockperf's stack allocated on its managed heap (the runtime's allocated bytes, the dump server's own"
    echo "left out) and how many garbage collections it ran, between two onload-stackdump dumps taken during the row:"
    echo "a quarter of the row's measured time (at most 1 s) after sockperf's own warm-up, and 0.5 s before the measured"
    echo "time ends. Messages: what that stack"
    echo "received between the two (UDP datagrams; TCP segments, TcpInSegs). The target is 0 bytes per message and 0 GCs."
    echo
    echo "| protocol, size | side | messages | bytes allocated | bytes per message | GCs |"
    echo "| --- | --- | ---: | ---: | ---: | ---: |"
    for proto in $protocols; do
        for size in $sizes; do
            key="$proto:$size:3"
            [[ -n ${R_STATUS[$key]:-} ]] || continue
            if [[ -n ${A_NOTE[$key]:-} || -z ${A_MSGS[$key:client]:-} ]]; then
                echo "| ${proto^^} $size B | | not measured: ${A_NOTE[$key]:-the row did not run} | | | |"
                continue
            fi
            for side in client server; do
                echo "| ${proto^^} $size B | $side | ${A_MSGS[$key:$side]} | ${A_BYTES[$key:$side]} |" \
                    "$(per_message "${A_BYTES[$key:$side]}" "${A_MSGS[$key:$side]}") | ${A_GCS[$key:$side]} |"
            done
        done
    done
} >"$md"

sockperf_json_fields() {
    printf '  "metric": "half round trip",\n  "unit": "us",\n  "sockperf": %s,\n' "$(json_str "$sockperf_version")"
}

# Row 3's allocation per side as JSON fields (", " first), or why it was not measured, or nothing.
json_allocation() {  # key
    local key=$1 side bpm
    if [[ -n ${A_MSGS[$key:client]:-} ]]; then
        printf ', "allocation": {'
        for side in client server; do
            bpm=$(per_message "${A_BYTES[$key:$side]}" "${A_MSGS[$key:$side]}")
            printf '"%s": {"messages": %s, "bytes": %s, "bytes_per_message": %s, "gcs": %s}%s' "$side" \
                "${A_MSGS[$key:$side]}" "${A_BYTES[$key:$side]}" "${bpm:-null}" "${A_GCS[$key:$side]}" \
                "$([[ $side == client ]] && echo ", ")"
        done
        printf '}'
    elif [[ -n ${A_NOTE[$key]:-} ]]; then
        printf ', "allocation_note": %s' "$(json_str "${A_NOTE[$key]}")"
    fi
}

# A row of sockperf.json, by PROTO:SIZE:ROW: its percentiles, its ratios to row 1's, its VNICs and allocation (row
# 3) and its percentile curve.
json_row() {  # key
    local key=$1 proto size r
    IFS=: read -r proto size r <<<"$key"
    printf '"protocol": "%s", "size": %s, "row": %s, "description": %s, "status": "%s"' \
        "$proto" "$size" "$r" "$(json_str "${ROW_DESC[$r]}")" "${R_STATUS[$key]}"
    [[ ${R_STATUS[$key]} == ok ]] || return 0
    printf ', "tools": %s, "median": %s, "p99": %s, "p99_9": %s, "max": %s, "samples": %s' \
        "$(json_str "$(tool_of "$key")")" "${R_MEDIAN[$key]}" "${R_P99[$key]}" "${R_P999[$key]}" \
        "${R_MAX[$key]}" "${R_SAMPLES[$key]}"
    if [[ ${R_STATUS[$proto:$size:1]:-} == ok ]]; then
        latency_ratios "$key" "$proto:$size:1"
        printf ', "median_ratio_to_1": %s, "p99_ratio_to_1": %s' "${median_ratio:-null}" "${p99_ratio:-null}"
    fi
    [[ -n ${R_VNIC[$key]:-} ]] && printf ', "vnic": %s' "$(json_str "${R_VNIC[$key]}")"
    json_allocation "$key"
    printf ', "percentiles": [%s]' "$(awk '{ printf "%s[%s, %s]", (NR > 1 ? ", " : ""), $1 + 0, $2 + 0 }' "${R_CURVE[$key]}")"
}

json=$workdir/sockperf.json
keys=()
for proto in $protocols; do
    for size in $sizes; do
        for r in "${ROWS[@]}"; do keys+=("$proto:$size:$r"); done
    done
done
write_json "$json" sockperf_json_fields json_row "${keys[@]}"

for png in "${pngs[@]}"; do
    cp "$png" "$out/"
done
jq empty "$json" || die "wrote invalid JSON: $json"
publish "$out" "$md" "$json"
