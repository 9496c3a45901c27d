#!/usr/bin/env python3
"""The second evaluation set of tools/benches/anchors.sh: photos of animals, objects, people and
scenes, unlike the wallpapers of scripts/photos.sh (which calibrate nnzip and onnxruntime's int8
model and give the first evaluation set). Every photo comes from a registry package, fetched by
anchors.sh; none is committed:

- Debian `jigzo-data` (GPL-2+): the full photo inside each of the puzzle game's `.pzl` files
  (bike, bird, blackberry, castle, clouds, gorilla, helicopter, horse, toboggan, train,
  windmill). Its penguin is left out: that one photo is CC-BY-NC-SA.
- PyPI `scikit-image` (its data folder): astronaut (NASA, public domain), chelsea the cat and the
  coffee cup (CC0), the rocket (SpaceX, public domain), a motorcycle (Middlebury stereo 2014).
- PyPI `scikit-learn`: china.jpg and flower.jpg (CC BY 2.0, `sklearn.datasets.load_sample_images`).
- PyPI `matplotlib`: grace_hopper.jpg (US Navy photo, public domain).

    python anchors_photos.py OUT_DIR JIGZO_ROOT SKIMAGE_WHEEL
    (JIGZO_ROOT: the jigzo-data .deb unpacked with dpkg -x; scikit-learn and matplotlib are
    imported from the running Python)
    python anchors_photos.py --disjoint EVAL_DIR... -- CALIBRATION_PHOTO...
    (fails when a calibration photo is also an evaluation photo, even re-encoded or resized)
"""
import io
import os
import sys
import zipfile
from pathlib import Path

from PIL import Image

JIGZO_PUZZLES = "usr/share/games/jigzo/puzzles/00_default"
# Non-commercial licence: kept out of a bench whose results anyone may reuse.
JIGZO_EXCLUDED = {"penguin-3x2.pzl"}
SKIMAGE_PHOTOS = ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png"]


def pzl_parts(blob):
    """The named parts of a jigzo `.pzl` file: after a four-line header (magic, version, name,
    URL), each part is its file name on a line, its size in bytes on the next, then the bytes."""
    rest = blob.split(b"\n", 4)[4]
    parts = {}
    while rest.strip():
        name, size, rest = rest.split(b"\n", 2)
        n = int(size)
        parts[name.decode()] = rest[:n]
        rest = rest[n:]
        if rest.startswith(b"\n"):
            rest = rest[1:]
    return parts


def jigzo_photo(path):
    """The whole photo of one puzzle. The large JPEG is a texture atlas: the photo sits at the
    rectangle of the map's `image X Y W H` line (with a one-pixel border), the cut pieces
    elsewhere."""
    parts = pzl_parts(path.read_bytes())
    stem = next(k[: -len(".map")] for k in parts if k.endswith(".map"))
    rect = next(line.split()[1:5] for line in parts[stem + ".map"].decode().splitlines()
                if line.startswith("image "))
    x, y, w, h = (int(v) for v in rect)
    atlas = Image.open(io.BytesIO(parts[stem + ".jpg"])).convert("RGB")
    return atlas.crop((x + 1, y + 1, x + w - 1, y + h - 1))


def package_file(module, relative):
    """A data file shipped inside an installed Python package."""
    return Path(__import__(module).__file__).parent / relative


def thumbnail_bits(path, side=16):
    """An average hash: the photo in grey at side x side, each pixel above or below the mean.
    The same picture re-encoded or resized gives (nearly) the same bits; different photos differ
    in about half of them."""
    grey = Image.open(path).convert("L").resize((side, side), Image.Resampling.BILINEAR)
    pixels = list(grey.tobytes())
    mean = sum(pixels) / len(pixels)
    return [p > mean for p in pixels]


def photo_files(folder):
    return sorted(p for p in Path(folder).rglob("*")
                  if p.suffix.lower() in (".jpg", ".jpeg", ".png") and p.is_file())


def same_pictures(calibration, evaluation, max_differing_bits=12):
    """Pairs (calibration photo, evaluation photo) whose average hashes differ in at most
    `max_differing_bits` of 256."""
    cal = [(p, thumbnail_bits(p)) for p in calibration]
    pairs = []
    for e in evaluation:
        e_bits = thumbnail_bits(e)
        pairs += [(c, e) for c, c_bits in cal
                  if sum(a != b for a, b in zip(c_bits, e_bits)) <= max_differing_bits]
    return pairs


def check_disjoint(eval_dirs, calibration):
    evaluation = [p for d in eval_dirs for p in photo_files(d)]
    pairs = same_pictures(calibration, evaluation)
    for c, e in pairs:
        print(f"anchors_photos.py: {c} is the same picture as the evaluation photo {e}", file=sys.stderr)
    if pairs:
        sys.exit(1)


def main():
    if sys.argv[1] == "--disjoint":
        split = sys.argv.index("--")
        check_disjoint(sys.argv[2:split], [Path(p) for p in sys.argv[split + 1:]])
        return
    out, jigzo_root, skimage_wheel = (Path(a) for a in sys.argv[1:4])
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for pzl in sorted((jigzo_root / JIGZO_PUZZLES).glob("*.pzl")):
        if pzl.name in JIGZO_EXCLUDED:
            continue
        name = f"jigzo-{pzl.stem.split('-')[0]}.png"
        jigzo_photo(pzl).save(out / name)
        written.append(name)
    with zipfile.ZipFile(skimage_wheel) as wheel:
        for photo in SKIMAGE_PHOTOS:
            name = f"skimage-{photo}"
            (out / name).write_bytes(wheel.read(f"skimage/data/{photo}"))
            written.append(name)
    for module, relative in [("sklearn", "datasets/images/china.jpg"),
                             ("sklearn", "datasets/images/flower.jpg"),
                             ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg")]:
        name = f"{module}-{os.path.basename(relative)}"
        (out / name).write_bytes(package_file(module, relative).read_bytes())
        written.append(name)
    print(f"anchors_photos.py: {len(written)} photos in {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
