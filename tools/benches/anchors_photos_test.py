#!/usr/bin/env python3
"""Tests of anchors_photos.py's check that calibration and evaluation photos are disjoint.
Run with the bench's venv (it has Pillow):

    target/bench/venv/bin/python tools/benches/anchors_photos_test.py
"""
import random
import shutil
import sys
import tempfile
import unittest
from pathlib import Path

from PIL import Image, ImageFilter

sys.path.insert(0, str(Path(__file__).parent))
import anchors_photos  # noqa: E402


def noise_photo(seed, size=(320, 240)):
    """A photo-like picture: random blobs, smoothed, different for every seed."""
    rng = random.Random(seed)
    img = Image.new("RGB", (16, 12))
    img.putdata([tuple(rng.randrange(256) for _ in range(3)) for _ in range(16 * 12)])
    return img.resize(size, Image.Resampling.BICUBIC).filter(ImageFilter.GaussianBlur(2))


class Disjoint(unittest.TestCase):
    def setUp(self):
        self.dir = Path(tempfile.mkdtemp(prefix="anchors-photos-test-"))

    def tearDown(self):
        shutil.rmtree(self.dir)

    def save(self, img, name):
        path = self.dir / name
        img.save(path)
        return path

    def test_the_same_picture_resized_and_re_encoded_is_found(self):
        photo = noise_photo(1)
        cal = self.save(photo, "cal.png")
        evaluation = self.save(photo.resize((200, 150)), "eval.jpg")
        self.assertEqual(anchors_photos.same_pictures([cal], [evaluation]), [(cal, evaluation)])

    def test_different_photos_are_not_matched(self):
        cal = [self.save(noise_photo(s), f"cal{s}.png") for s in range(5)]
        evaluation = [self.save(noise_photo(100 + s), f"eval{s}.png") for s in range(5)]
        self.assertEqual(anchors_photos.same_pictures(cal, evaluation), [])

    def test_check_disjoint_fails_on_a_shared_photo(self):
        eval_dir = self.dir / "evaluation"
        eval_dir.mkdir()
        shared = noise_photo(7)
        shared.save(eval_dir / "shared.png")
        noise_photo(8).save(eval_dir / "other.png")
        apart = self.save(noise_photo(9), "apart.png")
        anchors_photos.check_disjoint([eval_dir], [apart])
        with self.assertRaises(SystemExit):
            anchors_photos.check_disjoint([eval_dir], [apart, self.save(shared, "copy.jpg")])


if __name__ == "__main__":
    unittest.main()
