"""Vectorised glyph rendering: glyph masks warped onto coloured, textured backgrounds.

Randomness is drawn up front as per-image parameter arrays (`Poses`, `Scenery`) and the pixel
grain per chunk of a size fixed by the image size, so the pixels depend only on the arguments,
never on call order. Pixels are computed a chunk of images at a time with numpy gathers, which
is far faster than drawing each image with PIL.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from bit_experts.world import fonts

# Pixels per vectorised step (1024 images of 32 px); a function of the image size only, so the
# grain noise drawn per chunk never depends on how many images are rendered.
CHUNK_PIXELS = 1024 * 32 * 32
_MAX_MASK = 128  # Masks are drawn at the image size, at most this (larger images upsample).
_BLOB_GRID = 4  # Blob backgrounds interpolate a random grid of this many cells per side.

BACKGROUND_KINDS = ("flat", "gradient", "blobs")


@dataclasses.dataclass(frozen=True)
class Poses:
    """Where glyph instances go: arrays of shape [n, k] for n images with up to k glyphs each.

    Attributes:
      mask_ids: int64 row of `MaskBank.masks` to draw, -1 where the image has no such instance.
      scale: side of the glyph's box as a fraction of the image side.
      angle: rotation in radians.
      centre_x, centre_y: centre of the box in pixels.
    """

    mask_ids: np.ndarray
    scale: np.ndarray
    angle: np.ndarray
    centre_x: np.ndarray
    centre_y: np.ndarray

    def __getitem__(self, rows: slice) -> Poses:
        return Poses(*(getattr(self, f.name)[rows] for f in dataclasses.fields(self)))


@dataclasses.dataclass(frozen=True)
class Scenery:
    """Per-image colours and background, arrays with a leading axis of n images.

    Attributes:
      kind: int64 index into BACKGROUND_KINDS.
      colour_a, colour_b: float32 [n, 3] background colours in [0, 1] (b is unused when flat).
      ink: float32 [n, 3] glyph colour, on the other side of mid-grey from the background.
      direction: gradient direction in radians.
      blobs: float32 [n, 4, 4] the random grid a blob background is interpolated from.
      grain: standard deviation of the per-pixel noise added last.
    """

    kind: np.ndarray
    colour_a: np.ndarray
    colour_b: np.ndarray
    ink: np.ndarray
    direction: np.ndarray
    blobs: np.ndarray
    grain: np.ndarray

    def __getitem__(self, rows: slice) -> Scenery:
        return Scenery(*(getattr(self, f.name)[rows] for f in dataclasses.fields(self)))


def random_colours(rng: np.random.Generator, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Random colours whose channel mean lies in [lo, hi] (before clipping to [0, 1])."""
    n = len(lo)
    level = lo + (hi - lo) * rng.random(n)
    hue = rng.random((n, 3))
    chroma = 0.5 * rng.random(n)
    colour = level[:, None] + chroma[:, None] * (hue - hue.mean(axis=1, keepdims=True))
    return np.clip(colour, 0.0, 1.0).astype(np.float32)


def sample_scenery(rng: np.random.Generator, n: int) -> Scenery:
    """Draws colours and backgrounds for n images; half are dark-on-light, half light-on-dark."""
    light = rng.random(n) < 0.5
    bg_lo, bg_hi = np.where(light, 0.6, 0.05), np.where(light, 0.95, 0.4)
    ink_lo, ink_hi = np.where(light, 0.0, 0.7), np.where(light, 0.3, 1.0)
    return Scenery(
        kind=rng.integers(0, len(BACKGROUND_KINDS), n),
        colour_a=random_colours(rng, bg_lo, bg_hi),
        colour_b=random_colours(rng, bg_lo, bg_hi),
        ink=random_colours(rng, ink_lo, ink_hi),
        direction=(2 * np.pi * rng.random(n)).astype(np.float32),
        blobs=rng.random((n, _BLOB_GRID, _BLOB_GRID), dtype=np.float32),
        grain=(0.05 * rng.random(n)).astype(np.float32),
    )


