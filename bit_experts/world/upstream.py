"""The upstream dataset: one rendered glyph per image, labelled with its character (a leaf node)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from bit_experts.world import fonts, inventory, render

_UPSTREAM_STREAM = 0  # First SeedSequence word; downstream tasks use other values.


def check_image_size(image_size: int) -> int:
    """Returns `image_size` if it is an int in [8, 512], else raises ValueError."""
    if isinstance(image_size, bool) or not isinstance(image_size, int | np.integer):
        raise ValueError(f"image_size must be an int, got {image_size!r}")
    if not 8 <= image_size <= 512:
        raise ValueError(f"image_size must be in [8, 512] pixels, got {image_size}")
    return int(image_size)


def check_seed(seed: int) -> int:
    """Returns `seed` if it is a non-negative int, else raises ValueError."""
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    return int(seed)


@dataclasses.dataclass(frozen=True, eq=False)
class UpstreamWorld:
    """A generated upstream dataset and its label hierarchy.

    Attributes:
      images: uint8 [N, S, S, 3] RGB images.
      labels: int64 [N] leaf label ids, indices into `label_names`.
      label_names: the hierarchy node of each label id, a character (e.g. "latin_capital_letter_a").
      label_chars: the character each label id shows.
      hierarchy_edges: (parent, child) node-name pairs of the is-a DAG, leaves included.
      root: the root node's name.
      fonts: basenames of the font files the images were drawn with.
      font_ids: int64 [N] index into `fonts` of each image's font.
      seed: the seed the images were generated from.
    """

    images: np.ndarray
    labels: np.ndarray
    label_names: list[str]
    label_chars: list[str]
    hierarchy_edges: list[tuple[str, str]]
    root: str
    fonts: list[str]
    font_ids: np.ndarray
    seed: int

    @property
    def image_size(self) -> int:
        """Side of the square images in pixels."""
        return int(self.images.shape[1])


def generate_upstream(
    seed: int = 0,
    images_per_class: int = 50,
    image_size: int = 32,
    scripts: Sequence[str] | None = None,
) -> UpstreamWorld:
    """Renders the upstream dataset: `images_per_class` images of every character class.

    Each image shows one glyph in a random upstream font (among those that contain it), at a random
    scale, rotation and position, in a random colour over a flat, gradient or blob background with
    pixel grain. Images come in a seeded random order. The same arguments give identical arrays.

    Args:
      seed: non-negative int.
      images_per_class: images per character class, >= 1.
      image_size: side of the square images in pixels, in [8, 512].
      scripts: restrict to these scripts (see `inventory.SCRIPTS`); None for all of them.
    """
    seed = check_seed(seed)
    image_size = check_image_size(image_size)
    if isinstance(images_per_class, bool) or not isinstance(images_per_class, int | np.integer):
        raise ValueError(f"images_per_class must be an int, got {images_per_class!r}")
    if images_per_class < 1:
        raise ValueError(f"images_per_class must be >= 1, got {images_per_class}")
    classes = inventory.glyphs(scripts)
    used_fonts = [f for f in fonts.UPSTREAM_FONTS if any(f in g.fonts for g in classes)]
    sampler = render.GlyphSampler([g.char for g in classes], [g.fonts for g in classes], image_size)
    rng = np.random.default_rng([_UPSTREAM_STREAM, seed])
    labels = rng.permutation(np.repeat(np.arange(len(classes)), images_per_class))
    mask_ids = sampler.mask_ids(rng, labels)
    poses = render.sample_poses(rng, mask_ids, image_size)
    scenery = render.sample_scenery(rng, len(labels))
    images = render.render(
        sampler.bank, poses, scenery, image_size, grain_seed=[_UPSTREAM_STREAM, seed, 1]
    )

    font_index = {f: i for i, f in enumerate(used_fonts)}
    font_ids = np.array([font_index[f] for f in sampler.font_of(mask_ids)], dtype=np.int64)
    return UpstreamWorld(
        images=images,
        labels=labels.astype(np.int64),
        label_names=[g.name for g in classes],
        label_chars=[g.char for g in classes],
        hierarchy_edges=inventory.hierarchy_edges(classes),
        root=inventory.ROOT,
        fonts=used_fonts,
        font_ids=font_ids,
        seed=seed,
    )
