#!/usr/bin/env bash
# A fuzz smoke: every atheris harness for a short, bounded number of
# executions against the sanitized core; fails on any crash.  CI runs it
# (.ci/run); the long runs are fuzz/run.sh HARNESS SECONDS.
#
#   fuzz/smoke.sh                          # 20000 executions per harness
#   FUZZ_SMOKE_RUNS=5000 fuzz/smoke.sh     # fewer
#
# Each harness starts from its committed seed corpus (fuzz/corpus/HARNESS)
# with a fresh, temporary working corpus: what a long local run has grown in
# fuzz/work/ would otherwise be replayed first and eat the budget.  Bounded
# twice: libFuzzer stops after FUZZ_SMOKE_RUNS executions or
# FUZZ_SMOKE_SECONDS (default 90) per harness, whichever comes first.
# Prints executions, exec/s and wall time per harness.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
runs=${FUZZ_SMOKE_RUNS:-20000}
seconds=${FUZZ_SMOKE_SECONDS:-90}
harnesses=(fuzz_frames fuzz_messages fuzz_differential)
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

summary=()
failed=()
for harness in "${harnesses[@]}"; do
  echo "smoke: $harness: $runs executions (at most ${seconds}s)"
  set +e
  FUZZ_WORK_DIR=$scratch/$harness "$here/run.sh" "$harness" "$seconds" -runs="$runs" \
    | tee "$scratch/$harness.txt"
  rc=${PIPESTATUS[0]}
  set -e
  value() { sed -n "s/^run: $1 *//p" "$scratch/$harness.txt" | head -1; }
  summary+=("$(printf '%-18s executions %-7s exec/s %-6s wall %s' \
    "$harness" "$(value executions)" "$(value 'exec\/s (average)')" "$(value 'wall time')")")
  [ "$rc" -eq 0 ] || failed+=("$harness (exit status $rc)")
done

echo "smoke: ---- summary ----"
printf 'smoke: %s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
  printf 'smoke: FAILED: %s\n' "${failed[@]}" >&2
  exit 1
fi
echo "smoke: no crash in ${#harnesses[@]} harnesses"