def _interpolation_matrix(size: int, cells: int) -> np.ndarray:
    """[size, cells] weights that linearly interpolate `cells` samples onto `size` pixels."""
    pos = (np.arange(size) + 0.5) / size * (cells - 1)
    low = np.minimum(pos.astype(np.int64), cells - 2)
    frac = (pos - low).astype(np.float32)
    weights = np.zeros((size, cells), np.float32)
    weights[np.arange(size), low] = 1 - frac
    weights[np.arange(size), low + 1] = frac
    return weights


def paint_backgrounds(scenery: Scenery, size: int) -> np.ndarray:
    """The background of each image: float32 [n, size, size, 3] in [0, 1]."""
    grid = (np.arange(size, dtype=np.float32) + 0.5) / size - 0.5
    cos, sin = np.cos(scenery.direction), np.sin(scenery.direction)
    ramp = 0.5 + grid[None, None, :] * cos[:, None, None] + grid[None, :, None] * sin[:, None, None]
    weights = _interpolation_matrix(size, _BLOB_GRID)
    blobs = weights @ scenery.blobs @ weights.T  # [n, size, size]
    kind = scenery.kind[:, None, None]
    mix = np.where(kind == 1, np.clip(ramp, 0, 1), np.where(kind == 2, blobs, 0.0))
    mix = mix.astype(np.float32)[..., None]
    a, b = scenery.colour_a[:, None, None, :], scenery.colour_b[:, None, None, :]
    return a + (b - a) * mix


class MaskBank:
    """Glyph masks for a fixed list of (font, character) pairs, stacked for vectorised sampling."""

    def __init__(self, pairs: Sequence[tuple[str, str]], image_size: int):
        if not pairs:
            raise ValueError("MaskBank needs at least one (font, character) pair")
        self.pairs = list(pairs)
        self.mask_size = min(image_size, _MAX_MASK)
        masks = np.stack([fonts.glyph_mask(f, c, self.mask_size) for f, c in self.pairs])
        # A zero border makes samples that fall outside the glyph box read as no ink.
        self.masks = np.pad(masks, ((0, 0), (1, 1), (1, 1)))

    @classmethod
    def from_masks(cls, masks: np.ndarray) -> MaskBank:
        """A bank of given coverage masks, float [n, m, m] in [0, 1] (e.g. scanned digits)."""
        masks = np.asarray(masks, np.float32)
        if masks.ndim != 3 or masks.shape[1] != masks.shape[2] or not len(masks):
            raise ValueError(f"masks must be a non-empty [n, m, m] array, got {masks.shape}")
        bank = cls.__new__(cls)
        bank.pairs = []
        bank.mask_size = masks.shape[1]
        bank.masks = np.pad(masks, ((0, 0), (1, 1), (1, 1)))
        return bank

    def coverage(self, poses: Poses, image_size: int) -> np.ndarray:
        """Ink coverage float32 [n, size, size] in [0, 1] of all glyph instances of each image."""
        n, k = poses.mask_ids.shape
        out = np.zeros((n, image_size, image_size), np.float32)
        for slot in range(k):
            rows = np.flatnonzero(poses.mask_ids[:, slot] >= 0)
            if rows.size:
                pose = Poses(
                    *(getattr(poses, f.name)[rows, slot] for f in dataclasses.fields(poses))
                )
                out[rows] = np.maximum(out[rows], self._warp(pose, image_size))
        return out

    def _warp(self, pose: Poses, size: int) -> np.ndarray:
        # For each output pixel, the inverse rotation and scale give the mask point it shows.
        padded = self.masks.shape[1]
        m = self.mask_size
        grid = np.arange(size, dtype=np.float32) + 0.5
        dx = grid[None, None, :] - pose.centre_x.astype(np.float32)[:, None, None]
        dy = grid[None, :, None] - pose.centre_y.astype(np.float32)[:, None, None]
        k = (m / (pose.scale * size)).astype(np.float32)[:, None, None]
        cos = np.cos(pose.angle).astype(np.float32)[:, None, None]
        sin = np.sin(pose.angle).astype(np.float32)[:, None, None]
        # +m/2 recentres on the mask; +1 skips the border; -0.5 goes from pixel centres to indices.
        mx = np.clip((cos * dx + sin * dy) * k + (m / 2 + 0.5), 0, padded - 1.001)
        my = np.clip((cos * dy - sin * dx) * k + (m / 2 + 0.5), 0, padded - 1.001)
        x0, y0 = mx.astype(np.int64), my.astype(np.int64)
        fx, fy = mx - x0, my - y0
        flat = self.masks.reshape(-1)
        i00 = pose.mask_ids[:, None, None] * (padded * padded) + y0 * padded + x0
        top = flat[i00] * (1 - fx) + flat[i00 + 1] * fx
        bottom = flat[i00 + padded] * (1 - fx) + flat[i00 + padded + 1] * fx
        return top * (1 - fy) + bottom * fy


