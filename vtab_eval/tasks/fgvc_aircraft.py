"""FGVC-Aircraft read from the official archive on disk: TFDS has no builder for it.

The user extracts fgvc-aircraft-2013b.tar.gz (https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/)
into the data directory (`--data_dir`, else TFDS's: $TFDS_DATA_DIR or ~/tensorflow_datasets), so
that DATA_DIR/fgvc-aircraft-2013b/data/ holds images/<id>.jpg, variants.txt and
images_variant_{train,val,test}.txt, the archive's layout. Nothing is downloaded.

Labels are the variant level (100 classes): label i is line i of variants.txt; each split file
line is "<7-digit image id> <variant name>". Split strings read like TFDS's over three sources,
the official split files: "train" (images_variant_train.txt), "val" and "test"; "train+val" is
the official trainval. Each file's lines are put in a seeded order (numpy RandomState, seed 0) so
that a slice such as "train[:800]" is a sample of every class whatever the file's order. Every
image has a 20-px copyright banner at its bottom, which the archive's README says to remove: it is
cut off before the image reaches the model. The layout and splits: docs/tasks.md.
"""

from __future__ import annotations

import dataclasses
import os
import re

import numpy as np

from bit_experts import lazy_api
from vtab_eval.tasks import base, splits

tf = lazy_api.module("tensorflow")  # imported on first use: commands check flags first

ARCHIVE = "fgvc-aircraft-2013b"
HOMEPAGE = "https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/"
# The copyright banner at the bottom of every image (the archive's README).
BANNER_HEIGHT = 20
SOURCES = {
    "train": "images_variant_train.txt",
    "val": "images_variant_val.txt",
    "test": "images_variant_test.txt",
}
_PART = re.compile(r"(\w+)(?:\[(\d*):(\d*)\])?")


def default_data_dir() -> str:
    """TFDS's default data directory: $TFDS_DATA_DIR, else ~/tensorflow_datasets."""
    return os.environ.get("TFDS_DATA_DIR") or os.path.join(
        os.path.expanduser("~"), "tensorflow_datasets"
    )


def _read_lines(path: str) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\r\n") for line in f if line.strip()]


