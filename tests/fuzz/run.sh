#!/usr/bin/env bash
# Coverage-guided fuzzing of the stack: SharpFuzz instruments its assemblies, AFL++ drives tests/Onload.Fuzz.
#
#   tests/fuzz/run.sh [--seconds N] [--report-only] [TARGET...]
#
# Targets: frame, reassembly, tcp-listen, tcp-established, driverlink (all by default), N seconds each (default 60;
# the test run uses 10). Seeds come from a real capture taken here: two network namespaces (prefix olz, removed
# afterwards) where the kernel's ARP, fragmented pings, UDP and a TCP transfer are recorded by tcpdump. Results:
# perf/results/fuzz.md, or FUZZ_REPORT (inputs run, paths found, crashes and hangs per target) and obj/fuzz/findings/TARGET/. A
# crash fails the run and is named with the command that replays it; a fixed crash's input becomes a regression in
# tests/fuzz/regressions/TARGET/NAME.hex, replayed by the test suite (FuzzRegressionTests). --report-only (the test
# run's 10 s) names new crashes loudly but passes: what the fuzzer finds in 10 s differs run to run, and the suite
# must give the same answer every time; the regressions it keeps are what gate it, and afl-fuzz must still run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

seconds=60
report_only=0
targets=()
while [[ $# -gt 0 ]]; do
    case $1 in
        --seconds) seconds=$2; shift 2 ;;
        --report-only) report_only=1; shift ;;
        -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) echo "run.sh: unknown option $1" >&2; exit 2 ;;
        *) targets+=("$1"); shift ;;
    esac