class GlyphSampler:
    """Masks of a list of character classes, each drawable in any of the fonts given for it."""

    def __init__(
        self, chars: Sequence[str], fonts_per_char: Sequence[Sequence[str]], image_size: int
    ):
        if len(chars) != len(fonts_per_char):
            raise ValueError(f"{len(chars)} characters but {len(fonts_per_char)} font lists")
        empty = [c for c, f in zip(chars, fonts_per_char, strict=True) if not f]
        if empty:
            raise ValueError(f"characters with no font to draw them in: {empty!r}")
        self.bank = MaskBank(
            [(f, c) for c, fs in zip(chars, fonts_per_char, strict=True) for f in fs], image_size
        )
        # Class c's masks are rows first[c] .. first[c] + count[c] - 1 of the bank.
        self._count = np.array([len(f) for f in fonts_per_char], dtype=np.int64)
        self._first = np.concatenate([[0], np.cumsum(self._count)[:-1]]).astype(np.int64)

    def mask_ids(self, rng: np.random.Generator, labels: np.ndarray) -> np.ndarray:
        """A bank row per label: its class drawn in one of its fonts, chosen uniformly."""
        choice = (rng.random(len(labels)) * self._count[labels]).astype(np.int64)
        return self._first[labels] + choice

    def font_of(self, mask_ids: np.ndarray) -> list[str]:
        """The font file of each bank row."""
        return [self.bank.pairs[i][0] for i in mask_ids]


def sample_poses(
    rng: np.random.Generator,
    mask_ids: np.ndarray,
    image_size: int,
    scale_range: tuple[float, float] = (0.55, 0.9),
    max_degrees: float = 15.0,
) -> Poses:
    """Random scale, rotation and position of one glyph per image, its box inside the image."""
    n = len(mask_ids)
    scale = rng.uniform(*scale_range, n)
    angle = np.deg2rad(rng.uniform(-max_degrees, max_degrees, n))
    half = scale * image_size / 2
    centre_x = half + (image_size - 2 * half) * rng.random(n)
    centre_y = half + (image_size - 2 * half) * rng.random(n)
    return Poses(*(a[:, None] for a in (np.asarray(mask_ids), scale, angle, centre_x, centre_y)))


def render(
    bank: MaskBank, poses: Poses, scenery: Scenery, image_size: int, grain_seed: Sequence[int]
) -> np.ndarray:
    """Renders the images described by `poses` and `scenery`: uint8 [n, size, size, 3].

    `grain_seed` (a sequence of ints) seeds the per-pixel noise, chunk by chunk.
    """
    n = len(poses.mask_ids)
    out = np.empty((n, image_size, image_size, 3), np.uint8)
    step = max(1, CHUNK_PIXELS // (image_size * image_size))
    for chunk, start in enumerate(range(0, n, step)):
        rows = slice(start, min(start + step, n))
        look = scenery[rows]
        ink = bank.coverage(poses[rows], image_size)[..., None]
        image = paint_backgrounds(look, image_size) * (1 - ink) + look.ink[:, None, None] * ink
        grain_rng = np.random.default_rng([*grain_seed, chunk])
        noise = grain_rng.standard_normal(image.shape, dtype=np.float32)
        image += noise * look.grain[:, None, None, None]
        out[rows] = np.clip(image * 255 + 0.5, 0, 255).astype(np.uint8)
    return out
