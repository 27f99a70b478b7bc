"""Downstream tasks in VTAB-1k form, written as image folders: the demo's four and the task bank.

Each task has exactly 1000 class-balanced training images (a loader splits them 800/200 into
`train800`/`val200`) and a separate test split, a VTAB-like `group` ("natural", "specialized",
"structured") and, where it was built close to one upstream expert domain, `near_expert`.

* `DEMO_TASKS`: the four tasks the offline demo uses (real digits, Greek small letters in held-out
  fonts, glyph counting, textures); their pixels never change for a given seed.
* `BANK`: the task bank for the selection audit, 12 tasks made hard enough not to saturate (near
  five different expert domains, three structured, four far from every expert).
* `TASKS`: every task `build_task` knows. Difficulty knobs of each task are in `KNOBS`.

The folder and JSON formats and the knobs are in docs/world.md.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import shutil

import numpy as np
from PIL import Image

from bit_experts import atomic_files
from bit_experts.world import fonts, glyph_tasks, image_tasks, inventory, render, textures
from bit_experts.world.task_data import GROUPS, TRAIN_IMAGES, Task, balanced_labels
from bit_experts.world.upstream import check_image_size, check_seed

TASK_FILE = "task.json"
INDEX_FILE = "tasks.json"
# Task name -> first SeedSequence word (0 is the upstream stream). Never renumber: it fixes pixels.
# New tasks are appended with the next number.
_STREAMS = {
    "digits": 1,
    "greek_lower_heldout_fonts": 2,
    "glyph_count": 3,
    "textures": 4,
    "greek_lower_heldout_fonts_cluttered": 5,
    "cyrillic_lower_heldout_fonts": 6,
    "latin_upper_heldout_fonts": 7,
    "digits_heldout_fonts": 8,
    "georgian_nuskhuri_heldout_chars": 9,
    "glyph_position": 10,
    "glyph_orientation": 11,
    "digits_noisy": 12,
    "textures_noisy": 13,
    "photo_patches": 14,
    "scan_patches": 15,
}
TASKS = tuple(_STREAMS)
DEMO_TASKS = ("digits", "greek_lower_heldout_fonts", "glyph_count", "textures")
BANK = (
    "greek_lower_heldout_fonts_cluttered",
    "cyrillic_lower_heldout_fonts",
    "latin_upper_heldout_fonts",
    "digits_heldout_fonts",
    "georgian_nuskhuri_heldout_chars",
    "glyph_count",
    "glyph_position",
    "glyph_orientation",
    "digits_noisy",
    "textures_noisy",
    "photo_patches",
    "scan_patches",
)
# VTAB-like group of every task: natural images and textures (SVHN, DTD), "specialized" for
# recognising one narrow domain's symbols or scientific rasters, "structured" for count, position
# and orientation (CLEVR, dSprites).
GROUP = {
    "digits": "natural",
    "greek_lower_heldout_fonts": "specialized",
    "glyph_count": "structured",
    "textures": "natural",
    "greek_lower_heldout_fonts_cluttered": "specialized",
    "cyrillic_lower_heldout_fonts": "specialized",
    "latin_upper_heldout_fonts": "specialized",
    "digits_heldout_fonts": "specialized",
    "georgian_nuskhuri_heldout_chars": "specialized",
    "glyph_position": "structured",
    "glyph_orientation": "structured",
    "digits_noisy": "natural",
    "textures_noisy": "natural",
    "photo_patches": "natural",
    "scan_patches": "specialized",
}
# Difficulty knobs per task, passed to its builder as keyword arguments (docs/world.md lists what
# each does). The demo's four tasks have none: their pixels are fixed. A task folder records its
# knobs in task.json, so folders made with other values are told apart, never silently reused.
_NEAR_CLUTTER = {"scale": (0.35, 0.6), "max_degrees": 30.0, "clutter": 2, "grain": 0.1}
KNOBS = {
    "greek_lower_heldout_fonts_cluttered": {**_NEAR_CLUTTER, "train_fonts": 2},
    "cyrillic_lower_heldout_fonts": {**_NEAR_CLUTTER, "train_fonts": 2},
    "latin_upper_heldout_fonts": {**_NEAR_CLUTTER, "train_fonts": 3},
    "digits_heldout_fonts": {**_NEAR_CLUTTER, "scale": (0.3, 0.5), "clutter": 3, "train_fonts": 3},
    "georgian_nuskhuri_heldout_chars": dict(_NEAR_CLUTTER),
    "glyph_position": {"scale": (0.2, 0.3), "cell_fill": 1.0, "max_degrees": 15.0, "clutter": 2},
    "glyph_orientation": {"bins": 8, "bin_fill": 1.0, "scale": (0.5, 0.8), "grain": 0.1},
    "digits_noisy": {
        "scale": (0.45, 0.8),
        "max_degrees": 30.0,
        "contrast": (0.4, 1.0),
        "noise": 0.12,
    },
    "textures_noisy": {"jitter_degrees": 22.5, "contrast": 0.35, "noise": 0.1},
    "photo_patches": {"crop": (0.3, 0.6), "contrast": 0.3, "noise": 0.05},
    "scan_patches": {"crop": (0.3, 0.6), "contrast": 0.3, "noise": 0.05},
}
_NEAR_GROUP = "greek_lower"
_LETTER_SCRIPTS = glyph_tasks.LETTER_SCRIPTS
_MAX_COUNT = 6  # glyph_count classes are 1 .. _MAX_COUNT glyphs, placed in distinct 3x3 cells.
_balanced_labels = balanced_labels

__all__ = ["BANK", "DEMO_TASKS", "GROUPS", "KNOBS", "TASKS", "TRAIN_IMAGES", "Task"]


def _digits(rng: np.random.Generator, image_size: int, test_images: int) -> Task:
    del test_images  # The real dataset fixes the test split: every image not used for training.

    def to_rgb(data, indices):
        # 0..16 ink levels -> dark ink on white, upsampled from 8x8.
        out = np.empty((len(indices), image_size, image_size, 3), np.uint8)
        for row, i in enumerate(indices):
            small = Image.fromarray((255 - data.images[i] * (255 / 16)).round().astype(np.uint8))
            big = np.asarray(small.resize((image_size, image_size), Image.Resampling.BILINEAR))
            out[row] = big[..., None]
        return out

    return image_tasks.digits_task(
        rng,
        "digits",
        "Real 8x8 handwritten digits from scikit-learn (UCI optdigits), upsampled; 10 classes.",
        lambda data: functools.partial(to_rgb, data),
    )


def _greek_heldout_fonts(rng: np.random.Generator, image_size: int, test_images: int) -> Task:
    classes = [g for g in inventory.glyphs(["greek"]) if g.group == _NEAR_GROUP]
    classes = [g for g in classes if any(fonts.has_glyph(f, g.char) for f in fonts.HELDOUT_FONTS)]
    held = [[f for f in fonts.HELDOUT_FONTS if fonts.has_glyph(f, g.char)] for g in classes]
    sampler = render.GlyphSampler([g.char for g in classes], held, image_size)
    stream = _STREAMS["greek_lower_heldout_fonts"]

    def split(total, part):
        labels = _balanced_labels(len(classes), total)
        poses = render.sample_poses(rng, sampler.mask_ids(rng, labels), image_size)
        scenery = render.sample_scenery(rng, total)
        return render.render(sampler.bank, poses, scenery, image_size, [stream, part]), labels

    train_images, train_labels = split(TRAIN_IMAGES, 0)
    test_images, test_labels = split(test_images, 1)
    return Task(
        name="greek_lower_heldout_fonts",
        description="Greek small letters (the upstream 'greek_lower' classes) drawn only in the "
        "STIX fonts that upstream never uses, same random pose and colours as upstream; "
        f"{len(classes)} classes.",
        near_expert=_NEAR_GROUP,
        class_names=[g.name for g in classes],
        train_images=train_images,
        train_labels=train_labels,
        test_images=test_images,
        test_labels=test_labels,
    )


def _glyph_count(rng: np.random.Generator, image_size: int, test_images: int) -> Task:
    # Letters only: thin symbols (box drawing, arrows) are hard to see at a third of the image.
    classes = inventory.glyphs(_LETTER_SCRIPTS)
    sampler = render.GlyphSampler([g.char for g in classes], [g.fonts for g in classes], image_size)
    cell = image_size / 3
    stream = _STREAMS["glyph_count"]

    def split(total, part):
        labels = _balanced_labels(_MAX_COUNT, total)  # Label c shows c + 1 glyphs.
        shape = (total, _MAX_COUNT)
        glyph = rng.integers(0, len(classes), shape)
        mask_ids = sampler.mask_ids(rng, glyph.reshape(-1)).reshape(shape)
        mask_ids[np.arange(_MAX_COUNT)[None, :] > labels[:, None]] = -1
        cells = np.argsort(rng.random((total, 9)), axis=1)[:, :_MAX_COUNT]
        scale = rng.uniform(0.24, 0.32, shape)
        slack = np.maximum(cell - scale * image_size, 0) / 2  # Jitter that stays in the cell.
        poses = render.Poses(
            mask_ids=mask_ids,
            scale=scale,
            angle=np.deg2rad(rng.uniform(-15, 15, shape)),
            centre_x=(cells % 3 + 0.5) * cell + slack * rng.uniform(-1, 1, shape),
            centre_y=(cells // 3 + 0.5) * cell + slack * rng.uniform(-1, 1, shape),
        )
        scenery = render.sample_scenery(rng, total)
        return render.render(sampler.bank, poses, scenery, image_size, [stream, part]), labels

    train_images, train_labels = split(TRAIN_IMAGES, 0)
    test_images, test_labels = split(test_images, 1)
    return Task(
        name="glyph_count",
        description=f"How many small upstream letters (1 to {_MAX_COUNT}) an image shows, each in "
        "its own cell of a 3x3 grid; a structured task like VTAB's counting tasks.",
        near_expert=None,
        class_names=[str(c) for c in range(1, _MAX_COUNT + 1)],
        train_images=train_images,
        train_labels=train_labels,
        test_images=test_images,
        test_labels=test_labels,
    )


def _textures(rng: np.random.Generator, image_size: int, test_images: int, **knobs) -> Task:
    # knobs: render_textures' jitter_degrees, contrast, noise (none for "textures").
    train_labels = _balanced_labels(len(textures.TEXTURE_CLASSES), TRAIN_IMAGES)
    test_labels = _balanced_labels(len(textures.TEXTURE_CLASSES), test_images)
    return Task(
        name="textures",
        description="Procedural two-colour textures (stripes in four directions, checkerboard, "
        f"dots, rings, pinwheel); no glyphs; {len(textures.TEXTURE_CLASSES)} classes.",
        near_expert=None,
        class_names=list(textures.TEXTURE_CLASSES),
        train_images=textures.render_textures(rng, train_labels, image_size, **knobs),
        train_labels=train_labels,
        test_images=textures.render_textures(rng, test_labels, image_size, **knobs),
        test_labels=test_labels,
    )


def _near(name: str, near_expert: str, description: str, classes) -> functools.partial:
    return functools.partial(
        glyph_tasks.recognition,
        name=name,
        stream=_STREAMS[name],
        near_expert=near_expert,
        description=description,
        classes=classes,
    )


def _heldout_fonts(name, group, what, extra_fonts=()):
    def build(rng, image_size, test_images, **knobs):
        classes = glyph_tasks.heldout_font_classes(group, extra_fonts)
        fonts_named = ", ".join(f.removesuffix(".ttf") for f in classes[0].fonts)
        text = (
            f"{what} (the upstream '{group}' classes) drawn in fonts upstream never uses "
            f"({fonts_named}), smaller and more turned than upstream, with symbol clutter"
        )
        return _near(name, group, text, classes)(rng, image_size, test_images, **knobs)

    return build


def _nuskhuri(rng, image_size, test_images, **knobs):
    classes = glyph_tasks.heldout_char_classes(glyph_tasks.NUSKHURI)
    text = (
        "Georgian Nuskhuri letters (U+2D00-U+2D25, characters upstream never shows, close to its "
        "Asomtavruli capitals) in the upstream DejaVu fonts, with symbol clutter"
    )
    return _near("georgian_nuskhuri_heldout_chars", "georgian", text, classes)(
        rng, image_size, test_images, **knobs
    )


def _textures_noisy(rng, image_size, test_images, **knobs):
    task = _textures(rng, image_size, test_images, **knobs)
    return dataclasses.replace(
        task,
        name="textures_noisy",
        description=task.description.replace("Procedural", "Low-contrast, noisy, freely turned"),
    )


def _patches(name, sources, description):
    return functools.partial(
        image_tasks.patches, name=name, sources=sources, description=description
    )


_BUILDERS = {
    "digits": _digits,
    "greek_lower_heldout_fonts": _greek_heldout_fonts,
    "glyph_count": _glyph_count,
    "textures": _textures,
    "greek_lower_heldout_fonts_cluttered": _heldout_fonts(
        "greek_lower_heldout_fonts_cluttered", "greek_lower", "Greek small letters"
    ),
    "cyrillic_lower_heldout_fonts": _heldout_fonts(
        "cyrillic_lower_heldout_fonts", "cyrillic_lower", "Cyrillic small letters"
    ),
    "latin_upper_heldout_fonts": _heldout_fonts(
        "latin_upper_heldout_fonts", "latin_upper", "Latin capitals", glyph_tasks.CM_TEXT_FONTS
    ),
    "digits_heldout_fonts": _heldout_fonts(
        "digits_heldout_fonts", "digits", "Digits 0-9", glyph_tasks.CM_TEXT_FONTS
    ),
    "georgian_nuskhuri_heldout_chars": _nuskhuri,
    "glyph_position": functools.partial(glyph_tasks.position, stream=_STREAMS["glyph_position"]),
    "glyph_orientation": functools.partial(
        glyph_tasks.orientation, stream=_STREAMS["glyph_orientation"]
    ),
    "digits_noisy": image_tasks.noisy_digits,
    "textures_noisy": _textures_noisy,
    "photo_patches": _patches(
        "photo_patches",
        image_tasks.PHOTO_SOURCES,
        "Which quadrant of which photograph (scikit-learn's china and flower, matplotlib's "
        "Grace Hopper) a random crop shows, with contrast jitter and noise",
    ),
    "scan_patches": _patches(
        "scan_patches",
        image_tasks.SCAN_SOURCES,
        "Which quadrant of which scientific raster (matplotlib's sample MRI slice, the "
        "Jacksboro fault and a topography/bathymetry elevation model, as grey) a random crop "
        "shows, with contrast jitter and noise",
    ),
}
assert set(_BUILDERS) == set(_STREAMS) == set(GROUP) and set(KNOBS) <= set(_STREAMS)
assert set(DEMO_TASKS) <= set(TASKS) and set(BANK) <= set(TASKS)
assert set(GROUP.values()) <= set(GROUPS)


def _check_test_images(test_images: int) -> int:
    if isinstance(test_images, bool) or not isinstance(test_images, int | np.integer):
        raise ValueError(f"test_images must be an int, got {test_images!r}")
    if test_images < 10:
        raise ValueError(f"test_images must be >= 10, got {test_images}")
    return int(test_images)


def build_task(name: str, seed: int = 0, image_size: int = 32, test_images: int = 500) -> Task:
    """Generates downstream task `name` in memory; the same arguments give identical arrays.

    `test_images` sets the test split size of the generated tasks; "digits" and "digits_noisy"
    always test on the 797 real images not used for training. Knobs come from `KNOBS[name]`.
    The returned task carries `group` (`GROUP[name]`). Raises ValueError for an unknown name.
    """
    if name not in _BUILDERS:
        raise ValueError(f"unknown downstream task {name!r}; expected one of {list(TASKS)}")
    seed, image_size = check_seed(seed), check_image_size(image_size)
    test_images = _check_test_images(test_images)
    rng = np.random.default_rng([_STREAMS[name], seed])
    task = _BUILDERS[name](rng, image_size, test_images, **KNOBS.get(name, {}))
    # Number classes in sorted-name order, as the image-folder loader does.
    order = np.argsort(task.class_names, kind="stable")
    new_id = np.empty_like(order)
    new_id[order] = np.arange(len(order))
    return dataclasses.replace(
        task,
        group=GROUP[name],
        class_names=[task.class_names[i] for i in order],
        train_labels=new_id[task.train_labels],
        test_labels=new_id[task.test_labels],
    )


def _metadata(task: Task, seed: int, image_size: int, test_images: int) -> dict:
    return {
        "name": task.name,
        "num_classes": len(task.class_names),
        "classes": task.class_names,
        "description": task.description,
        "near_expert": task.near_expert,
        "group": task.group,
        "knobs": _knobs_json(task.name),
        "train_count": len(task.train_labels),
        "test_count": len(task.test_labels),
        "image_size": image_size,
        "seed": seed,
        "requested_test_images": test_images,
    }


def _knobs_json(name: str) -> dict:
    """The task's knobs as JSON values (tuples become lists), as task.json records them."""
    return json.loads(json.dumps(KNOBS.get(name, {})))


