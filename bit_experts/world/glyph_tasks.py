"""Glyph tasks of the task bank: recognition near one expert domain, and structured tasks.

Recognition tasks draw one target glyph per image (its class) in fonts or characters upstream never
showed, optionally with smaller clutter glyphs from the upstream symbol groups. Structured tasks ask
where a glyph is (3x3 grid cell) or how it is turned (45-degree bins). Every builder takes its
difficulty knobs as keyword arguments (the values live in `downstream.KNOBS`, docs/world.md) and
returns a `task_data.Task` without `group`; `downstream.build_task` fills that in.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from bit_experts.world import fonts, inventory, render
from bit_experts.world.task_data import TRAIN_IMAGES, Task, balanced_labels

LETTER_SCRIPTS = ("latin", "greek", "cyrillic", "armenian", "georgian")
CLUTTER_SCRIPT = "symbols"  # Clutter glyphs: arrows, operators, box drawing, shapes.
# Held-out fonts with ordinary (OT1/ASCII) letters and digits: STIX and the Computer Modern text
# faces that ship with matplotlib (cmmi10 draws old-style digits; cmsy10/cmex10 are symbol fonts).
CM_TEXT_FONTS = ("cmr10.ttf", "cmb10.ttf", "cmss10.ttf", "cmti10.ttf", "cmtt10.ttf")
# Held-out characters near the "georgian" script: Nuskhuri (U+2D00-U+2D25), which upstream never
# shows, drawn in the upstream DejaVu faces that have it.
NUSKHURI = "".join(chr(c) for c in range(0x2D00, 0x2D26))
_LOOKALIKE_IOU = 0.9  # As in inventory: soft IoU above this in a 24-px box means the same shape.
_SYMMETRY_IOU = 0.7  # Orientation glyphs must differ from their 90/180/270-degree turns by this.


@dataclasses.dataclass(frozen=True)
class GlyphClass:
    """One class of a recognition task: its folder name, character and the fonts to draw it in."""

    name: str
    char: str
    fonts: tuple[str, ...]


def heldout_font_classes(group: str, extra_fonts: Sequence[str] = ()) -> list[GlyphClass]:
    """The upstream classes of inventory group `group`, each in the held-out fonts that have it.

    Held-out fonts are `fonts.HELDOUT_FONTS` plus `extra_fonts`; classes no such font has are
    dropped. Raises ValueError if `group` is unknown or no class is left.
    """
    held = (*fonts.HELDOUT_FONTS, *extra_fonts)
    out = []
    for g in inventory.glyphs():
        if g.group == group:
            have = tuple(f for f in held if fonts.has_glyph(f, g.char))
            if have:
                out.append(GlyphClass(g.name, g.char, have))
    if not out:
        raise ValueError(f"no class of upstream group {group!r} is in a held-out font")
    return out


def _soft_iou(mask: np.ndarray, others: np.ndarray) -> np.ndarray:
    return np.minimum(mask, others).sum(axis=(1, 2)) / np.maximum(mask, others).sum(axis=(1, 2))


def heldout_char_classes(chars: str) -> list[GlyphClass]:
    """Characters upstream never shows, in the upstream fonts that have them, look-alikes dropped.

    A character is dropped when its DejaVu Sans mask (24-px box) has soft IoU > 0.9 with an earlier
    kept one, as the upstream inventory does.
    """
    upstream = {g.char for g in inventory.glyphs()}
    out, kept = [], []
    for char in chars:
        have = tuple(f for f in fonts.UPSTREAM_FONTS if fonts.has_glyph(f, char))
        if char in upstream or "DejaVuSans.ttf" not in have:
            continue
        mask = fonts.glyph_mask("DejaVuSans.ttf", char, 24)
        if kept and _soft_iou(mask, np.stack(kept)).max() > _LOOKALIKE_IOU:
            continue
        kept.append(mask)
        out.append(GlyphClass(inventory.node_name(char), char, have))
    return out


def _clutter() -> list[GlyphClass]:
    return [GlyphClass(g.name, g.char, g.fonts) for g in inventory.glyphs([CLUTTER_SCRIPT])]


def _scenery(rng: np.random.Generator, n: int, grain: float) -> render.Scenery:
    scenery = render.sample_scenery(rng, n)
    # Per-image grain sigma uniform in [0, grain] (upstream: [0, 0.05]).
    return dataclasses.replace(scenery, grain=(grain * rng.random(n)).astype(np.float32))


def _inside(rng, scale, image_size):
    """Box centres that keep a glyph box of side scale * image_size inside the image."""
    half = scale * image_size / 2
    return (
        half + (image_size - 2 * half) * rng.random(scale.shape),
        half + (image_size - 2 * half) * rng.random(scale.shape),
    )


def recognition(
    rng: np.random.Generator,
    image_size: int,
    test_images: int,
    *,
    name: str,
    stream: int,
    near_expert: str,
    description: str,
    classes: Sequence[GlyphClass],
    scale: Sequence[float] = (0.55, 0.9),
    max_degrees: float = 15.0,
    clutter: int = 0,
    clutter_scale: Sequence[float] = (0.2, 0.35),
    train_fonts: int | None = None,
    grain: float = 0.05,
) -> Task:
    """One target glyph per image, labelled with its class, plus 0..`clutter` clutter glyphs.

    Knobs: `scale` (target box side / image side, uniform in the range), `max_degrees` (target
    rotation), `clutter` (most clutter glyphs per image, uniform count, any rotation, from the
    upstream symbol groups, drawn in upstream fonts), `clutter_scale`, `train_fonts` (training
    images use only the first k fonts of each class, test images all of them; None: all),
    `grain` (largest per-pixel noise sigma).
    """
    pool = _clutter()
    n_cls = len(classes)

    def sampler(limit):
        per = [c.fonts[:limit] if limit else c.fonts for c in classes] + [c.fonts for c in pool]
        return render.GlyphSampler([c.char for c in [*classes, *pool]], per, image_size)

    def split(total, part, glyphs):
        labels = balanced_labels(n_cls, total)
        k = 1 + clutter
        mask_ids = np.full((total, k), -1, np.int64)
        mask_ids[:, 0] = glyphs.mask_ids(rng, labels)
        count = rng.integers(0, clutter + 1, total)
        which = n_cls + rng.integers(0, len(pool), (total, clutter))
        extra = glyphs.mask_ids(rng, which.reshape(-1)).reshape(total, clutter)
        extra[np.arange(clutter)[None, :] >= count[:, None]] = -1
        mask_ids[:, 1:] = extra
        sizes = np.concatenate(
            [rng.uniform(*scale, (total, 1)), rng.uniform(*clutter_scale, (total, clutter))], 1
        )
        degrees = np.concatenate(
            [
                rng.uniform(-max_degrees, max_degrees, (total, 1)),
                rng.uniform(-180, 180, (total, k - 1)),
            ],
            1,
        )
        centre_x, centre_y = _inside(rng, sizes, image_size)
        poses = render.Poses(mask_ids, sizes, np.deg2rad(degrees), centre_x, centre_y)
        scenery = _scenery(rng, total, grain)
        return render.render(glyphs.bank, poses, scenery, image_size, [stream, part]), labels

    all_fonts = sampler(None)
    train_images, train_labels = split(
        TRAIN_IMAGES, 0, sampler(train_fonts) if train_fonts else all_fonts
    )
    test_images_, test_labels = split(test_images, 1, all_fonts)
    return Task(
        name=name,
        description=f"{description}; {n_cls} classes.",
        near_expert=near_expert,
        class_names=[c.name for c in classes],
        train_images=train_images,
        train_labels=train_labels,
        test_images=test_images_,
        test_labels=test_labels,
    )


def _letters() -> list[GlyphClass]:
    return [GlyphClass(g.name, g.char, g.fonts) for g in inventory.glyphs(LETTER_SCRIPTS)]


def position(
    rng: np.random.Generator,
    image_size: int,
    test_images: int,
    *,
    stream: int,
    scale: Sequence[float] = (0.2, 0.3),
    cell_fill: float = 1.0,
    max_degrees: float = 15.0,
    clutter: int = 0,
    grain: float = 0.05,
) -> Task:
    """Which cell of a 3x3 grid holds the centre of the one upstream letter (9 classes).

    Knobs: `scale` (letter box side / image side), `cell_fill` (the centre is uniform over this
    share of the cell's side around its middle; 1.0: the whole cell, so letters straddle cell
    borders), `max_degrees`, `clutter` (0..k symbol glyphs of the same size anywhere: they make
    the task "where is the letter", not "where is ink"), `grain`.
    """
    letters, pool = _letters(), _clutter()
    glyphs = render.GlyphSampler(
        [c.char for c in [*letters, *pool]], [c.fonts for c in [*letters, *pool]], image_size
    )
    cell = image_size / 3

    def split(total, part):
        labels = balanced_labels(9, total)
        k = 1 + clutter
        which = np.concatenate(
            [
                rng.integers(0, len(letters), (total, 1)),
                len(letters) + rng.integers(0, len(pool), (total, clutter)),
            ],
            1,
        )
        mask_ids = glyphs.mask_ids(rng, which.reshape(-1)).reshape(total, k)
        count = rng.integers(0, clutter + 1, total)
        mask_ids[:, 1:][np.arange(clutter)[None, :] >= count[:, None]] = -1
        sizes = rng.uniform(*scale, (total, k))
        centre_x, centre_y = _inside(rng, sizes, image_size)
        offset = cell * cell_fill * (rng.random((total, 2)) - 0.5)
        centre_x[:, 0] = (labels % 3 + 0.5) * cell + offset[:, 0]
        centre_y[:, 0] = (labels // 3 + 0.5) * cell + offset[:, 1]
        degrees = rng.uniform(-max_degrees, max_degrees, (total, k))
        poses = render.Poses(mask_ids, sizes, np.deg2rad(degrees), centre_x, centre_y)
        scenery = _scenery(rng, total, grain)
        return render.render(glyphs.bank, poses, scenery, image_size, [stream, part]), labels

    train_images, train_labels = split(TRAIN_IMAGES, 0)
    test_images_, test_labels = split(test_images, 1)
    return Task(
        name="glyph_position",
        description="Which cell of a 3x3 grid (row r, column c) holds the centre of the one "
        "upstream letter; a structured task like VTAB's dSprites location; 9 classes.",
        near_expert=None,
        class_names=[f"row{r}_col{c}" for r in range(3) for c in range(3)],
        train_images=train_images,
        train_labels=train_labels,
        test_images=test_images_,
        test_labels=test_labels,
    )


def asymmetric_letters() -> list[GlyphClass]:
    """Upstream Latin, digits and Greek glyphs whose 90/180/270-degree turns look different.

    A glyph is kept when its DejaVu Sans mask (24-px box) has soft IoU below 0.7 with each of its
    three turns, so the turn of a drawn glyph is defined.
    """
    out = []
    for g in inventory.glyphs(["latin", "numerals", "greek"]):
        if g.group not in ("latin_upper", "latin_lower", "digits", "greek_lower", "greek_upper"):
            continue
        mask = fonts.glyph_mask("DejaVuSans.ttf", g.char, 24)
        turns = np.stack([np.rot90(mask, k) for k in (1, 2, 3)])
        if _soft_iou(mask, turns).max() < _SYMMETRY_IOU:
            out.append(GlyphClass(g.name, g.char, g.fonts))
    return out


def orientation(
    rng: np.random.Generator,
    image_size: int,
    test_images: int,
    *,
    stream: int,
    bins: int = 8,
    bin_fill: float = 1.0,
    scale: Sequence[float] = (0.5, 0.8),
    grain: float = 0.05,
) -> Task:
    """How far one upstream glyph is turned, in `bins` equal bins over 360 degrees.

    Class b holds turns of b * 360/bins degrees counter-clockwise, plus a uniform offset within
    +-`bin_fill` / 2 of a bin (1.0: the whole bin, so neighbouring classes touch). Glyphs are
    `asymmetric_letters()`. Knobs: `bins`, `bin_fill`, `scale`, `grain`.
    """
    letters = asymmetric_letters()
    glyphs = render.GlyphSampler([c.char for c in letters], [c.fonts for c in letters], image_size)
    width = 360.0 / bins

    def split(total, part):
        labels = balanced_labels(bins, total)
        mask_ids = glyphs.mask_ids(rng, rng.integers(0, len(letters), total))
        sizes = rng.uniform(*scale, total)
        degrees = labels * width + width * bin_fill * (rng.random(total) - 0.5)
        # The image's y axis points down, so a negative render angle turns counter-clockwise.
        centre_x, centre_y = _inside(rng, sizes, image_size)
        poses = render.Poses(
            *(a[:, None] for a in (mask_ids, sizes, -np.deg2rad(degrees), centre_x, centre_y))
        )
        scenery = _scenery(rng, total, grain)
        return render.render(glyphs.bank, poses, scenery, image_size, [stream, part]), labels

    train_images, train_labels = split(TRAIN_IMAGES, 0)
    test_images_, test_labels = split(test_images, 1)
    return Task(
        name="glyph_orientation",
        description=f"How far one upright-asymmetric upstream letter or digit is turned, in "
        f"{bins} bins of {width:g} degrees; a structured task like VTAB's dSprites orientation; "
        f"{bins} classes.",
        near_expert=None,
        class_names=[f"{round(b * width):03d}" for b in range(bins)],
        train_images=train_images,
        train_labels=train_labels,
        test_images=test_images_,
        test_labels=test_labels,
    )
