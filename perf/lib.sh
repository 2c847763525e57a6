# Helpers shared by the benchmark scripts (perf/latency.sh, tcp.sh, driverlink.sh, sockperf.sh, rates.sh); sourced, not run.
#
# The sourcing script sets, before calling anything here:
#   NAME                     prefix of its messages ("latency", "tcp")
#   NS_K NS_C IF_K IF_C      the kernel-server and client namespaces and the veth ends in them (name_veth_pair)
#   ADDR_K ADDR_C PREFIX     the kernel's addresses on those ends
# and then calls parse_args, check_host, set_pinning and start_workdir (which installs the cleanup traps).

# The stack's programs from this build, unless the environment names others, and the CPUs for clients and servers.
PINGPONG=${PINGPONG:-dist/bin/onload-pingpong}
ONLOAD_RUN=${ONLOAD_RUN:-dist/bin/onload-run}
DRIVERD=${DRIVERD:-dist/bin/onload-driverd}
STACKDUMP=${STACKDUMP:-dist/bin/onload-stackdump}
CLIENT_CPU=${CLIENT_CPU:-0}
SERVER_CPU=${SERVER_CPU:-1}

die() { echo "$NAME: $*" >&2; exit 1; }
say() { printf '\n== %s\n' "$*"; }

# Root, bash 5.1 (for wait -n -p), the tools given, and a built onload-pingpong (unless the script set
# NEEDS_PINGPONG=0); dies naming what is missing.
check_host() {  # make-target tool...
    local target=$1 tool
    shift
    ((BASH_VERSINFO[0] > 5 || (BASH_VERSINFO[0] == 5 && BASH_VERSINFO[1] >= 1))) || die "needs bash 5.1 or later"
    [[ $(id -u) -eq 0 ]] || die "must run as root: it creates network namespaces and opens AF_PACKET/AF_XDP sockets (try: sudo make $target)"
    for tool in "$@"; do
        command -v "$tool" >/dev/null || die "$tool not found (make deps installs it)"
    done
    [[ ${NEEDS_PINGPONG:-1} == 0 ]] || check_built "$PINGPONG"
}

# Dies unless each program this build makes is there.
check_built() {  # path...
    local program
    for program in "$@"; do
        [[ -x $program ]] || die "$program not found or not executable (run make first)"
    done
}

