#!/usr/bin/env bash
# The case table of docs/HOSTILE.md: every hostile input of issue 21 given to the release CLI,
# with its exit code, the first line of its error, peak memory (max RSS from /usr/bin/time -v)
# and wall time. Prints a Markdown table.
#
#   bash scripts/hostile-table.sh              # from the project root; ../shared/ beside it
#   PROFILE=dev bash scripts/hostile-table.sh  # the dev build's nnzip instead of a release build
#
# The files are crafted by tools/tests/hostile_files.rs (its ignored test writes them) into
# target/hostile/. Builds `nnzip` first. Takes a few minutes, most of it the one
# training case (lenet300 on 2,000 Fashion-MNIST images).
set -euo pipefail
cd "$(dirname "$0")/.."
D=target/hostile
rm -rf "$D"
mkdir -p "$D"
# PROFILE=dev: the dev build (dependencies and nnzip-tools at opt-level 3, the core at 1), the
# one the test below builds anyway: no second build of tract.
PROFILE=${PROFILE:-release}
[ "$PROFILE" = dev ] || cargo build --profile "$PROFILE" -q -p nnzip-tools --bin nnzip
NNZIP_HOSTILE_DIR="$PWD/$D" cargo test -q --workspace --test hostile_files -- --ignored \
    write_the_case_files > /dev/null
N=target/$([ "$PROFILE" = dev ] && echo debug || echo "$PROFILE")/nnzip
M=../shared/models
$N pack $M/lenet5.onnx -o $D/lenet5.nnz --preprocess mnist > /dev/null
$N pack $M/efficientnet_lite0.onnx -o $D/effnet.nnz > /dev/null
cp $M/lenet300.onnx $D/self.onnx
mkdir -p $D/photos/sub
cp ../shared/images/coffee.jpg $D/photos/sub/
ln -s "$PWD/$D/photos" $D/photos/sub/loop
mkfifo $D/photos/stuck.jpg

echo "| case | command | exit | first line of the error | max RSS | wall |"
echo "|---|---|---|---|---|---|"
# row CASE COMMAND...: runs the command under /usr/bin/time -v, prints one table row.
row() {
    local case="$1"
    shift
    local code=0
    /usr/bin/time -v -o $D/time.txt "$@" > $D/out.txt 2> $D/err.txt || code=$?
    local rss wall first
    rss=$(awk -F': ' '/Maximum resident set size/ {printf "%.1f MB", $2 / 1024}' $D/time.txt)
    wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' $D/time.txt)
    # The program's exit code (time passes it on); the first line of stderr saying an error, a
    # rollback or a panic, else its first line.
    first=$( (grep -m1 -i -e 'error' -e 'rolled back' -e 'panicked' $D/err.txt ||
        grep -v -e '^\s*$' $D/err.txt || true) | head -1 | cut -c1-150 | sed 's/|/\\|/g')
    local shown="$*"
    shown="${shown//$N/nnzip}"
    echo "| $case | \`${shown//$PWD\//}\` | $code | ${first:-—} | $rss | $wall |"
}

row "valid model and photo (reference)" $N classify $D/lenet5.nnz ../shared/images/coffee.jpg
row "recipe resizes to 16384² RGB" $N classify $D/recipe-16384.nnz $D/one-pixel.png
row "sparse bomb: $(stat -c %s $D/sparse-bomb.nnz) B declaring 2^28 elements" \
    $N classify $D/sparse-bomb.nnz $D/one-pixel.png
row "sparse bomb" $N decompress $D/sparse-bomb.nnz -o $D/bomb.onnx
row "sparse bomb" $N inspect $D/sparse-bomb.nnz
for c in output-no-node-produces conv-strides-0 maxpool-strides-0 flatten-axis-100 empty-graph com-evil-relu; do
    row "graph: $c" $N pack $D/graph-$c.onnx -o $D/out.nnz
    row "graph: $c" $N compress $D/graph-$c.onnx -o $D/out.nnz
    row "graph: $c" $N classify $D/graph-$c.nnz $D/one-pixel.png
done
row "PNG $(stat -c %s $D/png-16384-1bit.png) B, 1-bit 16384²" $N classify $D/lenet5.nnz $D/png-16384-1bit.png
row "JPEG $(stat -c %s $D/jpeg-16384x10000.jpg) B declaring 16384×10000" \
    $N classify $D/lenet5.nnz $D/jpeg-16384x10000.jpg
row "JPEG truncated at half" $N classify $D/lenet5.nnz $D/truncated-half.jpg
row "quality collapse (fine-tuning diverges)" $N compress $M/lenet300.onnx --data fashion-mnist \
    --train-limit 2000 --rounds 1 --retrain-epochs 1 --fine-tune-epochs 1 --seed 0 -o $D/l300.nnz
row "no training image" $N compress $M/lenet300.onnx --data fashion-mnist --train-limit 0 -o $D/l300.nnz
row "output is the input" $N compress $D/self.onnx -o $D/self.onnx
row "unwritable output, training asked" $N compress $M/lenet300.onnx --data fashion-mnist \
    -o /proc/nnzip/out.nnz
row "photos: link loop and FIFO" $N agree $D/lenet5.nnz --teacher $M/lenet5.onnx --photos $D/photos \
    --views 1 --json
row "graph needs a tensor the file lacks" $N decompress $D/missing-tensor.nnz -o $D/missing.onnx
row "graph needs a tensor the file lacks" $N inspect $D/missing-tensor.nnz
row "a device" $N inspect /dev/zero
row "SIGINT 0.5 s into decompress" timeout --preserve-status -s INT 0.5 $N decompress $D/effnet.nnz \
    -o $D/effnet.onnx
echo
echo "Temporary files left after the interruption: $(find $D -name '.*.tmp-*' | wc -l);" \
    "written: $(ls $D/out.nnz $D/bomb.onnx $D/missing.onnx 2>/dev/null | wc -l) of the refused outputs."
