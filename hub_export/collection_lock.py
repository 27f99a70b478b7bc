"""The lock that serialises writers of one collection: `COLLECTION/.publish.lock`.

A `bit_experts.locks.DirectoryLock` (exclusive create, a dead holder on this host taken over, a live
one waited for, then named in one line). Holders keep it only while they change the collection's
listing (a few file writes), never while they export or validate a module, so concurrent publishers
into one collection take turns. On a `tf.io.gfile` URL it serialises publishers that start seconds
apart, not two that start in the same instant (docs/hub_modules.md: run one publisher per remote
collection).
"""

from bit_experts.locks import DirectoryLock
from bit_experts.locks import LockHeldError as CollectionLockError

__all__ = ["LOCK_FILE", "CollectionLock", "CollectionLockError"]
LOCK_FILE = ".publish.lock"


class CollectionLock(DirectoryLock):
    """Holds `collection_dir/.publish.lock` for a `with` block (see `bit_experts.locks`); raises
    CollectionLockError after `timeout` seconds of waiting for a live holder."""

    def __init__(self, collection_dir, timeout=600.0, poll=0.1, log=print):
        super().__init__(collection_dir, LOCK_FILE, "collection", timeout, poll, log)
