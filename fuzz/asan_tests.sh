#!/usr/bin/env bash
# The test suite against the AddressSanitizer + UBSan build of the core.
#
#   fuzz/asan_tests.sh                         # the codec tests: tests/codec
#   fuzz/asan_tests.sh --all                   # the whole suite: tests/
#   fuzz/asan_tests.sh tests/codec tests/net/test_client.py   # these paths
#   fuzz/asan_tests.sh -k frames               # other arguments go to pytest
#
# Leading arguments that name paths under tests/ (or node ids) choose what
# runs; --all chooses tests/.  Beyond tests/codec the suite needs the test
# extra's packages (network peers, anyio, trio, Twisted, ...): they are
# installed into the fuzz venv from pyproject.toml (framecodec itself is not:
# the sanitized copy in build/asan is imported through PYTHONPATH).  Tests
# that cannot run under ASan are deselected, each group with its reason
# (printed at the start; see deselected() below), never silently.
#
# Uses build/asan from fuzz/build_sanitized.sh (building it if missing; rebuild
# it there to test newer sources).  The ASan runtime is LD_PRELOADed into the
# interpreter (and inherited by the interpreters the tests start);
# PYTHONMALLOC=malloc puts every Python allocation under ASan's eye.  ASan
# and UBSan reports abort the process that hits them; every process logs to
# fuzz/logs/asan-tests-DATE/sanitizer.PID, and the summary counts the reports.
# Exit status: 0 when pytest passed and no sanitizer reported anything.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
out=${FUZZ_BUILD_DIR:-$root/build/asan}
[ -f "$out/env.sh" ] || "$here/build_sanitized.sh"
# shellcheck source=/dev/null
source "$out/env.sh"

tests=()
while [ $# -gt 0 ]; do
  case $1 in
    --all) tests+=(tests) ;;
    tests|tests/*) tests+=("$1") ;;
    *) break ;;
  esac
  shift
done
[ ${#tests[@]} -gt 0 ] || tests=(tests/codec)

pip_install() {  # (pip's notes on the machine's unused find-links are noise)
  "$FUZZ_VENV/bin/python" -m pip install -q "$@" 2>&1 | { grep -v "^WARNING: Location '.*' is ignored" || true; }
}
if [ "${tests[*]}" = tests/codec ]; then
  pip_install "pytest>=7" "hypothesis>=6.80"
else
  # The test extra's requirements, read from pyproject.toml (markers kept).
  mapfile -t extra < <("$FUZZ_VENV/bin/python" -c '
import sys, tomllib
with open(sys.argv[1], "rb") as f:
    print("\n".join(tomllib.load(f)["project"]["optional-dependencies"]["test"]))
' "$root/pyproject.toml")
  pip_install "${extra[@]}"
fi

# Tests that cannot run under ASan: "REASON|NODE-ID-PREFIX..." per group.
deselected() {
  cat <<'GROUPS'
the real callgrind runs: valgrind cannot run an ASan-instrumented process (the figures' arithmetic still runs)|tests/benchmarks/test_instructions.py::test_a_real_callgrind_run_counts_per_frame_and_repeats_exactly tests/benchmarks/test_instructions.py::test_the_command_checks_a_baseline_and_fails_on_a_regression
GROUPS
}
deselect_args=()
echo "asan-tests: deselected under ASan (reason: node ids):"
while IFS='|' read -r reason ids; do
  echo "asan-tests:   $reason: $ids"
  for id in $ids; do deselect_args+=(--deselect "$id"); done
done < <(deselected)

logs=$here/logs/asan-tests-$(date +%Y%m%d-%H%M%S)
mkdir -p "$logs"
cd "$root"
echo "asan-tests: $(ls "$out"/src/framecodec/codec/_codec*.so), source $(head -1 "$out/SOURCE_REVISION")"
echo "asan-tests: logs in $logs"
started=$(date +%s)
set +e
PYTHONPATH="$out/src:$here" \
  ASAN_OPTIONS="$ASAN_OPTIONS:log_path=$logs/sanitizer" UBSAN_OPTIONS="$UBSAN_OPTIONS:log_path=$logs/sanitizer" \
  timeout --kill-after=30 "${ASAN_TESTS_TIMEOUT:-1200}" \
  env LD_PRELOAD="$FUZZ_PRELOAD" "$FUZZ_VENV/bin/python" -m pytest -q -p no:cacheprovider \
    -p instrumented_pytest "${deselect_args[@]}" "${tests[@]}" "$@" 2>&1 | tee "$logs/pytest.log"
rc=${PIPESTATUS[0]}
set -e
elapsed=$(( $(date +%s) - started ))
reports=$(cat "$logs"/sanitizer.* 2>/dev/null | grep -cE '^==[0-9]+==ERROR: |runtime error:' || true)
echo "asan-tests: ---- summary ----"
echo "asan-tests: wall time $elapsed s, pytest exit status $rc"
echo "asan-tests: $reports sanitizer report(s)"
for f in "$logs"/sanitizer.*; do
  [ -f "$f" ] || continue
  echo "asan-tests: $f:"
  grep -E '^==[0-9]+==ERROR|runtime error:|SUMMARY:|^    #[0-9] ' "$f" | head -20 | sed 's/^/  /'
done
[ "$rc" -eq 0 ] && [ "$reports" -eq 0 ]
