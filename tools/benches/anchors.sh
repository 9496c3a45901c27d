#!/usr/bin/env bash
# nnzip's EfficientNet-Lite0 files next to the weight coders people would use instead (issue 25):
# binary16, int8 weights-only round-to-nearest, onnxruntime's int8 QDQ, NNCodec (DeepCABAC) at
# several QPs with its per-tensor options, and nnzip at several target ratios — on the same
# photos and the same fixed views, in one run. Prints a Markdown table (stored bytes, ratio, and
# per evaluation set top-1 agreement with the dense model, the dense class in the top 5, mean KL,
# top-1 on the views where the dense model is sure) and draws KL against file size.
#
#   tools/benches/anchors.sh                       # ratios 6 8 10 12
#   RATIOS="8" FT=0 tools/benches/anchors.sh       # one nnzip file, without fine-tuning
#   RATIOS="6 8 10 8:8" FT=0 tools/benches/anchors.sh   # RATIO:EPOCHS sets one file's fine-tuning
#   NNZIP=/path/to/release/nnzip PLOT=docs/anchors.png tools/benches/anchors.sh
#   RATIOS="8 8@mixed/6" FT=0 tools/benches/anchors.sh   # RATIO[:EPOCHS[w]][@CALIBRATION[/VIEWS]]
#   RATIOS="8:8 8:8w" tools/benches/anchors.sh      # w: fine-tune every weight, codebooks kept
#
# Calibration of an nnzip file (CALIBRATION for all, or @CALIBRATION for one): `wallpapers`
# (default), the calibration folder of scripts/photos.sh, or `mixed`, `scripts/photos.sh
# --mixed`'s folder (the calibration wallpapers and OpenCV's sample photos of objects, animals,
# people and streets): its files, sensitivity and GPTQ caches are named *-mixed, its rows
# "nnzip RATIO ftN mixed". onnxruntime's int8 always calibrates on the wallpapers. Views per
# calibration photo: NNZIP_VIEWS for all, /VIEWS for one (`--views`, default 8; the file names
# say it when not 8).
#
# Photos: calibration and evaluation wallpapers of scripts/photos.sh (nnzip and onnxruntime's
# int8 calibrate on the first; no method sees the second), and a second evaluation set of another
# kind — animals, objects, people, scenes — from registry packages (tools/benches/anchors_photos.py
# lists them and their licences), which no method calibrates on. 10 views per photo (VIEWS).
#
# Python side in target/bench/venv (onnxruntime, numpy<2, torch, nncodec 2.1.3 from PyPI; made
# once: torch from PyPI brings its CUDA libraries, several GB, unused here). nnzip's files are
# made with the release CLI (NNZIP, default target/release/nnzip, built if missing) like
# scripts/compress-efficientnet.sh (8 epochs of fine-tuning; FT=0 for none), niced, one at a time:
# ~20 min each on 2 cores plus ~15 min once for the per-layer sensitivity and GPTQ's input
# statistics (kept in target/bench/anchors for the other ratios). Everything is cached under
# target/bench/anchors (nnzip files, and every row's logits), so a re-run only computes what is
# missing; delete a file there to redo it.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
BENCH=target/bench
WORK=$BENCH/anchors
VENV=$BENCH/venv
RATIOS=${RATIOS:-6 8 10 12}
FT=${FT:-8}
VIEWS=${VIEWS:-10}
shared=${NNZIP_SHARED:-../shared}
model="$shared/models/efficientnet_lite0.onnx"
mkdir -p "$WORK"

if ! "$VENV/bin/python" -c "import onnxruntime, onnx, nncodec.nnc, matplotlib, sklearn, numpy" 2>/dev/null; then
  echo "anchors.sh: installing the Python side in $VENV (once; torch from PyPI is large)..." >&2
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q 'numpy<2' onnx onnxruntime pillow matplotlib scikit-learn torch torchvision nncodec==2.1.3
fi

CALIBRATION=${CALIBRATION:-wallpapers}
NNZIP_VIEWS=${NNZIP_VIEWS:-8}
mixed_cal=""
if [ "$CALIBRATION" = mixed ] || [[ $RATIOS == *@mixed* ]]; then
  { read -r cal; read -r eval; read -r mixed_cal; } < <(bash scripts/photos.sh --mixed)
