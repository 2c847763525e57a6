#!/usr/bin/env bash
# Runs every test and ends with one line "N passed, N failed[, N skipped]" summed over all of them:
#   1. the C ABI smoke check (dist/bin/abi_smoke dist/lib/libonload_stack.so), counted as one test;
#   2. `dotnet test` on Onload.sln (every test project in it), counted from the TRX files it writes;
#   3. the benchmark suite's quick run (issues 8 and 9): perf/sockperf.sh, perf/rates.sh and perf/web.sh --quick,
#      one test each, passing when every row ran (no thresholds: the figures of 2 s rows on a test machine mean nothing).
# Exits non-zero if anything failed, if the test run itself failed, or if no .NET test ran.
#
# Expects `make` to have built everything (it runs with --no-build); `make test` does both.
# Environment:
#   CONFIG=Release             build configuration to test
#   DIST=dist                  where abi_smoke and libonload_stack.so are
#   TEST_FILTER=EXPR           dotnet test --filter expression (e.g. "FullyQualifiedName~Sim")
#   TEST_VERBOSITY=minimal     console logger verbosity (quiet|minimal|normal|detailed)
#   TEST_HANG_TIMEOUT=20m      a test host silent this long is killed and its tests fail
#   KEEP_TEST_RESULTS=1        keep the TRX files and the quick benchmarks' results (their folder is printed)
#   BENCH_SMOKE=0              leave step 3 out (it is left out anyway when TEST_FILTER is set)
#   FUZZ_SMOKE=0               leave step 4 (10 s of fuzzing per target, tests/fuzz/run.sh) out (left out with TEST_FILTER too)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

config=${CONFIG:-Release}
dist=${DIST:-dist}
verbosity=${TEST_VERBOSITY:-minimal}
hang_timeout=${TEST_HANG_TIMEOUT:-20m}

results=$(mktemp -d "${TMPDIR:-/tmp}/onload-tests.XXXXXX")
cleanup() {
    if [[ -n ${KEEP_TEST_RESULTS:-} ]]; then
        echo "test results kept in $results"
    else
        rm -rf "$results"
    fi
}
trap cleanup EXIT

passed=0
failed=0
skipped=0
failures=()

# --- 1. C ABI smoke ---------------------------------------------------------------------------
echo "=== C ABI smoke: $dist/bin/abi_smoke $dist/lib/libonload_stack.so"
if "$dist/bin/abi_smoke" "$dist/lib/libonload_stack.so"; then
    passed=$((passed + 1))
else
    failed=$((failed + 1))
    failures+=("abi_smoke")
fi

# --- 2. .NET tests ----------------------------------------------------------------------------
echo "=== dotnet test Onload.sln ($config)"
args=(test Onload.sln -c "$config" --no-build --no-restore --nologo
      --logger trx --logger "console;verbosity=$verbosity"
      --results-directory "$results/trx"
      --blame-hang-timeout "$hang_timeout" --blame-hang-dump-type none)
if [[ -n ${TEST_FILTER:-} ]]; then
    args+=(--filter "$TEST_FILTER")
fi
dotnet_rc=0
dotnet "${args[@]}" || dotnet_rc=$?

# Each test assembly leaves one TRX file whose <Counters .../> element sums its results.
counter() { # counter NAME ELEMENT -> the number in NAME="..." or 0
    local v
    v=$(sed -n "s/.*[[:space:]]$1=\"\([0-9]*\)\".*/\1/p" <<<"$2")
    echo "${v:-0}"
}
dotnet_total=0
dotnet_failed=0
shopt -s nullglob
trx_files=("$results"/trx/*.trx)
for trx in "${trx_files[@]}"; do
    counters=$(grep -o '<Counters [^>]*>' "$trx" | head -n 1 || true)
    if [[ -z $counters ]]; then
        echo "run-tests: no <Counters> in $trx" >&2
        failed=$((failed + 1))
        failures+=("$(basename "$trx"): unreadable")
        continue
    fi
    t=$(counter total "$counters")
    p=$(counter passed "$counters")
    f=$(( $(counter failed "$counters") + $(counter error "$counters") + $(counter timeout "$counters")
          + $(counter aborted "$counters") ))
    s=$(( t - p - f ))
    (( s < 0 )) && s=0
    passed=$((passed + p))
    failed=$((failed + f))
    skipped=$((skipped + s))
    dotnet_total=$((dotnet_total + t))
    dotnet_failed=$((dotnet_failed + f))
done

if (( dotnet_rc != 0 && dotnet_failed == 0 )); then
    # The run failed without a failed test to show for it: a crashed or hung test host, a bad filter, ...
    echo "run-tests: dotnet test exited $dotnet_rc with no failed test recorded" >&2
    failed=$((failed + 1))
    failures+=("dotnet test (exit $dotnet_rc)")
fi
if (( dotnet_total == 0 )); then
    # Counted as a failure: a run that finds no test has lost its tests.
    echo "run-tests: no .NET test ran (${#trx_files[@]} TRX files)" >&2
    failed=$((failed + 1))
    failures+=("no .NET test ran")
fi
# --- 3. the benchmark suite, quick -------------------------------------------------------------
if [[ -z ${TEST_FILTER:-} && ${BENCH_SMOKE:-1} != 0 ]]; then
    for script in sockperf rates web; do
        echo "=== benchmark suite, quick: perf/$script.sh --quick"
        if PINGPONG=$dist/bin/onload-pingpong ONLOAD_RUN=$dist/bin/onload-run DRIVERD=$dist/bin/onload-driverd \
            STACKDUMP=$dist/bin/onload-stackdump WEB_SAMPLE=$dist/bin/onload-web-sample perf/$script.sh --quick --out "$results/bench"; then
            passed=$((passed + 1))
        else
            failed=$((failed + 1))
            failures+=("perf/$script.sh --quick")
        fi
    done
fi
# --- 4. fuzzing, briefly: every target for 10 s from a fresh capture's seeds ------------------------------
if [[ -z ${TEST_FILTER:-} && ${FUZZ_SMOKE:-1} != 0 ]]; then
    echo "=== fuzzing, briefly: tests/fuzz/run.sh --seconds 10 --report-only"
    if FUZZ_REPORT=$results/fuzz.md tests/fuzz/run.sh --seconds 10 --report-only; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
        failures+=("tests/fuzz/run.sh --seconds 10 --report-only")
    fi
fi

if (( ${#failures[@]} > 0 )); then
    echo "run-tests: failed: ${failures[*]}" >&2
fi

echo "$passed passed, $failed failed, $skipped skipped"
(( failed == 0 ))
