"""On-disk cache of expert features for a task's images, shared by workers.

One entry per (module identity, task fingerprint, split, resolution, precision): `<key>.npz` holds `features` (float32
[N, d]) and `labels` (int64 [N]); `<key>.json` beside it records where they came from. The root may
be a local folder or a URL of any `tf.io.gfile` filesystem (`gs://...`). Commit protocol
(docs/workdir.md): the .npz is written first and the .json sidecar last, and an entry counts only
once its sidecar is there and its .npz reads back whole with the sidecar's shape; so workers can
fill one cache concurrently, and a killed run (or a rerun after a failure between the two writes)
recomputes that entry and nothing else. Locally each file is also renamed into place
(`bit_experts.atomic_files`). docs/selection.md describes the layout.
"""

import datetime
import hashlib
import io
import json
import os
import re
import warnings
import zipfile

import numpy as np

from bit_experts import atomic_files

_KEY_PATTERN = re.compile(r"^[A-Za-z0-9_-]+$")
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9_-]+")


class CorruptCacheEntryWarning(UserWarning):
    """A cache file could not be read; the entry is treated as missing and recomputed."""


def _slug(text: str, limit: int) -> str:
    return _UNSAFE_CHARS.sub("-", text).strip("-")[:limit] or "x"


_atomic_write = atomic_files.write_atomic


