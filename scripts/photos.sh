#!/usr/bin/env bash
# Unlabelled photos for label-free compression (issue 6), from Debian's wallpaper packages: they
# are downloaded as .deb files (no installation, no root) and their JPEG/PNG images are sorted
# into two disjoint folders, one to calibrate with and one to measure agreement on:
#
#   target/photos/calibration/   two thirds of the photos
#   target/photos/evaluation/    the other third (never seen by `nnzip compress`)
#
#   bash scripts/photos.sh [OUT_DIR]       # default target/photos; prints the two paths
#
# The split is by position in the sorted list of file names (every third photo is for evaluation),
# so both halves mix landscapes, close-ups and abstract art. Only the largest file of each
# wallpaper is kept (the packages ship one picture at several sizes), and previews
# (`screenshot.*`) are skipped. Idempotent: a second run with the folders present does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-target/photos}
if [ -f "$out/.complete" ]; then
  echo "$out/calibration"
  echo "$out/evaluation"
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

rm -rf "$out.tmp"
mkdir -p "$out.tmp/calibration" "$out.tmp/evaluation"
n=0
while IFS=$'\t' read -r key path; do
  name=$(basename "$key")
  name=${name%.*}
  ext=${path##*.}
  if [ $((n % 3)) -eq 2 ]; then dir=evaluation; else dir=calibration; fi
  cp "$path" "$out.tmp/$dir/$(printf '%03d' "$n")-$name.${ext,,}"
  n=$((n + 1))
done < "$list"
touch "$out.tmp/.complete"
rm -rf "$out"
mv "$out.tmp" "$out"
echo "photos.sh: $(ls "$out/calibration" | wc -l) calibration and $(ls "$out/evaluation" | wc -l) evaluation photos" >&2
echo "$out/calibration"
echo "$out/evaluation"
