#!/usr/bin/env bash
# ONNX's own backend tests against nnzip's core runtime (docs/CONFORMANCE.md).
#
#   tools/benches/onnx_conformance.sh [--each] [FOLDER …]   (default: node pytorch-converted pytorch-operator simple)
#
# Installs the `onnx` wheel from PyPI in a venv (once, under target/conformance), takes the test
# data it ships (pytorch-converted, pytorch-operator, simple) and generates the node tests from
# its test cases, as `python -m onnx.backend.test.cmd_tools generate-data` does for the model
# tests. Then runs the harness (tools/examples/onnx_conformance.rs): every test whose operators
# nnzip supports is packed, loaded, run and compared; prints counts per folder, the failures and
# the operators most often missing (--each: every test's outcome first). Exits 1 if a test fails. ONNX_VERSION pins the wheel.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
WORK="${NNZIP_CONFORMANCE_DIR:-$ROOT/target/conformance}"
VERSION="${ONNX_VERSION:-1.23.2}"
VENV="$WORK/venv"
DATA="$WORK/data-$VERSION"
mkdir -p "$WORK"
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import onnx, sys; sys.exit(onnx.__version__ != '$VERSION')" 2>/dev/null; then
    echo "creating $VENV with onnx==$VERSION from PyPI (once)..." >&2
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q "onnx==$VERSION" numpy
fi
if [ ! -f "$DATA/.complete" ]; then
    rm -rf "$DATA"
    mkdir -p "$DATA"
    SHIPPED="$("$VENV/bin/python" -c 'import onnx.backend.test as t, os; print(os.path.join(os.path.dirname(t.__file__), "data"))')"
    cp -r "$SHIPPED"/pytorch-converted "$SHIPPED"/pytorch-operator "$SHIPPED"/simple "$DATA"/
    # The node tests are not in the wheel as files: write them from ONNX's node test cases with
    # the writer of its own generate-data command, pointed at the node cases.
    "$VENV/bin/python" - "$DATA" <<'PY' 2>/dev/null
import argparse, sys, types
import onnx.backend.test.case.node as node_cases
import onnx.backend.test.cmd_tools as cmd_tools
cmd_tools.model_test = types.SimpleNamespace(collect_testcases=node_cases.collect_testcases)
cmd_tools.generate_data(argparse.Namespace(output=sys.argv[1]))
PY
    touch "$DATA/.complete"
fi
HARNESS="${NNZIP_CONFORMANCE_BIN:-}"
if [ -z "$HARNESS" ]; then
    # The workspace build CI makes (a build of one package resolves features differently and
    # rebuilds the dependencies).
    (cd "$ROOT" && cargo build -q --workspace --all-targets)
    HARNESS="$ROOT/target/debug/examples/onnx_conformance"
fi
echo "onnx $VERSION test data in $DATA" >&2
EACH=()
if [ "${1:-}" = --each ]; then EACH=(--each); shift; fi
"$HARNESS" "${EACH[@]}" "$DATA" "$@"