class FeatureCache:
    """Features of task images under each expert, stored in `root_dir` (created on first put)."""

    def __init__(self, root_dir: str):
        if not root_dir:
            raise ValueError("FeatureCache needs a root directory; got an empty path")
        self.root_dir = atomic_files.check_url(root_dir)  # local (file:// too) or a gfile URL

    @staticmethod
    def key(
        module_identity: str,
        task_fingerprint: str,
        split: str,
        resolution: int,
        *,
        task_name: str | None = None,
        precision: str = "float32",
    ) -> str:
        """The entry name for one module's features of one task split at one resolution and
        precision.

        Args:
          module_identity: what identifies the module's weights and code (`embed.module_identity`:
            today the module checksum).
          task_fingerprint: `Task.fingerprint()`: the task's content, so a folder whose images
            changed gets a new entry instead of stale features.
          split: the task split.
          resolution: the image side the module saw.
          task_name: only for readability of the name (default: the fingerprint's start).
          precision: the arithmetic of the forward pass (`embed.PRECISIONS`).

        Readable (`<task>__<split>__<resolution>px[__<precision>]__<module prefix>__<digest>`),
        safe as a file name, and unique: the digest covers the exact, unshortened identities,
        split, resolution and (other than float32) precision (not the task name: equal content is
        equal features). float32 keys are those of caches written before precision existed.
        """
        for name, value in (
            ("module_identity", module_identity),
            ("task_fingerprint", task_fingerprint),
            ("split", split),
        ):
            if not isinstance(value, str) or not value:
                raise ValueError(f"{name} must be a non-empty string; got {value!r}")
        if isinstance(resolution, bool) or not isinstance(resolution, (int, np.integer)):
            raise ValueError(f"resolution must be a positive integer; got {resolution!r}")
        if resolution < 1:
            raise ValueError(f"resolution must be a positive integer; got {resolution}")
        if not isinstance(precision, str) or not precision:
            raise ValueError(f"precision must be a non-empty string; got {precision!r}")
        fields = [module_identity, task_fingerprint, split, int(resolution)]
        fields += [] if precision == "float32" else [precision]
        digest = hashlib.sha256(json.dumps(fields).encode("utf-8")).hexdigest()[:16]
        readable = task_name or task_fingerprint[:12]
        parts = [_slug(readable, 48), _slug(split, 32), f"{int(resolution)}px"]
        parts += [] if precision == "float32" else [_slug(precision, 24)]
        return "__".join(parts + [_slug(module_identity, 12), digest])

    def _path(self, key: str, extension: str) -> str:
        if not isinstance(key, str) or not _KEY_PATTERN.match(key):
            raise ValueError(
                f"cache key must contain only letters, digits, '_' and '-' (see "
                f"FeatureCache.key); got {key!r}"
            )
        return os.path.join(self.root_dir, key + extension)

    def get(self, key: str):
        """Returns (features float32 [N, d], labels int64 [N]), or None if absent, uncommitted
        or unreadable.

        An entry without its .json sidecar is not committed (its writer stopped between the two
        writes) and counts as absent, silently. An unreadable entry (truncated, corrupted, wrong
        contents, a shape other than its sidecar's) triggers a CorruptCacheEntryWarning naming the
        file, and is then treated as missing.
        """
        path = self._path(key, ".npz")
        sidecar = self.metadata(key)
        if sidecar is None or not atomic_files.exists(path):
            return None
        try:
            loaded = np.load(io.BytesIO(atomic_files.read_bytes(path)), allow_pickle=False)
            if not isinstance(loaded, np.lib.npyio.NpzFile):
                raise ValueError("not an .npz archive")
            with loaded as archive:
                features = archive["features"]
                labels = archive["labels"]
            if features.dtype != np.float32 or features.ndim != 2:
                raise ValueError(f"features are {features.dtype} {features.shape}, not float32 2-D")
            if labels.dtype != np.int64 or labels.shape != features.shape[:1]:
                raise ValueError(
                    f"labels are {labels.dtype} {labels.shape}, not int64 [{features.shape[0]}]"
                )
            if "shape" in sidecar and list(sidecar["shape"]) != list(features.shape):
                raise ValueError(
                    f"features have shape {list(features.shape)}, its sidecar says "
                    f"{sidecar['shape']}"
                )
        except (OSError, ValueError, TypeError, EOFError, KeyError, zipfile.BadZipFile) as err:
            warnings.warn(
                f"feature cache entry {path} is unreadable ({err}); treating it as missing",
                CorruptCacheEntryWarning,
                stacklevel=2,
            )
            return None
        return features, labels

    def contains(self, key: str) -> bool:
        """True if `key` has a readable entry (an unreadable one warns and counts as absent)."""
        return self.get(key) is not None

    def metadata(self, key: str):
        """The entry's JSON sidecar as a dict, or None if it is absent or unreadable."""
        path = self._path(key, ".json")
        if atomic_files.is_url(path) and not atomic_files.exists(path):
            return None  # gfile raises NotFoundError, not FileNotFoundError
        try:
            with atomic_files.open_file(path, "rb") as handle:
                sidecar = json.loads(handle.read().decode("utf-8"))
            if not isinstance(sidecar, dict):
                raise ValueError("not a JSON object")
            return sidecar
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as err:
            warnings.warn(
                f"feature cache sidecar {path} is unreadable ({err})",
                CorruptCacheEntryWarning,
                stacklevel=2,
            )
            return None

    def put(self, key: str, features, labels, metadata: dict) -> None:
        """Stores one entry: the .npz first, then its .json sidecar, which commits it (`get`).

        Args:
          key: from `FeatureCache.key`.
          features: [N, d] array, stored as float32.
          labels: [N] integer array, stored as int64.
          metadata: JSON-serialisable dict; by convention handle, module_identity, task,
            task_fingerprint, split and resolution. `key`, `shape` and `created` (UTC, ISO 8601) are added.
        """
        npz_path = self._path(key, ".npz")
        features = np.asarray(features)
        labels = np.asarray(labels)
        if features.ndim != 2:
            raise ValueError(f"features must be a 2-D [N, d] array; got shape {features.shape}")
        if labels.shape != features.shape[:1]:
            raise ValueError(
                f"labels must have shape ({features.shape[0]},) to match features; "
                f"got {labels.shape}"
            )
        if not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"labels must be integers; got dtype {labels.dtype}")
        if not isinstance(metadata, dict):
            raise ValueError(f"metadata must be a dict; got {type(metadata).__name__}")
        sidecar = dict(metadata)
        sidecar.update(
            key=key,
            shape=list(features.shape),
            created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        )
        try:
            sidecar_text = json.dumps(sidecar, indent=2, sort_keys=True) + "\n"
        except (TypeError, ValueError) as err:
            raise ValueError(f"metadata must be JSON-serialisable: {err}") from err
        atomic_files.makedirs(self.root_dir)
        arrays = dict(features=features.astype(np.float32), labels=labels.astype(np.int64))
        _atomic_write(npz_path, lambda handle: np.savez(handle, **arrays))
        _atomic_write(
            self._path(key, ".json"), lambda handle: handle.write(sidecar_text.encode("utf-8"))
        )


def shard_assignment(items: list[str], num_shards: int, shard_index: int) -> list[str]:
    """The items that worker `shard_index` of `num_shards` handles, in their original order.

    Assignment hashes each item with SHA-256 (stable across processes and machines, unlike
    Python's salted hash()), so every item lands in exactly one shard and keeps its shard when
    other items are added or removed.
    """
    for name, value in (("num_shards", num_shards), ("shard_index", shard_index)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ValueError(f"{name} must be an integer; got {value!r}")
    if num_shards < 1:
        raise ValueError(f"num_shards must be at least 1; got {num_shards}")
    if not 0 <= shard_index < num_shards:
        raise ValueError(f"shard_index must be in [0, {num_shards}); got {shard_index}")
    selected = []
    for item in items:
        if not isinstance(item, str):
            raise ValueError(f"items to shard must be strings; got {item!r}")
        bucket = int.from_bytes(hashlib.sha256(item.encode("utf-8")).digest()[:8], "big")
        if bucket % num_shards == shard_index:
            selected.append(item)
    return selected
