"""Pets: the installed TFDS builds oxford_iiit_pet 4.0.0 only, and orders each split by TFDS's
hash of the image file name, the key 3.2.0 used too (issue 25, item 5; evidence in docs/tasks.md,
"Pets: TFDS 4.x instead of VTAB's 3.x").

The dataset is built here from generated files in the Pets archive's layout, with the download
replaced by those folders (nothing is downloaded), by the installed TFDS's own builder and writer.
"""

import os
import types

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image
from tensorflow_datasets.core import hashing

from vtab_eval import tasks

# (file name stem, 1-based class id, species id) as in annotations/trainval.txt and test.txt.
TRAINVAL = [
    (f"{breed}_{i}", c, s)
    for c, breed, s in ((1, "Abyssinian", 1), (2, "beagle", 2))
    for i in range(101, 109)
]
TEST = [
    (f"{breed}_{i}", c, s)
    for c, breed, s in ((1, "Abyssinian", 1), (2, "beagle", 2))
    for i in range(201, 204)
]


def _pets_archive(root):
    """images/<stem>.jpg and annotations/{trainval,test}.txt, annotations/trimaps/<stem>.png."""
    os.makedirs(root / "images")
    os.makedirs(root / "annotations" / "trimaps")
    rng = np.random.default_rng(0)
    for name, rows in (("trainval.txt", TRAINVAL), ("test.txt", TEST)):
        lines = []
        for stem, class_id, species in rows:
            pixels = rng.integers(0, 255, (12, 10, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / "images" / f"{stem}.jpg")
            Image.fromarray(pixels[..., 0]).save(root / "annotations" / "trimaps" / f"{stem}.png")
            lines.append(f"{stem} {class_id} {species} 1\n")
        (root / "annotations" / name).write_text("".join(lines))


def test_tfds_cannot_build_the_3x_pets_vtab_pinned():
    with pytest.raises(
        AssertionError, match=r"cannot be loaded at version 3\.\*\.\*, only: 4\.0\.0"
    ):
        tfds.builder("oxford_iiit_pet:3.*.*", data_dir="/nonexistent")


def test_4x_orders_each_split_by_the_hash_of_the_file_name(tmp_path, monkeypatch):
    _pets_archive(tmp_path / "archive")
    paths = {"images": str(tmp_path / "archive"), "annotations": str(tmp_path / "archive")}
    downloads = types.SimpleNamespace(download_and_extract=lambda urls: paths, downloaded_size=0)
    data_dir = str(tmp_path / "tfds")
    builder = tfds.builder("oxford_iiit_pet", data_dir=data_dir)
    assert str(builder.version) == "4.0.0"  # what the tasks' "oxford_iiit_pet:4.*.*" resolves to
    monkeypatch.setattr(builder, "_make_download_manager", lambda **kwargs: downloads)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(try_download_gcs=False)
    )
    for split, rows in (("train", TRAINVAL), ("test", TEST)):
        ds = tfds.load("oxford_iiit_pet:4.*.*", split=split, data_dir=data_dir, download=False)
        names = [e["file_name"].decode() for e in ds.as_numpy_iterator()]
        # 3.2.0 yielded the same key, f"{stem}.jpg", from the same list file: same order.
        keys = [f"{stem}.jpg" for stem, _, _ in rows]
        assert names == sorted(keys, key=hashing.Hasher(split).hash_key)
        assert names != keys  # the order is the hash's, not the list file's
    # The registered task reads that order, which its slices (train[:800], ...) cut.
    labels_of = {f"{stem}.jpg": class_id - 1 for stem, class_id, _ in TRAINVAL}
    order = sorted(labels_of, key=hashing.Hasher("train").hash_key)
    loaded = tasks.get_task("oxford_iiit_pet").load("trainval", data_dir=data_dir)
    assert [int(e["label"]) for e in loaded.as_numpy_iterator()] == [labels_of[n] for n in order]
