# Sourced by build_sanitized.sh and memcheck.sh: copy the sources to "$out" for
# an out-of-tree build (never touching src/framecodec's in-place extension).
copy_sources() {
  local root=$1 out=$2
  rm -rf "$out"
  mkdir -p "$out/src"
  cp "$root/setup.py" "$root/pyproject.toml" "$out/"
  if [ -f "$root/README.md" ]; then cp "$root/README.md" "$out/"; fi
  cp -r "$root/src/framecodec" "$out/src/"
  # Never reuse artefacts of the dev build: regenerate the C file, rebuild the .so.
  find "$out/src" \( -name '*.so' -o -name '*.c' -o -name '*.html' -o -name __pycache__ \) -prune \
    -exec rm -rf {} +
  { git -C "$root" rev-parse HEAD 2>/dev/null || echo "(not a git checkout)"
    git -C "$root" status --porcelain -- src setup.py 2>/dev/null || true
    ( cd "$out" && sha256sum src/framecodec/codec/_codec.py src/framecodec/codec/*.pxd src/framecodec/codec/_hton.h )
  } >"$out/SOURCE_REVISION"
}
