"""Task-bank tasks far from every glyph expert, built from images that ship inside installed packages.

* `noisy_digits`: scikit-learn's real handwritten digits, shrunk, turned, moved and noised.
* `patches`: which region (quadrant) of which source image a random crop comes from; the sources
  are photographs (`PHOTO_SOURCES`: scikit-learn's sample images, matplotlib's Grace Hopper) or
  scientific rasters (`SCAN_SOURCES`: matplotlib's sample MRI slice and elevation models).

Nothing is downloaded. Builders take their difficulty knobs as keyword arguments (values in
`downstream.KNOBS`, docs/world.md).
"""

from __future__ import annotations

import functools
import gzip
import os
from collections.abc import Sequence

import numpy as np
from PIL import Image

from bit_experts.world import render
from bit_experts.world.task_data import TRAIN_IMAGES, Task, balanced_labels

PHOTO_SOURCES = ("china", "flower", "grace_hopper")
SCAN_SOURCES = ("mri_head", "fault_elevation", "topobathy")
QUADRANTS = ("top_left", "top_right", "bottom_left", "bottom_right")


def _sample_data(name: str) -> str:
    import matplotlib

    path = os.path.join(matplotlib.get_data_path(), "sample_data", name)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path!r} is missing: the task needs matplotlib's sample data")
    return path


def _unit(array: np.ndarray) -> np.ndarray:
    array = array.astype(np.float32)
    lo, hi = np.percentile(array, [1, 99])
    return np.clip((array - lo) / max(hi - lo, 1e-6), 0, 1)


@functools.cache
def source_image(name: str) -> np.ndarray:
    """Source `name` as a read-only float32 [H, W, 3] array in [0, 1] (rasters as grey)."""
    if name in ("china", "flower"):
        from sklearn.datasets import load_sample_image  # Bundled JPEGs; nothing is downloaded.

        image = load_sample_image(f"{name}.jpg").astype(np.float32) / 255
    elif name == "grace_hopper":
        with Image.open(_sample_data("grace_hopper.jpg")) as f:
            image = np.asarray(f.convert("RGB"), np.float32) / 255
    elif name == "mri_head":
        with gzip.open(_sample_data("s1045.ima.gz")) as f:
            raw = np.frombuffer(f.read(), np.uint16).reshape(256, 256)
        image = np.repeat(_unit(raw)[..., None], 3, axis=-1)
    elif name == "fault_elevation":
        with np.load(_sample_data("jacksboro_fault_dem.npz")) as f:
            image = np.repeat(_unit(f["elevation"])[..., None], 3, axis=-1)
    elif name == "topobathy":
        with np.load(_sample_data("topobathy.npz")) as f:
            image = np.repeat(_unit(f["topo"])[..., None], 3, axis=-1)
    else:
        raise ValueError(f"unknown source image {name!r}")
    image = np.ascontiguousarray(image, np.float32)
    image.setflags(write=False)
    return image


