"""On-disk cache of expert features for a task's images, shared by workers.

One entry per (module identity, task fingerprint, split, resolution, precision): `<key>.npz` holds
`features` float32 [N, d] and `labels` int64 [N], and `<key>.json` beside it where they came from.
The root is a local folder or any `tf.io.gfile` URL. The .npz is written first and the sidecar
last, and an entry counts only once its sidecar is there and its .npz reads back whole with the
sidecar's shape, so workers can fill one cache concurrently and a killed run recomputes only the
entry it was writing (docs/workdir.md, docs/selection.md).
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
        """The entry name of one module's (`identity.module_identity`) features of one task split
        (`Task.fingerprint()`) at one image side and precision, from checked values: readable,
        file-safe and unique (docs/selection.md, "Feature cache", gives its form)."""
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
        """(features float32 [N, d], labels int64 [N]), or None: absent or uncommitted (no
        sidecar: silently), or unreadable (truncated, corrupted, wrong contents, a shape other than
        its sidecar's: with a CorruptCacheEntryWarning naming the file)."""
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
            sidecar = json.loads(atomic_files.read_bytes(path).decode("utf-8"))
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
        """Stores `key`'s entry: [N, d] `features` as float32 and [N] `labels` as int64 in the
        .npz first, then the JSON-serialisable `metadata` plus `key`, `shape` and `created` (UTC,
        ISO 8601) in its .json sidecar, which commits it (`get`)."""
        arrays = dict(
            features=np.asarray(features, np.float32), labels=np.asarray(labels, np.int64)
        )
        created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        sidecar = dict(metadata, key=key, shape=list(arrays["features"].shape), created=created)
        try:
            sidecar_bytes = (json.dumps(sidecar, indent=2, sort_keys=True) + "\n").encode("utf-8")
        except (TypeError, ValueError) as err:
            raise ValueError(f"metadata must be JSON-serialisable: {err}") from err
        atomic_files.makedirs(self.root_dir)
        atomic_files.write_atomic(self._path(key, ".npz"), lambda f: np.savez(f, **arrays))
        atomic_files.write_atomic(self._path(key, ".json"), lambda f: f.write(sidecar_bytes))


def shard_assignment(items: list[str], num_shards: int, shard_index: int) -> list[str]:
    """The items that worker `shard_index` of `num_shards` handles, in their original order.

    Each item's shard is its SHA-256 (not Python's salted hash()) mod num_shards: the same in every
    process and machine, and kept when other items are added or removed.

    Raises:
      ValueError: num_shards < 1, or shard_index outside [0, num_shards).
    """
    if not 0 <= shard_index < num_shards:
        raise ValueError(
            f"num_shards must be at least 1 and shard_index in [0, num_shards); got num_shards="
            f"{num_shards}, shard_index={shard_index}"
        )

    def shard(item):
        return int.from_bytes(hashlib.sha256(item.encode("utf-8")).digest()[:8], "big") % num_shards

    return [item for item in items if shard(item) == shard_index]
