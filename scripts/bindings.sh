#!/usr/bin/env bash
# Generates the Kotlin and Swift bindings from the built host library into
# target/bindings/{kotlin,swift}, with the workspace's own uniffi-bindgen (bindings/uniffi-bindgen,
# same uniffi version as the library). Generated code is never committed: run this instead.
#
#   bash scripts/bindings.sh
#
# It first runs the same cargo build as scripts/test.sh (`cargo build --workspace --all-targets`),
# so after that build it only generates, and tract is never compiled with a second feature set.
# The bindings describe the API, which is the same in every profile and on every target, so the
# host debug library serves the app's bindings too.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --workspace --all-targets

LIB=""
for cand in target/debug/libnnzip.so target/debug/libnnzip.dylib; do
  if [ -f "$cand" ]; then LIB="$cand"; break; fi
done
if [ -z "$LIB" ]; then
  echo "bindings.sh: no target/debug/libnnzip.so (or .dylib) after the build: is nnzip-bindings still a cdylib?" >&2
  exit 1
fi

OUT=target/bindings
rm -rf "$OUT/kotlin" "$OUT/swift"
for lang in kotlin swift; do
  # --no-format: ktlint/swiftformat are not needed to compile the output.
  target/debug/uniffi-bindgen generate --library "$LIB" --language "$lang" --no-format --out-dir "$OUT/$lang"
done
echo "bindings.sh: generated from $LIB:"
find "$OUT/kotlin" "$OUT/swift" -type f | sort