def patches(
    rng: np.random.Generator,
    image_size: int,
    test_images: int,
    *,
    name: str,
    sources: Sequence[str],
    description: str,
    crop: Sequence[float] = (0.3, 0.6),
    contrast: float = 0.3,
    noise: float = 0.05,
) -> Task:
    """Random crops labelled `<source>_<quadrant>`: 4 classes per source image.

    Knobs: `crop` (crop side as a fraction of the quadrant's shorter side, uniform in the range;
    the crop lies inside its quadrant), `contrast` (each image's gain is uniform in 1 +- contrast
    and its offset in +-contrast/2), `noise` (per-pixel Gaussian sigma, [0, 1] units).
    """
    # One 8-bit RGB PIL image per source: PIL crops and resizes it in one call per patch.
    images = [Image.fromarray((source_image(s) * 255 + 0.5).astype(np.uint8)) for s in sources]
    class_names = [f"{s}_{q}" for s in sources for q in QUADRANTS]

    def split(total):
        labels = balanced_labels(len(class_names), total)
        side = rng.uniform(*crop, total)
        corner = rng.random((total, 2))
        gain = 1 + contrast * (2 * rng.random(total) - 1)
        offset = contrast * (rng.random(total) - 0.5)
        out = np.empty((total, image_size, image_size, 3), np.float32)
        for i, label in enumerate(labels):
            src = images[label // 4]
            h, w = src.height // 2, src.width // 2
            y0, x0 = (label % 4 // 2) * h, (label % 2) * w
            s = side[i] * min(h, w)
            x, y = x0 + (w - s) * corner[i, 0], y0 + (h - s) * corner[i, 1]
            patch = src.resize(
                (image_size, image_size), Image.Resampling.BILINEAR, box=(x, y, x + s, y + s)
            )
            out[i] = np.asarray(patch, np.float32) / 255
        out = out * gain[:, None, None, None] + offset[:, None, None, None]
        out += noise * rng.standard_normal(out.shape, dtype=np.float32)
        return np.clip(out * 255 + 0.5, 0, 255).astype(np.uint8), labels

    train_images, train_labels = split(TRAIN_IMAGES)
    test_images_, test_labels = split(test_images)
    return Task(
        name=name,
        description=f"{description}; {len(class_names)} classes.",
        near_expert=None,
        class_names=class_names,
        train_images=train_images,
        train_labels=train_labels,
        test_images=test_images_,
        test_labels=test_labels,
    )


def noisy_digits(
    rng: np.random.Generator,
    image_size: int,
    test_images: int,
    *,
    scale: Sequence[float] = (0.45, 0.8),
    max_degrees: float = 30.0,
    contrast: Sequence[float] = (0.3, 1.0),
    noise: float = 0.2,
) -> Task:
    """Real scikit-learn digits, 100 per class for training and the other 797 for test, each drawn
    small, turned and moved on a grey background with noise (grey ink, either polarity).

    Knobs: `scale` (digit box side / image side), `max_degrees`, `contrast` (ink-to-background
    difference, uniform in the range), `noise` (per-pixel Gaussian sigma, [0, 1] units).
    """
    del test_images  # The real dataset fixes the test split, as for "digits".

    def make_draw(data):
        bank = render.MaskBank.from_masks(data.images / 16.0)
        return functools.partial(draw, bank)

    def draw(bank, indices):
        n = len(indices)
        sizes = rng.uniform(*scale, n)
        half = sizes * image_size / 2
        centre_x = half + (image_size - 2 * half) * rng.random(n)
        centre_y = half + (image_size - 2 * half) * rng.random(n)
        angle = np.deg2rad(rng.uniform(-max_degrees, max_degrees, n))
        poses = render.Poses(
            *(a[:, None] for a in (np.asarray(indices), sizes, angle, centre_x, centre_y))
        )
        ink = bank.coverage(poses, image_size)[..., None]
        background = rng.uniform(0.2, 0.8, n)[:, None, None, None]
        sign = np.where(rng.random(n) < 0.5, -1.0, 1.0)[:, None, None, None]
        strength = rng.uniform(*contrast, n)[:, None, None, None]
        image = background + sign * strength * ink
        image = image + noise * rng.standard_normal(image.shape, dtype=np.float32)
        grey = np.clip(image * 255 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(grey, 3, axis=-1)

    return digits_task(
        rng,
        "digits_noisy",
        "Real 8x8 handwritten digits from scikit-learn, drawn small, turned and "
        "moved in grey on grey with pixel noise; 10 classes.",
        make_draw,
    )


def digits_task(rng: np.random.Generator, name: str, description: str, make_draw) -> Task:
    """A task of scikit-learn's real 8x8 digits: TRAIN_IMAGES // 10 per class (drawn with `rng`)
    for training, every other image (797) for test.

    `make_draw(data)` (data: `sklearn.datasets.load_digits()`) returns `draw(indices)`, which gives
    the uint8 [len(indices), side, side, 3] images of those digits; it is called for the training
    indices, then for the test ones.
    """
    from sklearn.datasets import load_digits  # Bundled with scikit-learn; nothing is downloaded.

    data = load_digits()
    per_class = TRAIN_IMAGES // 10
    train_idx, test_idx = [], []
    for digit in range(10):
        idx = rng.permutation(np.flatnonzero(data.target == digit))
        train_idx.append(idx[:per_class])
        test_idx.append(idx[per_class:])
    train_idx, test_idx = np.concatenate(train_idx), np.concatenate(test_idx)
    draw = make_draw(data)
    return Task(
        name=name,
        description=description,
        near_expert=None,
        class_names=[str(d) for d in range(10)],
        train_images=draw(train_idx),
        train_labels=data.target[train_idx].astype(np.int64),
        test_images=draw(test_idx),
        test_labels=data.target[test_idx].astype(np.int64),
    )
