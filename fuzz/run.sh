#!/usr/bin/env bash
# Run one atheris harness against the sanitized compiled core, for a bounded time.
#
#   fuzz/run.sh HARNESS SECONDS [libFuzzer options...]
#   fuzz/run.sh fuzz_frames 600
#   FRAMECODEC_FUZZ_TOLERATE_KNOWN=1 fuzz/run.sh fuzz_messages 600   # go on past reported findings
#   FUZZ_JOBS=2 fuzz/run.sh fuzz_frames 1800   # libFuzzer's fork mode, one child per core
#
# HARNESS is fuzz_frames, fuzz_messages or fuzz_differential.  Builds the
# sanitized core first if build/asan has none (fuzz/build_sanitized.sh).
# libFuzzer's working corpus grows in fuzz/work/HARNESS (gitignored), seeded
# from fuzz/corpus/HARNESS (committed, never written; FUZZ_WORK_DIR puts the
# working corpus elsewhere, as fuzz/smoke.sh does); crash inputs land in
# fuzz/artifacts/HARNESS/, the full log in fuzz/logs/.  Prints a summary:
# executions, exec/s, coverage (cov: edges of the C extension and of the
# instrumented Python, ft: features), corpus size, and any crash.
# Bounded: libFuzzer stops after SECONDS; a hard timeout kills it 5 minutes later.
#
# Speed (profiled with perf: ASan's allocator took ~40% of the time, since
# PYTHONMALLOC=malloc sends every Python object through it): allocation
# stacks are kept 2 frames deep here, not 10 (FUZZ_MALLOC_CONTEXT; replay a
# crash input with fuzz/replay.py for full stacks), and FUZZ_JOBS=N runs N
# children in libFuzzer's fork mode, which merge into one corpus.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
harness=${1:?usage: fuzz/run.sh HARNESS SECONDS [libFuzzer options...]}
seconds=${2:?usage: fuzz/run.sh HARNESS SECONDS [libFuzzer options...]}
shift 2
harness=${harness%.py}
harness=${harness##*/}
[ -f "$here/$harness.py" ] || { echo "run: no harness fuzz/$harness.py" >&2; exit 2; }
[[ $seconds =~ ^[0-9]+$ ]] || { echo "run: SECONDS must be a number" >&2; exit 2; }

out=${FUZZ_BUILD_DIR:-$root/build/asan}
[ -f "$out/env.sh" ] || "$here/build_sanitized.sh"
# shellcheck source=/dev/null
source "$out/env.sh"

work=${FUZZ_WORK_DIR:-$here/work/$harness}
artifacts=$here/artifacts/$harness
mkdir -p "$work" "$artifacts" "$here/logs"
log=$here/logs/$harness-$(date +%Y%m%d-%H%M%S).log
dict_name=${harness#fuzz_}
dict=$here/$dict_name.dict

options=(
  -max_total_time="$seconds"
  -print_final_stats=1
  -timeout="${FUZZ_TIMEOUT:-30}"
  -rss_limit_mb="${FUZZ_RSS_MB:-2048}"
  -max_len="${FUZZ_MAX_LEN:-8192}"
  -artifact_prefix="$artifacts/"
)
[ -f "$dict" ] && options+=(-dict="$dict")
jobs=${FUZZ_JOBS:-1}
[[ $jobs =~ ^[1-9][0-9]*$ ]] || { echo "run: FUZZ_JOBS must be a positive number" >&2; exit 2; }
# Fork mode re-runs the harness by its path (argv[0]): the harness files are
# executable, and their "python3" must be the fuzzing venv's.
[ "$jobs" -gt 1 ] && options+=(-fork="$jobs")
export PATH="$FUZZ_VENV/bin:$PATH"
export ASAN_OPTIONS="$ASAN_OPTIONS:malloc_context_size=${FUZZ_MALLOC_CONTEXT:-2}"

echo "run: $harness for ${seconds}s, $jobs job(s), against $(ls "$out"/src/framecodec/codec/_codec*.so)"
echo "run: source revision $(head -1 "$out/SOURCE_REVISION"), tolerate known findings: ${FRAMECODEC_FUZZ_TOLERATE_KNOWN:-0}"
echo "run: log $log"
started=$(date +%s)
set +e
timeout --kill-after=30 $((seconds + 300)) \
  env LD_PRELOAD="$FUZZ_PRELOAD" "$FUZZ_VENV/bin/python" "$here/$harness.py" \
  "${options[@]}" "$@" "$work" "$here/corpus/$harness" >"$log" 2>&1
rc=$?
set -e
elapsed=$(( $(date +%s) - started ))

# -- summary -------------------------------------------------------------------
last=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
field() { sed -n "s/.*[[:space:]]$1:[[:space:]]*\([0-9a-zA-Z]*\).*/\1/p" <<<"$last"; }
stat() { sed -n "s/^stat::$1:[[:space:]]*//p" "$log" | tail -1; }
execs=$(stat number_of_executed_units)
[ -n "$execs" ] || execs=$(sed -n 's/^#\([0-9]*\).*/\1/p' <<<"$last")
echo "run: ---- $harness summary ----"
echo "run: wall time         ${elapsed}s (exit status $rc)"
echo "run: executions        ${execs:-?}"
rate=$(stat average_exec_per_sec || true)
# Fork mode's parent prints no final stats: the average over the wall time.
if [ -z "$rate" ] && [ -n "$execs" ] && [ "$elapsed" -gt 0 ]; then
  rate=$((execs / elapsed))
fi
echo "run: exec/s (average)  ${rate:-?}"
echo "run: coverage          cov: $(field cov)  ft: $(field ft)  corpus: $(field corp)"
echo "run: peak RSS (MB)     $(stat peak_rss_mb || true)"
echo "run: working corpus    $(find "$work" -type f | wc -l) files in $work"
echo "run: last status line  $last"
if grep -qE 'ERROR: (AddressSanitizer|UndefinedBehaviorSanitizer|libFuzzer)|runtime error:|Uncaught Python exception' "$log"; then
  echo "run: CRASH found:"
  grep -E 'ERROR: (AddressSanitizer|UndefinedBehaviorSanitizer|libFuzzer)|runtime error:|SUMMARY:|Uncaught Python exception|^[A-Za-z_.]*(Error|Finding|Exception): |Test unit written to' "$log" | head -20 | sed 's/^/run:   /'
  exit 1
fi
echo "run: no crash"
exit "$rc"
