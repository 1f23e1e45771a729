#!/usr/bin/env bash
# The codec test suite under valgrind memcheck, against the compiled core.
#
# Runs on CPython 3.12+ (MEMCHECK_PYTHON, else the first python3.12/3.13 found,
# directly or through pyenv).  Not 3.11: with PYTHONMALLOC=malloc, CPython
# 3.11 reads the unset digit of every zero int (0 * ob_digit[0] in
# maybe_small_long, which memcheck cannot see is defined); 3.11.7 gives 44
# reports for `int('0')` alone, and each cascades through every later use
# of the small-int pointer, so no suppression can hide them without hiding
# real errors.  3.12 sets that digit; the extension's C is the same.  (The
# ASan run, fuzz/asan_tests.sh, covers 3.11.)
#
#   fuzz/memcheck.sh                 # the codec tests: tests/codec
#   fuzz/memcheck.sh -k frames       # extra arguments go to pytest
#
# Builds the extension OUT OF TREE in build/memcheck (gcc, -O1 -g, no
# sanitizer: memcheck instruments the binary itself), then runs pytest under
#   valgrind --tool=memcheck --trace-children=yes --error-exitcode=99
# with PYTHONMALLOC=malloc (so pymalloc's arenas do not hide heap errors from
# memcheck) and fuzz/valgrind-python.supp.  Every process (pytest, and the
# interpreters the tests start) logs to fuzz/logs/memcheck-DATE/vg.PID.log;
# the summary adds up their ERROR SUMMARY lines.  The compiler the C API
# tests run (tests/codec/test_capi.py builds a Cython consumer) is not
# traced: gcc's cc1 under memcheck takes minutes and reports its own
# uninitialised reads (75,136 errors, none in framecodec, when it was).
# Leak checking is off: the interpreter keeps memory until exit by design.
# Bounded by MEMCHECK_TIMEOUT (default 2700 s: tests/codec took over 1800 s
# under memcheck).  Exit status: 0 when memcheck found no error and pytest
# passed.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
out=${MEMCHECK_BUILD_DIR:-$root/build/memcheck}
venv=$here/.venv-memcheck

find_python() {
  local c
  for c in "${MEMCHECK_PYTHON:-}" python3.12 python3.13; do
    [ -n "$c" ] && "$c" -c 'import sys; assert sys.version_info >= (3, 12)' 2>/dev/null && { echo "$c"; return; }
  done
  if command -v pyenv >/dev/null; then
    for c in "$(pyenv root)"/versions/3.12*/bin/python3 "$(pyenv root)"/versions/3.13*/bin/python3; do
      [ -x "$c" ] && { echo "$c"; return; }
    done
  fi
  echo "memcheck: no CPython 3.12+ found; set MEMCHECK_PYTHON" >&2
  exit 1
}
PYTHON=$(find_python)
command -v valgrind >/dev/null || { echo "memcheck: install valgrind (apt-get install valgrind)" >&2; exit 1; }

if [ ! -x "$venv/bin/python" ]; then
  "$PYTHON" -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q "Cython>=3.1,<4" "setuptools>=77" "pytest>=7" "hypothesis>=6.80"

# shellcheck source=_build_copy.sh
source "$here/_build_copy.sh"
copy_sources "$root" "$out"
( cd "$out" && CFLAGS="-O1 -g -fno-omit-frame-pointer" FRAMECODEC_REQUIRE_EXTENSION=1 \
    "$venv/bin/python" setup.py -q build_ext -i ) >"$out/build.log" 2>&1 || {
  tail -30 "$out/build.log" >&2; echo "memcheck: build failed" >&2; exit 1; }

logs=$here/logs/memcheck-$(date +%Y%m%d-%H%M%S)
mkdir -p "$logs"
cd "$root"
tests=(tests/codec)
echo "memcheck: $(ls "$out"/src/framecodec/codec/_codec*.so), source $(head -1 "$out/SOURCE_REVISION")"
echo "memcheck: $("$venv/bin/python" -VV | head -1)"
echo "memcheck: logs in $logs"
started=$(date +%s)
set +e
PYTHONPATH="$out/src:$here" PYTHONMALLOC=malloc \
  timeout --kill-after=30 "${MEMCHECK_TIMEOUT:-2700}" \
  valgrind --tool=memcheck --trace-children=yes --error-exitcode=99 --leak-check=no \
    --trace-children-skip='*/gcc,*/cc,*/x86_64-linux-gnu-gcc*,*/cc1,*/as,*/ld,*/collect2,*/uname' \
    --num-callers=40 --suppressions="$here/valgrind-python.supp" ${MEMCHECK_VALGRIND_ARGS:-} \
    --log-file="$logs/vg.%p.log" \
    "$venv/bin/python" -m pytest -q -p no:cacheprovider -p instrumented_pytest "${tests[@]}" "$@" \
  2>&1 | tee "$logs/pytest.log"
rc=${PIPESTATUS[0]}
set -e
elapsed=$(( $(date +%s) - started ))

errors=0
processes=0
for f in "$logs"/vg.*.log; do
  processes=$((processes + 1))
  n=$(sed -n 's/.*ERROR SUMMARY: \([0-9]*\) errors.*/\1/p' "$f" | tail -1)
  if [ -z "$n" ]; then
    echo "memcheck: $f has no ERROR SUMMARY (process killed?)"
    continue
  fi
  if [ "$n" -gt 0 ]; then echo "memcheck: $n error(s) in $f"; fi
  errors=$((errors + n))
done
echo "memcheck: ---- summary ----"
echo "memcheck: wall time $elapsed s, pytest+valgrind exit status $rc"
echo "memcheck: $processes process(es) checked, $errors memcheck error(s)"
if [ "$errors" -gt 0 ]; then
  grep -h -A12 -E '^==[0-9]+== (Invalid|Conditional|Use of uninit|Syscall param|Mismatched|Source and dest)' \
    "$logs"/vg.*.log | head -80
fi
[ "$rc" -eq 0 ] && [ "$errors" -eq 0 ]
