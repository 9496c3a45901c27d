#!/usr/bin/env bash
# Builds the shared library with the phone profile (`mobile` in Cargo.toml: opt-level z, fat
# LTO, one codegen unit, panic = unwind) for x86_64 (the host) and aarch64 (the stand-in for
# Android arm64), and prints for each its stripped size against the 6 MB goal, the sizes of its
# sections and the crates whose code dominates it.
#
#   bash scripts/lib-size.sh                                       # x86_64
#   LIB_SIZE_TARGETS="x86_64 aarch64" bash scripts/lib-size.sh     # both; each a fat-LTO build
#   CARGO_PROFILE_MOBILE_PANIC=abort bash scripts/lib-size.sh      # try another setting
#   bash scripts/lib-size.sh --features …                         # extra arguments go to cargo rustc
#
# The build keeps its symbols (CARGO_PROFILE_MOBILE_STRIP=false) so that they can be attributed to
# crates; the size printed is that of a `strip --strip-all` copy, which is what the profile's
# `strip = true` ships. Attribution is by symbol name after LTO inlining, so it is approximate.
# No NDK is reachable here, so aarch64-unknown-linux-gnu stands in for aarch64-linux-android
# (`scripts/test-arm64.sh` installs its cross toolchain). Its library is linked the way the NDK
# links the Android one: by LLD (rust-lld, through the gcc-ld wrapper Rust ships; Debian's cross
# gcc would use GNU ld), with bindings/build.rs's Android flags --icf=all and
# --pack-dyn-relocs=android, and the 16 KB page alignment Android 15 requires of arm64 libraries
# (-z max-page-size=16384, the NDK r27+ default). It is measured, not loaded. (Not in the
# default target list: it is a second fat-LTO build of a few minutes.) What the NDK link
# would still change: bionic instead of glibc (std's platform layer differs a little; both are
# linked dynamically), and the NDK's LLVM libunwind linked statically into the library where
# glibc builds use the system's libgcc_s (tens of kilobytes). tract-linalg's kernels differ per
# ABI (x86_64: AVX2/FMA and AVX-512; arm64: NEON, fp16, SVE and SME ones), so the sizes differ.
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
# core/src/kernels), so the registry is linked again (about +215 KB by the measurement above), and
# the core's own reader builds tract-core's typed model directly, so tract-hir is gone:
#   5 797 880  x86_64 (4 583 192 on aarch64), 2026-12-03.
# What is left is mostly tract-core's operators (table below).
set -euo pipefail
cd "$(dirname "$0")/.."

# One library: builds it for $1 (x86_64 or aarch64), prints its stripped size and breakdown.
measure() {
  local arch=$1 triple binutils="" dir
  local -a cargo_target=() link_args=()
  case $arch in
    x86_64) dir=target/mobile ;;
    aarch64)
      triple=aarch64-unknown-linux-gnu
      command -v aarch64-linux-gnu-gcc > /dev/null && rustup target list --installed | grep -qx $triple \
        || { echo "lib-size.sh: no aarch64 toolchain; run scripts/test-arm64.sh once (it installs it)" >&2; return 1; }
      export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
      export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar
      binutils=aarch64-linux-gnu-
      dir=target/$triple/mobile
      cargo_target=(--target $triple)
      local gcc_ld
      gcc_ld="$(rustc --print sysroot)/lib/rustlib/$(rustc -vV | sed -n 's/^host: //p')/bin/gcc-ld"
      # The NDK's link (see the header); bindings/build.rs adds nothing for linux-gnu aarch64.
      for a in -fuse-ld=lld "-B$gcc_ld" -Wl,--icf=all -Wl,--pack-dyn-relocs=android -Wl,-z,max-page-size=16384; do
        link_args+=(-C "link-arg=$a")
      done ;;
    *) echo "lib-size.sh: unknown target $arch (x86_64 or aarch64)" >&2; return 1 ;;
  esac
  # Only the cdylib: nothing else is shipped, and the rlib would add fat-LTO work for nothing.
  CARGO_PROFILE_MOBILE_STRIP=false cargo rustc -p nnzip-bindings --lib --profile mobile --crate-type cdylib \
    "${cargo_target[@]}" "${EXTRA[@]}" ${link_args[@]+-- "${link_args[@]}"}
  local lib=$dir/libnnzip.so stripped=$dir/libnnzip.stripped.so
  [ -f "$lib" ] || { echo "lib-size.sh: $lib not built (this script measures Linux ELF builds)" >&2; return 1; }
  "${binutils}strip" --strip-all -o "$stripped" "$lib"
  local bytes
  bytes=$(wc -c < "$stripped")
  echo
  awk -v b="$bytes" -v a="$arch" 'BEGIN { printf "lib-size.sh: stripped libnnzip.so (profile mobile, %s): %d bytes = %.2f MB (goal: at most 6 MB)\n", a, b, b / 1e6 }'
  if [ "$bytes" -le 6000000 ]; then echo "lib-size.sh: within the goal"; else echo "lib-size.sh: OVER the goal"; fi

  echo
  echo "Largest sections (bytes):"
  "${binutils}size" -A "$stripped" | awk '$2 ~ /^[0-9]+$/ && $2 > 50000 { printf "  %-20s %10d\n", $1, $2 }' | sort -k2 -nr

  echo
  echo "Code and constants by crate (symbol sizes; generic code counts for the crate that defines it):"
  "${binutils}nm" -S -C --defined-only "$lib" | by_crate
}

# `nm -S -C` lines on stdin: the 20 crates with the most bytes of symbols, then the total.
by_crate() {
  awk '
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
}

EXTRA=("$@")
for arch in ${LIB_SIZE_TARGETS:-x86_64}; do
  measure "$arch"
done