done
[[ ${#targets[@]} -gt 0 ]] || targets=(frame reassembly tcp-listen tcp-established driverlink)

out=obj/fuzz
mkdir -p "$out"

# --- tools: AFL++ from Debian, the sharpfuzz instrumenter as a local .NET tool ----------------------------
if ! command -v afl-fuzz >/dev/null; then
    sudo=""; [[ $(id -u) == 0 ]] || sudo=sudo
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends afl++ tcpdump iproute2 socat iputils-ping python3
fi
if [[ ! -x $out/tools/sharpfuzz ]]; then
    dotnet tool install SharpFuzz.CommandLine --version 2.3.0 --tool-path "$out/tools" >/dev/null
fi

# --- the harness (instrumented below, after it has written the seeds: instrumented code runs only under AFL) --
rm -rf "$out/bin"
dotnet publish tests/Onload.Fuzz/Onload.Fuzz.csproj -c Release -o "$out/bin" --nologo -v quiet >/dev/null

# --- seeds from a real capture ---------------------------------------------------------------------------
prefix=olz$$
a=${prefix}a b=${prefix}b
cleanup() {
    [[ -n ${dump_pid:-} ]] && kill "$dump_pid" 2>/dev/null || true
    [[ -n ${server_pid:-} ]] && kill "$server_pid" 2>/dev/null || true
    [[ -n ${udp_pid:-} ]] && kill "$udp_pid" 2>/dev/null || true
    ip netns del "$a" 2>/dev/null || true
    ip netns del "$b" 2>/dev/null || true
}
trap cleanup EXIT
# Leftovers of runs that died (their pid is gone).
for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep '^olz[0-9]*[ab]$' || true); do
    pid=${ns#olz}; pid=${pid%[ab]}
    kill -0 "$pid" 2>/dev/null || ip netns del "$ns" 2>/dev/null || true
done
ip netns add "$a"
ip netns add "$b"
ip link add "${prefix}x" netns "$a" type veth peer name "${prefix}y" netns "$b"
ip -n "$a" addr add 10.2.0.1/24 dev "${prefix}x"
ip -n "$b" addr add 10.2.0.2/24 dev "${prefix}y"
ip -n "$a" link set "${prefix}x" up
ip -n "$b" link set "${prefix}y" up
for ns in "$a" "$b"; do ip netns exec "$ns" ethtool -K "$(ip -n "$ns" -o link show type veth | awk -F'[ :@]+' '{print $2}')" tso off gso off gro off tx off >/dev/null 2>&1 || true; done
capture=$out/seed.pcap
ip netns exec "$b" tcpdump -i "${prefix}y" -w "$capture" -U -s 0 >/dev/null 2>&1 &
dump_pid=$!
deadline=$((SECONDS + 10))
until ip netns exec "$b" tcpdump --version >/dev/null 2>&1 && [[ -s $capture ]] || (( SECONDS > deadline )); do
    ip netns exec "$a" ping -c 1 -W 1 10.2.0.2 >/dev/null 2>&1 || true
done
ip netns exec "$b" socat -T 5 TCP-LISTEN:80,reuseaddr,fork PIPE &
server_pid=$!
ip netns exec "$b" socat -T 2 UDP-RECVFROM:7,fork PIPE >/dev/null 2>&1 &
udp_pid=$!
deadline=$((SECONDS + 10))
until ip netns exec "$b" ss -lnt | grep -q ':80 ' || (( SECONDS > deadline )); do sleep 0.1; done
ip netns exec "$a" ping -c 3 -i 0.2 -s 3000 10.2.0.2 >/dev/null
echo "a datagram" | ip netns exec "$a" socat -T 1 - UDP:10.2.0.2:7 >/dev/null || true
head -c 200000 /dev/urandom | ip netns exec "$a" socat -T 2 - TCP:10.2.0.2:80 >/dev/null
echo "hello" | ip netns exec "$a" socat -T 1 - TCP:10.2.0.2:80 >/dev/null || true
kill "$dump_pid"; wait "$dump_pid" 2>/dev/null || true
dump_pid=
for pid in "$server_pid" "$udp_pid"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
server_pid= udp_pid=
rm -rf "$out/seeds"
dotnet "$out/bin/onload-fuzz.dll" seed "$capture" "$out/seeds"

for dll in Onload.Stack.dll Onload.Vnic.dll Onload.Driverlink.dll; do
    "$out/tools/sharpfuzz" "$out/bin/$dll" >/dev/null
done

# --- fuzz each target for $seconds -------------------------------------------------------------------------
export AFL_SKIP_BIN_CHECK=1 AFL_SKIP_CPUFREQ=1 AFL_NO_UI=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_AFFINITY=1
crashes_total=0
report=${FUZZ_REPORT:-perf/results/fuzz.md}
mkdir -p "$(dirname "$report")"
{
    echo "# Fuzzing (tests/fuzz/run.sh --seconds $seconds)"
    echo
    echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs. AFL++ $(afl-fuzz -h 2>&1 | sed -n 's/.*afl-fuzz++\([0-9.a-z]*\).*/\1/p' | head -1) with SharpFuzz 2.3.0; seeds from a capture of the kernel's own traffic."
    echo
    echo "| target | seconds | inputs run | paths found | crashes | hangs |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: |"
} > "$report.tmp"
for t in "${targets[@]}"; do
    findings=$out/findings/$t
    rm -rf "$findings"
    mkdir -p "$out/findings"
    timeout $((seconds + 120)) afl-fuzz -V "$seconds" -t 10000 -m none -i "$out/seeds/$t" -o "$findings" \
        -- dotnet "$out/bin/onload-fuzz.dll" "$t" > "$out/afl-$t.log" 2>&1 || true
    stats=$findings/default/fuzzer_stats
    if [[ ! -f $stats ]]; then
        echo "run.sh: afl-fuzz did not start for $t; its log:" >&2
        tail -30 "$out/afl-$t.log" >&2
        exit 1
    fi
    stat() { sed -n "s/^$1 *: *//p" "$stats"; }
    crashes=$(stat saved_crashes); hangs=$(stat saved_hangs)
    echo "| $t | $seconds | $(stat execs_done) | $(stat corpus_count) | $crashes | $hangs |" >> "$report.tmp"
    echo "fuzz $t: $(stat execs_done) inputs, $(stat corpus_count) paths, $crashes crashes, $hangs hangs"
    if [[ $crashes != 0 ]]; then
        crashes_total=$((crashes_total + crashes))
        for f in "$findings"/default/crashes/id*; do
            echo "  crash: $f (replay: dotnet $out/bin/onload-fuzz.dll $t --replay '$f')"
        done
    fi
done
mv "$report.tmp" "$report"
if [[ $crashes_total != 0 ]]; then
    echo "run.sh: $crashes_total NEW CRASHES: replay each with the command above, fix it, keep it in tests/fuzz/regressions" >&2
    [[ $report_only == 1 ]] || exit 1
fi
