#!/usr/bin/env bash
# Build framecodec's compiled core with AddressSanitizer, UndefinedBehaviorSanitizer
# and libFuzzer coverage instrumentation, OUT OF TREE, for the atheris harnesses.
#
#   fuzz/build_sanitized.sh            # -> build/asan/src/framecodec/codec/_codec*.so
#
# The in-place extension of the dev virtualenv (src/framecodec/codec/*.so) is never
# touched: src/ and setup.py are copied to $FUZZ_BUILD_DIR (default build/asan)
# and built there with clang.  The harnesses import that copy through
# PYTHONPATH (fuzz/run.sh sets it), so the compiled core and its pure-Python
# twin they load are the same snapshot of _codec.py.
#
# Tools go into fuzz/.venv (gitignored): Cython and atheris.  atheris is built
# from source with the same clang, because only a source build produces
# asan_with_fuzzer.so (the ASan runtime with libFuzzer linked in), which must
# be LD_PRELOADed for an instrumented extension; the PyPI wheel lacks it.
#
# Needs clang with compiler-rt (Debian 12: apt-get install clang-16
# libclang-rt-16-dev).  Override with CLANG=/path/to/clang, PYTHON=python3.x.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
out=${FUZZ_BUILD_DIR:-$root/build/asan}
venv=$here/.venv
PYTHON=${PYTHON:-python3}
ATHERIS_VERSION=${ATHERIS_VERSION:-3.0.0}

find_clang() {
  local c
  for c in "${CLANG:-}" clang-19 clang-18 clang-17 clang-16 clang-15 clang; do
    [ -n "$c" ] && command -v "$c" >/dev/null 2>&1 && { command -v "$c"; return; }
  done
  echo "build_sanitized: no clang found; on Debian 12: apt-get install clang-16 libclang-rt-16-dev" >&2
  exit 1
}
CLANG=$(find_clang)
CLANGXX=${CLANGXX:-${CLANG/clang/clang++}}
echo "build_sanitized: clang: $CLANG ($("$CLANG" --version | head -1))"

# -- tools ---------------------------------------------------------------
if [ ! -x "$venv/bin/python" ]; then
  "$PYTHON" -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q "Cython>=3.1,<4" "setuptools>=77"
preload_dir() { "$venv/bin/python" -c 'import atheris; print(atheris.path())' 2>/dev/null || true; }
if [ ! -f "$(preload_dir)/asan_with_fuzzer.so" ]; then
  echo "build_sanitized: building atheris $ATHERIS_VERSION from source (a few minutes)"
  CC="$CLANG" CXX="$CLANGXX" CLANG_BIN="$CLANG" \
    "$venv/bin/python" -m pip install -q --force-reinstall --no-deps \
    --no-binary atheris "atheris==$ATHERIS_VERSION"
fi
preload="$(preload_dir)/asan_with_fuzzer.so"
[ -f "$preload" ] || { echo "build_sanitized: atheris built no $preload" >&2; exit 1; }

# -- sources ---------------------------------------------------------------
# shellcheck source=_build_copy.sh
source "$here/_build_copy.sh"
copy_sources "$root" "$out"

# -- build -----------------------------------------------------------------
# -fno-wrapv undoes CPython's -fwrapv (from sysconfig CFLAGS, which setuptools
# puts first) so UBSan checks signed overflow in the core's length arithmetic.
# -fno-sanitize-recover makes every UBSan report fatal, so libFuzzer saves it.
SAN="-fsanitize=address,undefined,fuzzer-no-link -fno-sanitize-recover=all"
export CC="$CLANG" LDSHARED="$CLANG -shared"
export CFLAGS="$SAN -fno-omit-frame-pointer -g -O1 -fno-wrapv"
export LDFLAGS="-fsanitize=address,undefined"
export FRAMECODEC_REQUIRE_EXTENSION=1
( cd "$out" && "$venv/bin/python" setup.py -q build_ext -i ) >"$out/build.log" 2>&1 || {
  tail -40 "$out/build.log" >&2
  echo "build_sanitized: build failed, log in $out/build.log" >&2
  exit 1
}
so=$(ls "$out"/src/framecodec/codec/_codec*.so)
symbols=$(nm "$so")  # (not piped into grep -q: with pipefail, nm's SIGPIPE fails the test)
for sym in __asan_report __ubsan_handle __sanitizer_cov_8bit_counters_init __sanitizer_cov_trace_cmp; do
  grep -q "$sym" <<<"$symbols" || { echo "build_sanitized: $so lacks $sym (instrumentation missing)" >&2; exit 1; }
done

# -- environment for running it --------------------------------------------
cat >"$out/env.sh" <<ENV
# Sourced by fuzz/run.sh and fuzz/asan_tests.sh: run Python against the sanitized core.
export FUZZ_VENV="$venv"
export PYTHONPATH="$out/src"
export FUZZ_PRELOAD="$preload"
export PYTHONMALLOC=malloc
export ASAN_OPTIONS="detect_leaks=0:allocator_may_return_null=1:symbolize=1:handle_abort=1:detect_stack_use_after_return=0:quarantine_size_mb=64:malloc_context_size=10"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export ASAN_SYMBOLIZER_PATH="$(command -v llvm-symbolizer-16 || command -v llvm-symbolizer || echo /usr/bin/llvm-symbolizer)"
ENV
echo "build_sanitized: built $so"
echo "build_sanitized: run with: source $out/env.sh; LD_PRELOAD=\$FUZZ_PRELOAD \$FUZZ_VENV/bin/python ..."