def _resolve(spec: str, sources: dict[str, list]) -> list:
    """The items of a split string ("train[:800]+val[:200]") over `sources` (name -> items)."""
    items = []
    for part in spec.split("+"):
        match = _PART.fullmatch(part)
        if not match or match[1] not in sources:
            raise ValueError(f"bad split string {spec!r}; expected parts NAME or NAME[a:b]")
        start, stop = (int(x) if x else None for x in match.groups()[1:])
        items += sources[match[1]][start:stop]
    return items


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class AircraftTask(base.Task):
    """FGVC-Aircraft at the variant level, from the archive under the data directory.

    Attributes:
      archive: the release folder the archive extracts to. seed: of the order of each split file.
    """

    archive: str = ARCHIVE
    seed: int = 0

    def data_root(self, data_dir: str | None) -> str:
        """DATA_DIR/fgvc-aircraft-2013b/data, with TFDS's default data directory for None."""
        return os.path.join(data_dir or default_data_dir(), self.archive, "data")

    def _missing(self, root: str, path: str, data_dir: str | None) -> FileNotFoundError:
        where = data_dir or f"{default_data_dir()} (TFDS's default data directory)"
        return FileNotFoundError(
            f"Task {self.name!r} reads the FGVC-Aircraft archive from disk (TFDS has no builder) "
            f"and {path} is missing: download {self.archive}.tar.gz (2.75 GB) from {HOMEPAGE} "
            f"and extract it into {where} so that {root} holds images/, variants.txt and "
            "images_variant_{train,val,test}.txt (--data_dir names that directory; nothing is "
            "downloaded at run time)"
        )

    def examples(self, split: str, data_dir: str | None = None) -> tuple[list[str], list[int]]:
        """(image paths, labels) of `split`, read from the split files; FileNotFoundError (one
        line: what to download, where to put it) for a missing file, ValueError for a bad line."""
        spec = self.split_string(split)
        root = self.data_root(data_dir)
        variants_path = os.path.join(root, "variants.txt")
        if not os.path.isfile(variants_path):
            raise self._missing(root, variants_path, data_dir)
        variants = _read_lines(variants_path)
        if len(variants) != self.num_classes or len(set(variants)) != len(variants):
            raise ValueError(
                f"{variants_path} lists {len(set(variants))} distinct variants in "
                f"{len(variants)} lines; {self.archive} has {self.num_classes}, one per line"
            )
        label_of = {name: i for i, name in enumerate(variants)}
        sources = {}
        for source in sorted({m[1] for m in map(_PART.fullmatch, spec.split("+")) if m}):
            if source not in SOURCES:
                raise ValueError(f"bad split string {spec!r}; sources are {list(SOURCES)}")
            sources[source] = self._read_split_file(root, SOURCES[source], label_of, data_dir)
        pairs = _resolve(spec, sources)
        return [p for p, _ in pairs], [label for _, label in pairs]

    def _read_split_file(self, root, name, label_of, data_dir) -> list[tuple[str, int]]:
        """(image path, label) of every line of one split file, in the seeded order."""
        path = os.path.join(root, name)
        if not os.path.isfile(path):
            raise self._missing(root, path, data_dir)
        pairs = []
        for number, line in enumerate(_read_lines(path), start=1):
            image_id, _, variant = line.partition(" ")
            if variant not in label_of:
                raise ValueError(
                    f"{path}, line {number}: {line!r} is not '<image id> <variant>' with a "
                    "variant of variants.txt"
                )
            pairs.append((os.path.join(root, "images", image_id + ".jpg"), label_of[variant]))
        missing = [p for p, _ in pairs if not os.path.isfile(p)]
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise self._missing(root, missing[0] + more, data_dir)
        order = np.random.RandomState(self.seed).permutation(len(pairs))
        return [pairs[i] for i in order]

    def _load_examples(self, split, data_dir, shuffle_files):
        del shuffle_files  # The order is the seeded one; fine-tuning shuffles.
        paths, labels = self.examples(split, data_dir)
        if not paths:
            raise ValueError(
                f"Split {split!r} of task {self.name!r} is empty: {self.splits[split]}"
            )
        ds = tf.data.Dataset.from_tensor_slices(
            {"path": paths, "label": np.asarray(labels, np.int64)}
        )
        return ds.map(_read_image, num_parallel_calls=tf.data.AUTOTUNE)

    def _identity(self) -> dict:
        """The common identity plus the name, the archive and the seed; the reading code counts
        through `version` (the data directory does not count, as for TFDS tasks)."""
        return {
            **super()._identity(),
            "name": self.name,
            "archive": self.archive,
            "seed": self.seed,
        }

    def to_json(self) -> dict:
        """The common description plus the archive's folder under the data directory."""
        return {**super().to_json(), "archive": f"{self.archive}/data", "homepage": HOMEPAGE}


def _read_image(example):
    """The JPEG of `example["path"]` as uint8 RGB without its bottom BANNER_HEIGHT rows."""
    image = tf.io.decode_jpeg(tf.io.read_file(example["path"]), channels=3)
    height = tf.shape(image)[0] - BANNER_HEIGHT
    tf.debugging.assert_positive(
        height, message=f"an FGVC-Aircraft image no taller than its {BANNER_HEIGHT}-px banner"
    )
    image = image[:height]
    image.set_shape([None, None, 3])
    return {"image": image, "label": example["label"]}


def make_task(name: str, *, version: str, **options) -> AircraftTask:
    """The registered variant-level task (100 classes; `options`: splits, metric, augmentation)."""
    return AircraftTask(
        name=name, version=version, num_classes=100, group="natural", suite="table3", **options
    )


# fgvc-aircraft-2013b, variant level (100 classes): train on the official trainval
# (images_variant_train.txt + images_variant_val.txt, 6667 images), test on
# images_variant_test.txt (3333); search on train (3334) -> val (3333); train800 = train[:800],
# val200 = val[:200]. Paper table 3 (vtab_eval.tasks.table3 has the other five).
TASKS = (
    make_task(
        "fgvc_aircraft",
        version="1.0.0",
        splits=splits.vtab_splits("train", "val", "val[:200]", "test", "train+val"),
    ),
)
