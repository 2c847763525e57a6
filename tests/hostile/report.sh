#!/usr/bin/env bash
# Writes docs/HOSTILE.md, issue 10's report: what was tried against the stack, how many inputs or runs, and what
# held. It runs the fuzzing (tests/fuzz/run.sh, SECONDS per target, default 60) and every test in the NUnit
# category "hostile" (hostile frames, differential decoding, SYN floods...), and tables their outcomes with the
# figures each test printed. Root (namespaces); needs a built tree (make).
#
#   tests/hostile/report.sh [SECONDS]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
seconds=${1:-60}
work=$(mktemp -d "${TMPDIR:-/tmp}/onload-hostile.XXXXXX")
trap 'rm -rf "$work"' EXIT

fuzz_rc=0
FUZZ_REPORT=$work/fuzz.md tests/fuzz/run.sh --seconds "$seconds" || fuzz_rc=$?
test_rc=0
dotnet test tests/Onload.Tests/Onload.Tests.csproj -c Release --no-build --nologo --filter "TestCategory=hostile" \
    --logger "trx;LogFileName=hostile.trx" --results-directory "$work" >/dev/null || test_rc=$?

python3 - "$work/hostile.trx" "$work/fuzz.md" docs/HOSTILE.md <<'PY'
import sys, xml.etree.ElementTree as ET, datetime, os
trx, fuzz, out = sys.argv[1:4]
ns = {"t": "http://microsoft.com/schemas/VisualStudio/TeamTest/2010"}
rows = []
for r in ET.parse(trx).getroot().iterfind(".//t:UnitTestResult", ns):
    name = r.get("testName").replace("_", " ")
    text = r.find("t:Output/t:StdOut", ns)
    figures = " ".join((text.text or "").split()) if text is not None else ""
    rows.append((name, r.get("outcome"), r.get("duration", "")[:8], figures.replace("|", "/")))
rows.sort()
with open(out, "w") as f:
    f.write("# What the stack was put through (issue 10)\n\n")
    f.write("Written by `tests/hostile/report.sh` on %s; run it again to bring this up to date.\n\n"
            % datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))
    f.write("## Fuzzing\n\n")
    f.write("".join(open(fuzz).readlines()[2:]) if os.path.exists(fuzz) else "(the fuzzing did not run)\n")
    f.write("\n## Hostile peers and inputs (NUnit category `hostile`)\n\n")
    f.write("| test | outcome | time | what it saw |\n| --- | --- | --- | --- |\n")
    for name, outcome, duration, figures in rows:
        f.write("| %s | %s | %s | %s |\n" % (name, outcome, duration, figures))
PY
echo "report: docs/HOSTILE.md ($(grep -c '^| ' docs/HOSTILE.md) table rows)"
[[ $fuzz_rc == 0 && $test_rc == 0 ]]
