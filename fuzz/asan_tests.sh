#!/usr/bin/env bash
# The codec test suite against the AddressSanitizer + UBSan build of the core.
#
#   fuzz/asan_tests.sh               # the codec tests: tests/codec
#   fuzz/asan_tests.sh -k frames     # extra arguments go to pytest
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
"$FUZZ_VENV/bin/python" -m pip install -q "pytest>=7" "hypothesis>=6.80"

logs=$here/logs/asan-tests-$(date +%Y%m%d-%H%M%S)
mkdir -p "$logs"
cd "$root"
tests=(tests/codec)
echo "asan-tests: $(ls "$out"/src/framecodec/codec/_codec*.so), source $(head -1 "$out/SOURCE_REVISION")"
echo "asan-tests: logs in $logs"
started=$(date +%s)
set +e
PYTHONPATH="$out/src:$here" \
  ASAN_OPTIONS="$ASAN_OPTIONS:log_path=$logs/sanitizer" UBSAN_OPTIONS="$UBSAN_OPTIONS:log_path=$logs/sanitizer" \
  timeout --kill-after=30 "${ASAN_TESTS_TIMEOUT:-1200}" \
  env LD_PRELOAD="$FUZZ_PRELOAD" "$FUZZ_VENV/bin/python" -m pytest -q -p no:cacheprovider \
    -p instrumented_pytest "${tests[@]}" "$@" 2>&1 | tee "$logs/pytest.log"
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
