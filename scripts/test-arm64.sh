#!/usr/bin/env bash
# The core on arm64: cross-builds nnzip's tests for aarch64-unknown-linux-gnu and runs them under
# qemu (user mode), the closest these machines get to a phone; see mobile/README.md ("arm64 under
# qemu"). A step of `scripts/test.sh` (so of CI) with the default set below.
#
#   bash scripts/test-arm64.sh                   # CI's set: nnzip-core and classify agreement
#   ARM64_FULL=1 bash scripts/test-arm64.sh      # + nnzip-e2e's tests
#   ARM64_QEMU_CPU=max bash scripts/test-arm64.sh    # another emulated CPU (qemu-aarch64 -cpu help)
#
# What runs, by crate and test kind (not by kernel internals, so it holds when kernels move):
#   - nnzip-core: its unit tests and all its integration tests (core/tests: the .nnz format and
#     its decoders, hostile files, the ONNX reader's operators, nnzip's own operators — the
#     depthwise, pointwise and sparse (pruned) products and the stem's direct spatial
#     convolution — against an f64 reference, tract's own path and their portable kernels; the
#     suites also assert that their plans select the NEON kernels on aarch64).
#   - classify agreement with x86_64: EfficientNet-Lite0 packed once by the host `nnzip pack`,
#     nnzip-core's example `image_logits` prints its logits on every ../shared/images/*.jpg
#     natively, then under qemu compares its own with those (same top-5, logits within the
#     tolerance stated and justified in core/examples/image_logits.rs).
#   - with ARM64_FULL=1, nnzip-e2e's unit and integration tests too (tests/tests: ONNX -> .nnz ->
#     running model against tract on the ONNX, nnzip's kernels against tract's path on
#     EfficientNet-Lite0's logits). Not in CI's set: nnzip-e2e depends on nnzip-tools, which
#     brings candle and its matrix crates into the arm64 build, the largest part of its time.
# The arm64 build uses the profile `arm64-test` (Cargo.toml: dependencies at opt-level 1 instead
# of the dev profile's 3), which compiles in a fraction of the time; the tests run slower under
# qemu but are small.
# Left out:
#   - nnzip-tools' tests: training and compression (candle over Fashion-MNIST) would take hours
#     under emulation and are arithmetic the phone never runs; its CLI test spawns the `nnzip`
#     binary, which would be an arm64 program on an x86_64 host.
#   - nnzip-bindings: the uniffi layer over the core, which the JVM step (scripts/test-mobile.sh)
#     drives on the host; nothing in it depends on the CPU.
#   - Doc tests: API examples, run on the host.
# Build scripts and proc macros (uniffi's, prost's, tract-linalg's assembler step) are host
# programs: cargo builds them for x86_64 (under target/arm64-test, the profile's own directory);
# only the target crates are compiled for aarch64 (C and assembly by aarch64-linux-gnu-gcc).
# Test files are read from ../shared by absolute path, which qemu-user shares with the host.
#
# The emulated CPU defaults to a Cortex-A76 (ARMv8.2: NEON, fp16, dot product; no SVE or SME),
# the big core of many current phones: tract-linalg then picks its NEON matrix kernels as on
# those phones, not the SVE/SME ones qemu's default "max" CPU would offer.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=aarch64-unknown-linux-gnu
SYSROOT=/usr/aarch64-linux-gnu
QEMU_CPU=${ARM64_QEMU_CPU:-cortex-a76}

# What it needs: a cross C toolchain and glibc for aarch64, qemu-user, Rust's aarch64 std.
missing=()
command -v aarch64-linux-gnu-gcc > /dev/null || missing+=(gcc-aarch64-linux-gnu)
[ -e "$SYSROOT/lib/ld-linux-aarch64.so.1" ] || missing+=(libc6-dev-arm64-cross)
command -v qemu-aarch64 > /dev/null || missing+=(qemu-user)
if [ ${#missing[@]} -gt 0 ]; then
  echo "test-arm64.sh: installing ${missing[*]}"
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi
rustup target list --installed | grep -qx "$TARGET" || rustup target add "$TARGET"

export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L $SYSROOT -cpu $QEMU_CPU"
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
export AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar
arm64=(--target "$TARGET" --profile arm64-test)
# CI's set (default): nnzip-core, which holds the kernels, the decoders and the runtime, and
# classify agreement through its example image_logits. ARM64_FULL=1 adds nnzip-e2e's tests, whose
# dependency nnzip-tools brings candle and its matrix crates into the arm64 build (time below).
packages=(-p nnzip-core)
[ "${ARM64_FULL:-0}" = 1 ] && packages+=(-p nnzip-e2e)

SECONDS=0
# One cargo invocation builds every arm64 artifact (the same package and target selection, so the
# same features: nothing is compiled twice), the next runs the tests from it.
echo "== arm64: cross-building ${packages[*]} (tests, examples) for $TARGET =="
cargo build "${arm64[@]}" "${packages[@]}" --lib --tests --examples
echo "test-arm64.sh: cross build ${SECONDS}s"

echo "== arm64: tests under qemu-aarch64 -cpu $QEMU_CPU =="
cargo test "${arm64[@]}" "${packages[@]}" --lib --tests --no-fail-fast
echo "test-arm64.sh: cross build and tests ${SECONDS}s"

echo "== arm64: classify on ../shared/images against x86_64 =="
# The host side as scripts/test.sh builds it (the whole workspace: a no-op after it; a narrower
# selection would unify other features and rebuild the dependencies).
cargo build --workspace --all-targets
out=target/arm64
mkdir -p "$out"
model="$out/efficientnet_lite0.nnz"
target/debug/nnzip pack ../shared/models/efficientnet_lite0.onnx -o "$model" \
  --preprocess efficientnet-lite --labels ../shared/models/imagenet_labels.txt > /dev/null
images=(../shared/images/*.jpg)
target/debug/examples/image_logits "$model" "${images[@]}" > "$out/logits-x86_64.json"
$CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER "target/$TARGET/arm64-test/examples/image_logits" \
  "$model" "${images[@]}" --against "$out/logits-x86_64.json" > "$out/logits-aarch64.json"
echo "test-arm64.sh: arm64 tests and classify agreement passed (${SECONDS}s; logits in $out/)"