# Installs the Debian packages of those tools that are missing; TOOL:PACKAGE where the package has another name
# (gnuplot:gnuplot-nox).
install_missing() {  # tool[:package]...
    local tool missing=()
    for tool in "$@"; do
        command -v "${tool%%:*}" >/dev/null || missing+=("${tool#*:}")
    done
    ((${#missing[@]})) || return 0
    echo "$NAME: installing ${missing[*]} (Debian packages)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# Sets ncpu, pin_client and pin_server (taskset prefixes, empty on one CPU) and pinning (for the report).
set_pinning() {  # description-when-pinned
    ncpu=$(nproc)
    pin_client=(taskset -c "$CLIENT_CPU")
    pin_server=(taskset -c "$SERVER_CPU")
    pinning=$1
    if ((ncpu < 2)); then
        pin_client=()
        pin_server=()
        pinning="not pinned (1 CPU)"
    fi
}

# Names the namespaces PFX-k and PFX-c and the veth ends in them PFX-k0 and PFX-c0, from the script's own PFX: sweep
# deletes whatever carries it, so no other script or test may use it (the tests' is olt). Interface names: at most
# 15 characters.
name_veth_pair() {  # prefix
    ns_prefix=$1
    NS_K=$1-k
    NS_C=$1-c
    IF_K=$1-k0
    IF_C=$1-c0
}

# Makes $workdir (removed on exit), named after the namespaces' prefix and the script, the nap FIFO, and installs the
# cleanup traps.
start_workdir() {
    workdir=$(mktemp -d "${TMPDIR:-/tmp}/$ns_prefix-$NAME.XXXXXX")
    pids=()   # every process this script started in the background
    # A FIFO that never gets data: `read -t` on it sleeps without starting a process (see nap).
    mkfifo "$workdir/nap"
    exec {nap_fd}<>"$workdir/nap"
    trap cleanup EXIT
    trap 'echo "$NAME: interrupted" >&2; exit 130' INT
    trap 'echo "$NAME: terminated" >&2; exit 143' TERM
}

nap() { read -r -t "$1" -u "$nap_fd" _ || true; }

# The options every benchmark takes: --quick, --seconds N, --out DIR, --help (the script's head comment), and
# the valued options of its own named before "--": `parse_args sizes -- "$@"` takes --sizes L into $sizes.
# Sets quick, out (default perf/results) and seconds (default 10, quick 2; a whole number >= 1).
parse_args() {  # own-option... -- argument...
    local own=()
    while [[ $1 != -- ]]; do
        own+=("$1")
        shift
    done
    shift
    quick=0
    seconds=""
    out=perf/results
    while (($#)); do
        case $1 in
            --quick) quick=1 ;;
            --seconds) seconds=${2:?--seconds needs a value}; shift ;;
            --out) out=${2:?--out needs a value}; shift ;;
            -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[-1]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
            *)
                if [[ $1 == --* && " ${own[*]} " == *" ${1#--} "* ]]; then
                    printf -v "${1#--}" '%s' "${2:?$1 needs a value}"
                    shift
                else
                    echo "$NAME: unknown argument '$1' (try --help)" >&2
                    exit 2
                fi ;;
        esac
        shift
    done
    if ((quick)); then
        seconds=${seconds:-2}
    else
        seconds=${seconds:-10}
    fi
    [[ $seconds =~ ^[0-9]+$ && $seconds -ge 1 ]] || { echo "$NAME: --seconds must be a whole number >= 1" >&2; exit 2; }
}

# ---------------------------------------------------------------------------------------------
# Cleanup: kill what we started (by pid: TERM, then KILL), then delete the namespaces.

# Splits the arguments at the first "--" (dropped) into the arrays before and after; either may be empty.
split_args() {
    before=()
    while (($#)) && [[ $1 != -- ]]; do
        before+=("$1")
        shift
    done
    (($#)) && shift
    after=("$@")
}

# Whether a process runs (a zombie, dead but not yet waited for, does not).
alive() {
    local state=""
    [[ -r /proc/$1/stat ]] && read -r _ _ state _ <"/proc/$1/stat" 2>/dev/null
    [[ -n $state && $state != Z ]]
}

stop_pids() {
    local pid live=() n
    for pid in "$@"; do
        if alive "$pid"; then
            live+=("$pid")
        else
            wait "$pid" 2>/dev/null || true
        fi
    done
    ((${#live[@]})) || return 0
    kill -TERM "${live[@]}" 2>/dev/null || true
    for ((n = 0; n < 30; n++)); do
        for pid in "${live[@]}"; do
            alive "$pid" && break
            pid=""
        done
        [[ -n $pid ]] || break
        nap 0.1
    done
    for pid in "${live[@]}"; do
        if alive "$pid"; then
            echo "$NAME: pid $pid ($(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)) ignored SIGTERM for 3 s: SIGKILL" >&2
            kill -KILL "$pid" 2>/dev/null || true
        fi
        wait "$pid" 2>/dev/null || true
    done
}
stop_pid() { stop_pids "$1"; }

# Anything still running inside our namespaces (a run killed with SIGKILL leaves its servers there) is
# ours; then the namespaces go, and with them the veth.
sweep() {
    local ns pid
    for ns in "$NS_K" "$NS_C"; do
        if [[ -e /run/netns/$ns ]]; then
            for pid in $(ip netns pids "$ns" 2>/dev/null); do
                kill -KILL "$pid" 2>/dev/null || true
            done
            ip netns del "$ns" 2>/dev/null || true
        fi
    done
    ip link del "$IF_K" 2>/dev/null || true
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    ((${#pids[@]} == 0)) || stop_pids "${pids[@]}"
    sweep
    exec {nap_fd}>&- 2>/dev/null || true
    rm -rf "$workdir"
    exit "$rc"
}

# ---------------------------------------------------------------------------------------------
# Processes.

# Starts "$@" in the background with output to a log file; sets $last_pid. With job control on for the
# moment, it gets a process group of its own: Ctrl-C reaches this script alone, whose trap stops everything
# in order (otherwise a client that catches SIGINT would have bash wait on, taking the signal as handled).
start_bg() {
    local log=$1
    shift
    set -m
    "$@" >"$log" 2>&1 </dev/null &
    last_pid=$!
    set +m
    pids+=("$last_pid")
}

# Waits for a background process, but no longer than LIMIT seconds (then TERM, KILL). Returns its status.
# `wait` returns at once when a trapped signal (Ctrl-C) arrives, so the traps run without delay.
wait_for() {
    local pid=$1 limit=$2 rc=0 dog first=""
    sleep "$limit" &
    dog=$!
    pids+=("$dog")
    wait -n -p first "$pid" "$dog" || rc=$?
    if [[ $first == "$dog" ]]; then
        echo "$NAME: pid $pid still running after ${limit}s: stopping it" >&2
        stop_pid "$pid"
        return 124
    fi
    stop_pid "$dog"
    return "$rc"
}

# Waits until a log file contains a pattern, while the process lives, for at most 10 s.
wait_log() {
    local pid=$1 log=$2 pattern=$3
    local deadline=$((SECONDS + 10))
    until grep -q "$pattern" "$log" 2>/dev/null; do
        kill -0 "$pid" 2>/dev/null || return 1
        ((SECONDS < deadline)) || return 1
        nap 0.05
    done
}

# Waits until a port is bound (udp) or listens (tcp) in a namespace, while its process lives, for at most 10 s.
wait_port() {  # ns udp|tcp port pid
    local ns=$1 proto=$2 port=$3 pid=$4 flags
    [[ $proto == udp ]] && flags=-Hlun || flags=-Hltn
    local deadline=$((SECONDS + 10))
    until ip netns exec "$ns" ss "$flags" "sport = :$port" 2>/dev/null | grep -q .; do
        alive "$pid" || return 1
        ((SECONDS < deadline)) || return 1
        nap 0.05
    done
}

# Starts a server in $NS_K on the server CPU; sets $last_pid. Its log is $workdir/NAME.log.
start_server() {  # name command...
    local name=$1
    shift
    start_bg "$workdir/$name.log" ip netns exec "$NS_K" "${pin_server[@]}" "$@"
}

# A server in the kernel's stack: start_server, then wait until its port is bound (udp) or listens (tcp); dies if it
# does not.
kernel_server() {  # name udp|tcp port command...
    local name=$1 proto=$2 port=$3
    shift 3
    start_server "$name" "$@"
    wait_port "$NS_K" "$proto" "$port" "$last_pid" || die "$name did not start: $(tail -n 3 "$workdir/$name.log")"
}

# ---------------------------------------------------------------------------------------------
# The veth pair.

# Turns the offloads named (all four when none is) on or off, on both veth ends.
offloads() {  # on|off [tx|tso|gso|gro...]
    local state=$1 feature features=()
    shift
    (($#)) || set -- tx tso gso gro
    for feature in "$@"; do
        features+=("$feature" "$state")
    done
    ip netns exec "$NS_K" ethtool -K "$IF_K" "${features[@]}" >/dev/null
    ip netns exec "$NS_C" ethtool -K "$IF_C" "${features[@]}" >/dev/null
}

# Two namespaces joined by a veth, IPv6 off, offloads off on both ends (every frame carries a finished checksum
# and is no larger than the MTU), the kernel's addresses on both ends. Sweeps what an earlier run left first.
make_veth_pair() {
    local ns
    sweep
    ip netns add "$NS_K"
    ip netns add "$NS_C"
    for ns in "$NS_K" "$NS_C"; do
        # IPv6 off before the veth exists, so that it never sends router solicitations or DAD probes.
        ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
        ip -n "$ns" link set lo up
    done
    ip -n "$NS_K" link add "$IF_K" type veth peer name "$IF_C" netns "$NS_C"
    offloads off
    ip -n "$NS_K" addr add "$ADDR_K/$PREFIX" dev "$IF_K"
    ip -n "$NS_C" addr add "$ADDR_C/$PREFIX" dev "$IF_C"
    ip -n "$NS_K" link set "$IF_K" up
    ip -n "$NS_C" link set "$IF_C" up
}

# ---------------------------------------------------------------------------------------------
# Accelerated programs: an onload-driverd per namespace and onload-stackdump's view of a stack. The sourcing script
# sets DRIVERD, STACKDUMP and DRIVERD_SOCKET (the daemons' socket name, its own so as to meet no other daemon).

# An onload-driverd on NS's veth end on the server CPU, added to $daemons; returns 1 if it does not start.
start_driverd() {  # ns if
    local ns=$1 ifname=$2 log=$workdir/driverd-$1.log
    start_bg "$log" ip netns exec "$ns" "${pin_server[@]}" "$DRIVERD" --foreground --interface "$ifname" \
        --socket-name "$DRIVERD_SOCKET" --pin-root none
    daemons+=("$last_pid")
    wait_log "$last_pid" "$log" "listening on"
}

# Sets onload, the command prefix that runs a program under onload-run on this script's daemons (never starting one),
# with socket() failing rather than handing out the kernel's sockets when a stack cannot start: an accelerated row
# must not measure the kernel unnoticed.
set_onload_run() {
    onload=(env "ONLOAD_DRIVERD_SOCKET=$DRIVERD_SOCKET" ONLOAD_DRIVERD_AUTOSTART=0 ONLOAD_NO_FAIL=0 "$ONLOAD_RUN")
}

# Stops the daemons and makes sure no XDP program stays on the veth for the kernel rows that follow.
stop_driverds() {  # pid...
    stop_pids "$@"
    ip -n "$NS_K" link set dev "$IF_K" xdp off 2>/dev/null || true
    ip -n "$NS_C" link set dev "$IF_C" xdp off 2>/dev/null || true
}

# While PID runs (at most 10 s), asks onload-stackdump in NS for its stack until FILTER (jq, over that stack's
# snapshot, with $port bound to PORT) holds. Prints the VNIC's mode and backend. Fails if it never holds: the
# process has no stack, or its sockets are on the kernel.
on_stack() {  # ns pid port jq-filter
    local ns=$1 pid=$2 port=$3 filter=$4 dump deadline=$((SECONDS + 10))
    while alive "$pid" && ((SECONDS < deadline)); do
        if dump=$(ip netns exec "$ns" "$STACKDUMP" --json --pid "$pid" 2>/dev/null) &&
            jq -e --argjson port "$port" ".[0] | $filter" >/dev/null <<<"$dump"; then
            jq -r '.[0].vnic | "\(.mode) (\(.backend | sub(":.*"; "")))"' <<<"$dump"
            return 0
        fi
        nap 0.2
    done
    return 1
}

# One stack's runtime figures, "allocated-bytes collections COUNTER" (allocated bytes with the dump thread's own
# left out; collections of all generations, as GC.CollectionCount(0) counts them; COUNTER one of the stack's
# counters by name, e.g. UdpInDatagrams, TcpInSegs, TcpPassiveOpens). Fails if the stack does not answer.
runtime_figures() {  # ns pid counter
    ip netns exec "$1" "$STACKDUMP" --json --pid "$2" 2>/dev/null | jq -er --arg counter "$3" '.[0] |
        [.runtime.allocatedBytes, .runtime.gen0Collections, (.counters[$counter] // 0)] | @tsv'
}

# When an allocation measurement takes its first dump, in ms after the measured time starts: a quarter of the row's
# time, at most 1 s (the headers of rates.sh and sockperf.sh describe it).
first_dump_ms() { echo $((seconds * 250 < 1000 ? seconds * 250 : 1000)); }

now_ms() { echo $((${EPOCHREALTIME/./} / 1000)); }

nap_until() {  # ms (now_ms's clock)
    local left=$(($1 - $(now_ms)))
    ((left > 0)) && nap "$(printf '%d.%03d' $((left / 1000)) $((left % 1000)))"
    return 0
}

# Bytes per message (or connection), or "" when none came.
per_message() {  # bytes messages
    (($2 > 0)) && awk -v b="$1" -v m="$2" 'BEGIN { printf "%.3f", b / m }'
    return 0
}

# ---------------------------------------------------------------------------------------------
# Results. The sourcing script declares the R_* arrays it records into (at least R_STATUS and R_NOTE).

failed_rows=0

record_skip() { R_STATUS[$1]=skipped; R_NOTE[$1]=$2; echo "row $1: skipped: $2"; }
record_fail() {
    R_STATUS[$1]=failed; R_NOTE[$1]=$2; echo "row $1: FAILED: $2" >&2
    failed_rows=$((failed_rows + 1))
}

# sockperf prints e.g. "---> percentile 99.900 =   54.480" and "[Valid Duration] ... ReceivedMessages=47661",
# with colour escapes around some lines. Sets sp_median sp_p99 sp_p999 sp_max sp_samples sp_sent; returns 1
# if any but sp_sent is missing.
read_sockperf() {  # log
    local clean
    clean=$(sed 's/\x1b\[[0-9;]*m//g' "$1")
    sp_median=$(sed -n 's/.*percentile 50\.000 = *\([0-9.]*\).*/\1/p' <<<"$clean")
    sp_p99=$(sed -n 's/.*percentile 99\.000 = *\([0-9.]*\).*/\1/p' <<<"$clean")
    sp_p999=$(sed -n 's/.*percentile 99\.900 = *\([0-9.]*\).*/\1/p' <<<"$clean")
    sp_max=$(sed -n 's/.*<MAX> observation = *\([0-9.]*\).*/\1/p' <<<"$clean")
    sp_samples=$(sed -n 's/.*\[Valid Duration\].*ReceivedMessages=\([0-9]*\).*/\1/p' <<<"$clean")
    sp_sent=$(sed -n 's/.*\[Valid Duration\].*SentMessages=\([0-9]*\).*/\1/p' <<<"$clean")
    [[ -n $sp_median && -n $sp_p99 && -n $sp_p999 && -n $sp_max && -n $sp_samples ]]
}

# A ping-pong latency row (latency.sh, driverlink.sh), into R_MEDIAN R_P99 R_P999 R_MAX R_SAMPLES R_LOST.
record_latency() {  # key median p99 p999 max samples lost
    R_STATUS[$1]=ok; R_MEDIAN[$1]=$2; R_P99[$1]=$3; R_P999[$1]=$4; R_MAX[$1]=$5; R_SAMPLES[$1]=$6; R_LOST[$1]=$7
}

# read_sockperf's figures as a latency row; lost: what sockperf sent that did not come back.
record_sockperf_latency() {  # key
    record_latency "$1" "$sp_median" "$sp_p99" "$sp_p999" "$sp_max" "$sp_samples" "$((${sp_sent:-$sp_samples} - sp_samples))"
}

# sockperf's percentile lines as "percentile value" lines, lowest first: <MIN> as 0, <MAX> as 100 (a curve to plot).
sockperf_curve() {  # log
    sed 's/\x1b\[[0-9;]*m//g' "$1" | sed -n 's/.*<MIN> observation = *\([0-9.]*\).*/0 \1/p;
        s/.*percentile \([0-9.]*\) = *\([0-9.]*\).*/\1 \2/p; s/.*<MAX> observation = *\([0-9.]*\).*/100 \1/p' | sort -g -k1,1
}

# onload-pingpong --json (and tcp_crr) write one "key": value per line.
json_field() { sed -n "s/^ *\"$2\": *\"\{0,1\}\([^\",]*\)\"\{0,1\},\{0,1\}\$/\1/p" "$1"; }

# onload-pingpong --json's figures as a latency row.
record_pingpong_latency() {  # key json
    record_latency "$1" "$(json_field "$2" median)" "$(json_field "$2" p99)" "$(json_field "$2" p99_9)" \
        "$(json_field "$2" max)" "$(json_field "$2" samples)" "$(json_field "$2" lost)"
}

# An iperf3 client's log: sets ip_gbit (what the receiver got, Gbit/s), ip_moved ("1.23 GBytes") and ip_retr (the
# sender's retransmissions, "?" when iperf3 could not tell); fails without a receiver line.
read_iperf3() {  # log
    # "[  5]   0.00-2.00   sec  1.23 GBytes  5283 Mbits/sec                  receiver"
    ip_gbit=$(awk '/receiver/ { for (i = 1; i <= NF; i++) if ($i == "Mbits/sec") printf "%.3f", $(i - 1) / 1000 }' "$1")
    ip_moved=$(awk '/receiver/ { for (i = 1; i <= NF; i++) if ($i ~ /Bytes$/) print $(i - 1) " " $i }' "$1")
    ip_retr=$(awk '/sender/ { for (i = 1; i <= NF; i++) if ($i == "Mbits/sec") print $(i + 1) }' "$1")
    ip_retr=${ip_retr:-?}
    [[ -n $ip_gbit ]]
}

# onload-pingpong --stream's byte count (--json), written as iperf3 writes what it moved ("1.23 GBytes").
stream_moved() {  # json
    awk -v b="$(json_field "$1" bytes)" 'BEGIN { printf "%.2f GBytes", b / 1073741824 }'
}

have_kind() { "$PINGPONG" --list-kinds | grep -qx "$1"; }

# A busy-polling onload-pingpong --server-mode in NS on the server CPU, its VNIC, port and kind from the options
# (--sockperf; --tcp --sink); sets $server_pid, or returns 1 (with the reason in $server_error).
pingpong_server() {  # log ns [onload-pingpong options...]
    local log=$1 ns=$2
    shift 2
    start_bg "$log" ip netns exec "$ns" "${pin_server[@]}" "$PINGPONG" --server-mode "$@"
    server_pid=$last_pid
    if ! wait_log "$server_pid" "$log" "server ready"; then
        server_error="onload-pingpong server did not start ($(tail -n 2 "$log" | tr '\n' ' '))"
        stop_pid "$server_pid"
        return 1
    fi
}

# An onload-pingpong client (sockperf's format) in NS on the client CPU for $seconds after 2,000 warm-up messages,
# its results in JSON; its VNIC from the options (--vnic and --addr, or driverlink's --interface). Prints its output
# indented and returns its status.
pingpong_client_run() {  # key log json ns server size [onload-pingpong options...]
    local key=$1 log=$2 json=$3 ns=$4 server=$5 size=$6 rc=0
    shift 6
    echo "row $key: onload-pingpong${*:+ $*} --server $server --size $size --sockperf --seconds $seconds"
    start_bg "$log" ip netns exec "$ns" "${pin_client[@]}" "$PINGPONG" "$@" --server "$server" --size "$size" \
        --sockperf --warmup 2000 --seconds "$seconds" --json "$json" --label "$key"
    wait_for "$last_pid" $((seconds + 30)) || rc=$?
    sed 's/^/    /' "$log"
    return "$rc"
}

# ---------------------------------------------------------------------------------------------
# The report.

# The machine, for a report: sets kernel and cpu.
machine_facts() {
    kernel=$(uname -r)
    cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
}

# The fields every results JSON opens with, one a line, each ending in a comma: when and how long the run was, the
# machine (machine_facts), the pinning and the load.
json_run_fields() {
    printf '  "generated": "%s",\n  "quick": %s,\n  "seconds_per_row": %s,\n' "$started" "$( ((quick)) && echo true || echo false)" "$seconds"
    printf '  "kernel": %s,\n  "cpu": %s,\n  "cpus": %s,\n  "pinning": %s,\n' "$(json_str "$kernel")" "$(json_str "$cpu")" "$ncpu" "$(json_str "$pinning")"
    printf '  "load_average_start": %s,\n  "load_average_end": %s,\n' "$(json_str "$load_start")" "$(json_str "$load_end")"
}

# Writes the results JSON to FILE: json_run_fields, the script's own fields (printed by OWN_FIELDS, one a line, each
# ending in a comma; ":" for none), then "rows", one object per KEY that has a status. ROW_FIELDS KEY prints a row's
# fields (", " between them, no braces); a row that is not ok gets its reason (R_NOTE) after them.
write_json() {  # file own-fields row-fields key...
    local file=$1 own_fields=$2 row_fields=$3 key sep=""
    shift 3
    {
        printf '{\n'
        json_run_fields
        "$own_fields"
        printf '  "rows": ['
        for key in "$@"; do
            [[ -n ${R_STATUS[$key]:-} ]] || continue
            printf '%s\n    {' "$sep"
            "$row_fields" "$key"
            [[ ${R_STATUS[$key]} == ok ]] || printf ', "reason": %s' "$(json_str "${R_NOTE[$key]}")"
            printf '}'
            sep=","
        done
        printf '\n  ]\n}\n'
    } >"$file"
}

ratio() {  # value base: 3 significant digits, or "" without a base
    awk -v v="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.3g", v / b }'
}
# Sets median_ratio and p99_ratio, KEY's median and p99 (R_MEDIAN, R_P99) over BASE's; both "" unless BASE is ok.
latency_ratios() {  # key base
    median_ratio=""
    p99_ratio=""
    [[ ${R_STATUS[$2]:-} == ok ]] || return 0
    median_ratio=$(ratio "${R_MEDIAN[$1]}" "${R_MEDIAN[$2]}")
    p99_ratio=$(ratio "${R_P99[$1]}" "${R_P99[$2]}")
}
fmt() { awk -v v="$1" 'BEGIN { f = v >= 100 ? "%.0f" : (v >= 10 ? "%.1f" : "%.2f"); printf f, v }'; }
json_str() { printf '"%s"' "$(printf '%s' "$1" | tr -d '\000-\037' | sed 's/\\/\\\\/g; s/"/\\"/g')"; }

# Copies the report into DIR, prints it, and exits non-zero if a row failed.
publish() {  # dir md json
    local dir=$1 md=$2 json=$3
    cp "$md" "$dir/$(basename "$md")"
    cp "$json" "$dir/$(basename "$json")"
    say "results ($dir/$(basename "$md"), $dir/$(basename "$json"))"
    cat "$md"
    if ((failed_rows > 0)); then
        echo "$NAME: $failed_rows row(s) failed" >&2
        exit 1
    fi
}
