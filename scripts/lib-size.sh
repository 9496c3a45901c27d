#!/usr/bin/env bash
# Builds the host shared library with the phone profile (`mobile` in Cargo.toml: opt-level z, fat
# LTO, one codegen unit, panic = unwind) and prints its stripped size against the 6 MB goal, the
# sizes of its sections and the crates whose code dominates it.
#
#   bash scripts/lib-size.sh
#   CARGO_PROFILE_MOBILE_PANIC=abort bash scripts/lib-size.sh      # try another setting
#   bash scripts/lib-size.sh --features …                         # extra arguments go to cargo rustc
#
# The build keeps its symbols (CARGO_PROFILE_MOBILE_STRIP=false) so that they can be attributed to
# crates; the size printed is that of a `strip --strip-all` copy, which is what the profile's
# `strip = true` ships. Attribution is by symbol name after LTO inlining, so it is approximate.
# A host (x86_64 Linux) build stands in for the phone ABIs, which cannot be built here (no Android
# targets or NDK); tract-linalg's kernels differ per ABI (x86_64: AVX2/FMA and AVX-512; arm64: NEON,
# plus fp16 ones), so the phone sizes differ somewhat.
#
# The library is linked with identical code folding and packed relative relocations
# (bindings/build.rs, for the cdylib only and only where the linker is LLD: Android, x86_64 Linux);
# NNZIP_PLAIN_LINK=1 bash scripts/lib-size.sh measures without them.
#
# Measured (stripped, x86_64): 11.97 MB with tract-onnx's full operator registry; 10.37 MB with only
# nnzip's operators registered in tract-onnx (a trial on a local copy: rustfft and tract-nnef stayed,
# kept alive by the NNEF "patch" model transform tract-nnef submits through `inventory`, a static
# constructor that no linker drops, which builds the whole NNEF registry of tract-core operators);
# 6.60 MB (6 595 520 bytes) with nnzip-core reading ONNX itself over tract-hir (core/src/onnx),
# tract-onnx, tract-nnef and rustfft no longer linked; then, one change at a time:
#   6 525 296  --icf=all (identical code folding: one copy of functions with the same machine code)
#   6 137 688  packed relative relocations (.rela.dyn 393 048 bytes -> .relr.dyn 3 760)
#   6 137 432  log's release_max_level_info (no logger on the host, so LTO already drops the
#              records; on Android, where android_logger sets the level at run time, not measured)
#   5 922 632  tract-core without its model-transform registry (a patched copy of tract-core, since
#              dropped: tract-core submits every model transform through `inventory` too, which
#              keeps them all, the float-precision translator, batchify and their serde/erased-serde
#              config parsing)
#   5 986 680  + the padded-plane depthwise kernel (AVX2/NEON/portable) and the direct spatial
#              convolution's stem rule (2026-12-02, then inside the patched tract-core)
# tract-core is now used unmodified from crates.io (the kernels are nnzip-core's own operators,
# core/src/kernels), so the registry is linked again (about +215 KB by the measurement above); the
# size has not been re-measured since. What is left is mostly tract-core's operators (table below).
set -euo pipefail
cd "$(dirname "$0")/.."

# Only the cdylib: nothing else is shipped, and the rlib would add fat-LTO work for nothing.
CARGO_PROFILE_MOBILE_STRIP=false cargo rustc -p nnzip-bindings --lib --profile mobile --crate-type cdylib "$@"
LIB=target/mobile/libnnzip.so
[ -f "$LIB" ] || { echo "lib-size.sh: $LIB not built (this script measures Linux ELF builds)" >&2; exit 1; }
STRIPPED=target/mobile/libnnzip.stripped.so
strip --strip-all -o "$STRIPPED" "$LIB"
BYTES=$(wc -c < "$STRIPPED")
awk -v b="$BYTES" 'BEGIN { printf "lib-size.sh: stripped libnnzip.so (profile mobile, x86_64): %d bytes = %.2f MB (goal: at most 6 MB)\n", b, b / 1e6 }'
if [ "$BYTES" -le 6000000 ]; then echo "lib-size.sh: within the goal"; else echo "lib-size.sh: OVER the goal"; fi

echo
echo "Largest sections (bytes):"
size -A "$STRIPPED" | awk '$2 ~ /^[0-9]+$/ && $2 > 50000 { printf "  %-20s %10d\n", $1, $2 }' | sort -k2 -nr

echo
echo "Code and constants by crate (symbol sizes; generic code counts for the crate that defines it):"
nm -S -C --defined-only "$LIB" | awk '
  function hex(s,   i, n) { n = 0; for (i = 1; i <= length(s); i++) n = n * 16 + index("0123456789abcdef", substr(s, i, 1)) - 1; return n }
  NF >= 4 && $2 ~ /^[0-9a-f]+$/ {
    size = hex($2)
    name = $0
    sub(/^[^ ]+ [^ ]+ [^ ]+ /, "", name)
    sub(/^(<|&|\*const |\*mut |dyn |\(|\[)+/, "", name)
    crate = name
    if (match(name, /^[A-Za-z_][A-Za-z0-9_]*::/)) crate = substr(name, 1, RLENGTH - 2)
    else crate = "(C / unnamed)"
    total[crate] += size; all += size
  }
  END {
    for (c in total) printf "  %-28s %10d  %5.1f%%\n", c, total[c], 100 * total[c] / all
    printf "  %-28s %10d\n", "(all symbols)", all > "/dev/stderr"
  }' 2>/tmp/lib-size-total.$$ | sort -k2 -nr | head -20
cat /tmp/lib-size-total.$$; rm -f /tmp/lib-size-total.$$
