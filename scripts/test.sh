#!/usr/bin/env bash
# The whole test suite: what CI runs (`.ci/run`) and what a developer runs before pushing.
set -euo pipefail
cd "$(dirname "$0")/.."

# Test data: Fashion-MNIST from Debian (the tests that train read it).
if [ ! -d /usr/share/datasets/fashion-mnist ]; then
  if [ "$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist;
  else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist; fi
fi

# One build of everything, then the tests (dev profile: dependencies optimised, see Cargo.toml).
cargo build --workspace --all-targets
cargo test --workspace

# ONNX's own backend tests against the core (docs/CONFORMANCE.md): the onnx wheel in a venv and
# its test data (about a minute, once per clone), then the harness built above (about a second).
NNZIP_CONFORMANCE_BIN=target/debug/examples/onnx_conformance bash tools/benches/onnx_conformance.sh

# arm64 step: nnzip-core's tests cross-built for aarch64 and run under qemu (the NEON kernels
# asserted), and classify on the shared photos against x86_64. CI runs the default subset
# (nnzip-core); ARM64_FULL=1 adds nnzip-e2e's tests. Reuses the host build above. See
# mobile/README.md ("arm64 under qemu").
echo "== arm64: the core under qemu-aarch64 (scripts/test-arm64.sh) =="
bash scripts/test-arm64.sh

# Mobile step (separate, after the cargo tests): the Kotlin bindings on the JVM — JUnit 5 through
# JNA against target/debug/libnnzip.so, built above —, the Android app's Kotlin compiled against
# the Android API jar, and the app's screen run under Robolectric with the same library. Reuses the
# build above (no second compile of tract). See mobile/README.md.
echo "== mobile: Kotlin bindings on the JVM + Android compile check + the app under Robolectric (scripts/test-mobile.sh) =="
bash scripts/test-mobile.sh