else
  { read -r cal; read -r eval; } < <(bash scripts/photos.sh)
fi

objects=$BENCH/objects
if [ ! -f "$objects/.complete" ]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && apt-get download jigzo-data >/dev/null 2>"$tmp/apt.log") || {
    cat "$tmp/apt.log" >&2
    echo "anchors.sh: cannot download jigzo-data (is a Debian mirror reachable? try 'apt-get update')" >&2
    exit 1
  }
  dpkg -x "$tmp"/jigzo-data_*.deb "$tmp/jigzo"
  "$VENV/bin/pip" download -q --no-deps --only-binary :all: -d "$tmp/wheels" scikit-image==0.26.0
  rm -rf "$objects"
  "$VENV/bin/python" tools/benches/anchors_photos.py "$objects" "$tmp/jigzo" "$tmp"/wheels/scikit_image-*.whl
  touch "$objects/.complete"
fi

# The photos the mixed calibration adds must not be evaluation photos: compare the pictures.
if [ -n "$mixed_cal" ]; then
  "$VENV/bin/python" tools/benches/anchors_photos.py --disjoint "$eval" "$objects" -- "$mixed_cal"/opencv-*
fi

NNZIP=${NNZIP:-target/release/nnzip}
nnzip_rows=()
for spec in $RATIOS; do
  item=${spec%%@*}
  r=${item%%:*}
  ft=$FT
  [[ $item == *:* ]] && ft=${item#*:}
  scope=centroids
  if [[ $ft == *w ]]; then
    scope=weights
  fi
  calibration=$CALIBRATION
  views=$NNZIP_VIEWS
  if [[ $spec == *@* ]]; then
    calibration=${spec#*@}
    [[ $calibration == */* ]] && views=${calibration#*/}
    calibration=${calibration%%/*}
  fi
  case $calibration in
    wallpapers) nnzip_cal=$cal suffix="" ;;
    mixed) nnzip_cal=$mixed_cal suffix="-mixed" ;;
    *)
      echo "anchors.sh: a calibration is wallpapers or mixed, not '$calibration' (in '$spec')" >&2
      exit 1
      ;;
  esac
  [ "$views" = 8 ] || suffix="$suffix-v$views"
  out="$WORK/effnet-${r}x-ft$ft$suffix.nnz"
  if [ ! -f "$out" ]; then
    [ -x "$NNZIP" ] || cargo build -q --release -p nnzip-tools --bin nnzip
    echo "anchors.sh: nnzip compress --target-ratio $r --fine-tune-epochs ${ft%w} --fine-tune-scope $scope (report in $out.txt)..." >&2
    nice -n 5 "$NNZIP" compress "$model" -o "$out.tmp.nnz" --preprocess efficientnet-lite \
      --labels "$shared/models/imagenet_labels.txt" --calibration "$nnzip_cal" --holdout "$eval" \
      --sensitivity-cache "$WORK/sensitivity$suffix.json" --statistics-cache "$WORK/gptq-statistics$suffix" \
      --target-ratio "$r" --views "$views" \
      --fine-tune-epochs "${ft%w}" --fine-tune-scope "$scope" --fine-tune-optimizer adam --fine-tune-lr 0.0001 \
      > "$out.txt" 2> "$out.log"
    mv "$out.tmp.nnz" "$out"
  fi
  if [ ! -f "${out%.nnz}.onnx" ] || [ "$out" -nt "${out%.nnz}.onnx" ]; then
    "$NNZIP" decompress "$out" -o "${out%.nnz}.onnx"
  fi
  nnzip_rows+=(--nnzip "ft$ft$suffix:${r}x=$out=${out%.nnz}.onnx")
done

PYTHONDONTWRITEBYTECODE=1 OMP_NUM_THREADS=2 "$VENV/bin/python" tools/benches/anchors.py --model "$model" \
  --calibration "$cal" --eval "wallpapers=$eval" --eval "objects=$objects" --views "$VIEWS" \
  "${nnzip_rows[@]}" --work "$WORK" --json "$WORK/anchors.json" --plot "${PLOT:-$WORK/anchors.png}"
