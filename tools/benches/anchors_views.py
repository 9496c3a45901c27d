"""The fixed views of tools/benches/anchors.py: the preprocessing and random crops of
agreement_floor.py (EfficientNet-Lite0's: short side to 256, bicubic, centre 224, (pixel - 127)
/ 128), with a random generator seeded by the photo's position, so a photo's views do not depend
on how many views the photos before it have."""
from pathlib import Path

import numpy as np
from PIL import Image

PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png"}


def preprocess(img):
    w, h = img.size
    s = 256 / min(w, h)
    img = img.resize((max(1, round(w * s)), max(1, round(h * s))), Image.BICUBIC)
    w, h = img.size
    left, top = (w - 224) // 2, (h - 224) // 2
    img = img.crop((left, top, left + 224, top + 224))
    return ((np.asarray(img, dtype=np.float32) - 127) / 128).transpose(2, 0, 1)


def random_crop(img, rng):
    """A crop of 8–100% of the area (at least 224 a side), aspect 3/4–4/3, mirrored half the time."""
    w, h = img.size
    area = rng.uniform(0.08, 1) * w * h
    aspect = np.exp(rng.uniform(np.log(0.75), np.log(4 / 3)))
    cw = int(min(w, max(224, np.sqrt(area * aspect))))
    ch = int(min(h, max(224, np.sqrt(area / aspect))))
    x, y = rng.integers(0, w - cw + 1), rng.integers(0, h - ch + 1)
    crop = img.crop((x, y, x + cw, y + ch))
    return crop.transpose(Image.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else crop


def photo_views(folder, per_photo, seed=0):
    """(views as one float32 array [N, 3, 224, 224], the photo file names in order): per photo,
    the whole photo then per_photo - 1 random crops."""
    files = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in PHOTO_SUFFIXES)
    views = []
    for index, path in enumerate(files):
        img = Image.open(path).convert("RGB")
        img.thumbnail((1024, 1024))
        rng = np.random.default_rng([seed, index])
        views.append(preprocess(img))
        views.extend(preprocess(random_crop(img, rng)) for _ in range(per_photo - 1))
    return np.stack(views), [str(p.relative_to(folder)) for p in files]
