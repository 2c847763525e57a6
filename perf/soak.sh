#!/usr/bin/env bash
# The soak (issue 10), not run in CI: SoakTests (tests/Onload.Tests/Interop/SoakTests.cs) for SECONDS (default 3600)
# instead of the test run's 20: rounds of TCP connections of every size, each echoed by the kernel and checked, beside
# checked UDP requests, through a router dropping 2% each way; after every round every row and packet buffer must be
# back, and the process's memory at the end no more than after the warm-up. Root (namespaces); builds what it needs.
#
#   perf/soak.sh [SECONDS]        ONLOAD_SOAK_TRACE=1 prints memory after every round
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
seconds=${1:-3600}
[[ $seconds =~ ^[0-9]+$ ]] || { echo "soak.sh: SECONDS must be a whole number" >&2; exit 2; }
make --no-print-directory >/dev/null
ONLOAD_SOAK_SECONDS=$seconds TEST_HANG_TIMEOUT=$((seconds / 60 + 30))m TEST_VERBOSITY=normal \
    TEST_FILTER="FullyQualifiedName~Onload.Tests.Interop.SoakTests" tests/run-tests.sh
