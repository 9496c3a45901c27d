#!/usr/bin/env bash
# Unlabelled photos for label-free compression (issue 6), from Debian's wallpaper packages: they
# are downloaded as .deb files (no installation, no root) and their JPEG/PNG images are sorted
# into two disjoint folders, one to calibrate with and one to measure agreement on:
#
#   target/photos/calibration/   two thirds of the photos
#   target/photos/evaluation/    the other third (never seen by `nnzip compress`)
#
#   bash scripts/photos.sh [OUT_DIR]          # default target/photos; prints the two paths
#   bash scripts/photos.sh --mixed [OUT_DIR]  # and a third: OUT_DIR/mixed-calibration
#
# --mixed adds a second photo source for calibration (issue 25): the calibration wallpapers plus
# 25 photos of objects, animals, people and street scenes from Debian's `opencv-doc` (the sample
# images of OpenCV's examples, Apache-2.0 AND BSD-3-Clause per its copyright file; Debian leaves
# out the non-free ones), so that the statistics and the sensitivity do not fit one kind of
# picture. None of them is in the evaluation wallpapers or in anchors.sh's objects set (jigzo,
# scikit-image, scikit-learn, matplotlib).
#
# The split is by position in the sorted list of file names (every third photo is for evaluation),
# so both halves mix landscapes, close-ups and abstract art; the colourings of one picture stay on
# one side (`family` below). Only the largest file of each wallpaper is kept (the packages ship
# one picture at several sizes), and previews (`screenshot.*`) are skipped. Idempotent: a second
# run with the folders present does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
mixed=0
if [ "${1:-}" = --mixed ]; then
  mixed=1
  shift
fi
out=${1:-target/photos}

# The OpenCV sample photos of --mixed: colour photos at least 256 pixels on their short side
# (logos, charts, renders, grey and calibration pictures left out).
opencv_examples=usr/share/doc/opencv-doc/examples
opencv_photos=(data/aero1.jpg data/aloeL.jpg data/apple.jpg data/baboon.jpg data/board.jpg
  data/building.jpg data/butterfly.jpg data/ela_original.jpg data/fruits.jpg data/graf1.png
  data/home.jpg data/left.jpg data/leuvenA.jpg data/licenseplate_motion.jpg data/messi5.jpg
  data/orange.jpg data/pca_test1.jpg data/rubberwhale1.png data/smarties.png
  data/squirrel_cls.jpg data/stuff.jpg alphamat/input_images/plant.jpg text/scenetext01.jpg
  text/scenetext04.jpg text/scenetext06.jpg)

# OUT_DIR/mixed-calibration: the calibration wallpapers and the OpenCV photos (opencv-*).
mixed_calibration() {
  local dir=$out/mixed-calibration
  # The marker sits beside the folder: a file inside would be listed as a skipped photo.
  [ -f "$dir.complete" ] && return 0
  local work
  work=$(mktemp -d)
  (cd "$work" && apt-get download opencv-doc >/dev/null 2>"$work/apt.log") || {
    cat "$work/apt.log" >&2
    echo "photos.sh: cannot download opencv-doc (is a Debian mirror reachable? try 'apt-get update')" >&2
    rm -rf "$work"
    exit 1
  }
  dpkg -x "$work"/opencv-doc_*.deb "$work/root"
  rm -rf "$dir.tmp"
  mkdir -p "$dir.tmp"
  cp "$out"/calibration/* "$dir.tmp/"
  local f
  for f in "${opencv_photos[@]}"; do
    cp "$work/root/$opencv_examples/$f" "$dir.tmp/opencv-$(basename "$f")"
  done
  rm -rf "$work" "$dir"
  mv "$dir.tmp" "$dir"
  touch "$dir.complete"
  echo "photos.sh: $(ls "$dir" | wc -l) mixed calibration photos in $dir" >&2
}

print_paths() {
  echo "$out/calibration"
  echo "$out/evaluation"
  if [ "$mixed" = 1 ]; then
    mixed_calibration
    echo "$out/mixed-calibration"
  fi
}

# The marker names the split: a folder made before colourings were grouped is made again.
split_version="split 2: colourings grouped"
if [ -f "$out/.complete" ] && [ "$(cat "$out/.complete")" = "$split_version" ]; then
  print_paths
  exit 0
fi

packages=(plasma-workspace-wallpapers mate-backgrounds ukui-wallpapers lomiri-wallpapers-16.04 lomiri-wallpapers-20.04)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get download "${packages[@]}" >/dev/null 2>"$work/apt.log") || {
  cat "$work/apt.log" >&2
  echo "photos.sh: cannot download ${packages[*]} (is a Debian mirror reachable? try 'apt-get update')" >&2
  exit 1
}
for deb in "$work"/*.deb; do dpkg -x "$deb" "$work/root"; done

# One file per picture: the largest non-empty JPEG/PNG of each wallpaper directory (Plasma keeps
# sizes under NAME/contents/images*/), every file elsewhere.
list=$work/list
find "$work/root" -type f -size +20k \( -iname '*.jpg' -o -iname '*.jpeg' -o -iname '*.png' \) \
  ! -name 'screenshot.*' -printf '%s\t%p\n' |
  awk -F'\t' '{
      key = $2
      if (key ~ /\/contents\/images/) sub(/\/contents\/.*/, "", key)
      else if (key ~ /_[0-9]+x[0-9]+\.(jpg|png)$/) sub(/_[0-9]+x[0-9]+\./, ".", key)
      if (!(key in size) || $1 > size[key]) { size[key] = $1; path[key] = $2 }
    }
    END { for (k in path) print k "\t" path[k] }' | sort > "$list"

# The packages ship some pictures in several colourings (MATE's aurora as Dark, Radioactive, Cold
# and Warm; its stripes as Light, Dark and plain): one picture, so one side of the split, or the
# evaluation would score photos the calibration has seen in another colour. `family NAME KEY`: a
# colouring's family, or KEY (the picture's own path) for a picture on its own.
family() {
  case $1 in
    Ubuntu-Mate-*-no-logo) echo ubuntu-mate-aurora ;;
    MATE-Stripes-* | Stripes) echo mate-stripes ;;
    *) echo "$2" ;;
  esac
}

rm -rf "$out.tmp"
mkdir -p "$out.tmp/calibration" "$out.tmp/evaluation"
# Every third picture is an evaluation one; a colouring follows its family's first picture (so
# the other pictures keep the sides they had before families were grouped).
n=0
declare -A side
while IFS=$'\t' read -r key path; do
  name=$(basename "$key")
  name=${name%.*}
  ext=${path##*.}
  f=$(family "$name" "$key")
  if [ -z "${side[$f]:-}" ]; then
    if [ $((n % 3)) -eq 2 ]; then side[$f]=evaluation; else side[$f]=calibration; fi
  fi
  cp "$path" "$out.tmp/${side[$f]}/$(printf '%03d' "$n")-$name.${ext,,}"
  n=$((n + 1))
done < "$list"
echo "$split_version" > "$out.tmp/.complete"
rm -rf "$out"
mv "$out.tmp" "$out"
echo "photos.sh: $(ls "$out/calibration" | wc -l) calibration and $(ls "$out/evaluation" | wc -l) evaluation photos" >&2
print_paths