def _write_json(path: str, payload) -> None:
    atomic_files.write_text(path, json.dumps(payload, indent=2, ensure_ascii=False) + "\n")


def _write_task_folder(task: Task, task_dir: str, metadata: dict) -> None:
    """Writes the task's images, then its task.json (the commit: readers need it).

    Locally into a temporary sibling folder, renamed into place. On a `tf.io.gfile` URL, where a
    folder rename is a copy, straight into `task_dir`, whose uncommitted leftover (a writer killed
    before task.json) goes first; each PNG is one write (docs/workdir.md, commit protocol).
    """
    if atomic_files.is_url(task_dir):
        atomic_files.rmtree(task_dir)
        _write_task_files(task, task_dir, metadata)
        return
    parent = os.path.dirname(task_dir)
    tmp = atomic_files.make_temp_dir(parent, prefix=f"{task.name}.tmp-")
    try:
        _write_task_files(task, tmp, metadata)
        os.replace(tmp, task_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _write_task_files(task: Task, folder: str, metadata: dict) -> None:
    remote = atomic_files.is_url(folder)
    for split, images, labels in (
        ("train", task.train_images, task.train_labels),
        ("test", task.test_images, task.test_labels),
    ):
        for class_name in task.class_names:
            atomic_files.makedirs(os.path.join(folder, split, class_name))
        for i, (image, label) in enumerate(zip(images, labels, strict=True)):
            path = os.path.join(folder, split, task.class_names[label], f"{i:05d}.png")
            png = Image.fromarray(image)
            if remote:
                atomic_files.write_atomic(
                    path, lambda f, png=png: png.save(f, format="PNG", compress_level=1)
                )
            else:
                png.save(path, format="PNG", compress_level=1)
    _write_json(os.path.join(folder, TASK_FILE), metadata)  # the commit: last


def _is_task(task_dir: str) -> bool:
    """Whether `task_dir` holds a task to check: locally any folder (task folders appear only by
    rename), on a URL only a committed one (with task.json)."""
    if atomic_files.is_url(task_dir):
        return atomic_files.isfile(os.path.join(task_dir, TASK_FILE))
    return os.path.exists(task_dir)


def read_task_metadata(task_dir: str) -> dict:
    """The metadata of a complete task folder (its task.json)."""
    path = os.path.join(task_dir, TASK_FILE)
    if not atomic_files.isfile(path):
        raise FileNotFoundError(f"{task_dir!r} is not a complete downstream task: no {TASK_FILE}")
    return json.loads(atomic_files.read_bytes(path))


def write_downstream_tasks(
    out_dir: str,
    seed: int = 0,
    image_size: int = 32,
    tasks: list[str] | tuple[str, ...] | None = None,
    test_images: int = 500,
) -> list[str]:
    """Writes downstream tasks as image folders under `out_dir` and returns their paths.

    Layout: `<out_dir>/<task>/{train,test}/<class>/<index>.png` plus `<task>/task.json`, and an
    index `<out_dir>/tasks.json` of every complete task there. Each task folder is written under a
    temporary name and renamed into place, so it is either complete or absent. `out_dir` may be a
    URL of a `tf.io.gfile` filesystem (`gs://...`): there a task folder is written in place and
    committed by its task.json, written last, and a folder without one is rewritten. A task that is
    already complete with the same seed, image size, test size and knobs is skipped, not
    rewritten; one made with other settings raises ValueError (use another `out_dir`).

    Args:
      out_dir: folder to write into (created if missing).
      seed: non-negative int; the same seed gives identical pixels.
      image_size: side of the square PNGs in pixels, in [8, 512].
      tasks: names from TASKS to write (e.g. BANK); None writes the demo's four, DEMO_TASKS.
      test_images: test split size of the generated tasks (the real digits always have 797).
    """
    seed, image_size = check_seed(seed), check_image_size(image_size)
    test_images = _check_test_images(test_images)
    names = list(DEMO_TASKS if tasks is None else tasks)
    if isinstance(tasks, str) or not names or any(n not in _BUILDERS for n in names):
        raise ValueError(f"tasks={tasks!r}: expected a non-empty list of names from {list(TASKS)}")
    out_dir = atomic_files.check_url(out_dir)  # file:// -> its local path
    atomic_files.makedirs(out_dir)
    task_dirs = []
    for name in names:
        task_dir = os.path.join(out_dir, name)
        wanted = {
            "seed": seed,
            "image_size": image_size,
            "requested_test_images": test_images,
            "knobs": _knobs_json(name),
        }
        if _is_task(task_dir):
            existing = read_task_metadata(task_dir)
            # Folders from before knobs existed have none, as the demo's tasks.
            have = {k: existing.get(k, {} if k == "knobs" else None) for k in wanted}
            if have != wanted:
                raise ValueError(
                    f"{task_dir!r} was written with {have}, not {wanted}; use another out_dir"
                )
        else:
            task = build_task(name, seed, image_size, test_images)
            try:
                _write_task_folder(task, task_dir, _metadata(task, seed, image_size, test_images))
            except OSError:
                if not atomic_files.isfile(os.path.join(task_dir, TASK_FILE)):
                    raise  # Not a concurrent writer finishing first: a real failure.
        task_dirs.append(task_dir)
    _write_index(out_dir)
    return task_dirs


def _write_index(out_dir: str) -> None:
    complete = [
        name
        for name in sorted(atomic_files.listdir(out_dir))
        if ".tmp-" not in name and atomic_files.isfile(os.path.join(out_dir, name, TASK_FILE))
    ]
    order = sorted(complete, key=lambda n: (TASKS.index(n) if n in TASKS else len(TASKS), n))
    entries = [dict(read_task_metadata(os.path.join(out_dir, n)), path=n) for n in order]
    _write_json(os.path.join(out_dir, INDEX_FILE), {"tasks": entries})
