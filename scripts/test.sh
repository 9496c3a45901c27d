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
