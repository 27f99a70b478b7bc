"""What identifies each thing the evaluation side computes, derived from its content only.

* a module: `module_identity` (its weights fingerprint when published with one, else its checksum);
* a task: `task_identity` (`Task.fingerprint()`: name, declared version, and for folder tasks a hash
  of the file list and contents; docs/tasks.md);
* a fine-tune: `spec_identity` (module, task, splits, the full setting, seed, determinism);
* a ranking or a result file: `content_hash` of the identities and settings it depends on.

Every cache key, memo file name, results identity and resume check is built from these, so equal
identities mean equal results and a change of any input gives a new identity (docs/evaluation.md,
"Identity").
"""

import hashlib
import json

# Bump when the fine-tuning code changes what a spec's result means (memo records of another
# format are not reused; `vtab_eval.runner.Memo` says so in one line).
SPEC_FORMAT = 2


def canonical_json(obj):
    """Compact, key-sorted JSON: the same content always gives the same text."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def content_hash(obj, length=64):
    """Hex SHA-256 of `canonical_json(obj)`, cut to `length` characters."""
    return hashlib.sha256(canonical_json(obj).encode("utf-8")).hexdigest()[:length]


def module_identity(entry):
    """What determines a module's outputs, as a hex string: the module part of every key.

    Its `weights_fingerprint` (`hub_export.identity`: variables, architecture, export settings and
    forward-pass code, so republishing identical weights keeps every cache entry) when its metadata
    has one; else its manifest checksum; else a checksum of its files; else, for a remote handle
    that cannot be resolved offline, a hash of the handle (versioned handles name fixed contents).

    Args:
      entry: a `hub_export.collection.ModuleEntry` or a handle string.
    """
    from hub_export import handles
    from hub_export import identity as hub_identity

    if isinstance(entry, str):
        handle, metadata, checksum = entry, {}, None
    else:
        handle, metadata = entry.handle, getattr(entry, "metadata", None) or {}
        checksum = getattr(entry, "sha256", None)
    if metadata.get(hub_identity.FINGERPRINT_FIELD):
        return metadata[hub_identity.FINGERPRINT_FIELD]
    if checksum:
        return checksum
    try:
        return handles.module_sha256(handles.resolve(handle))
    except (handles.ModuleError, OSError):
        return "handle-" + hashlib.sha256(handle.encode("utf-8")).hexdigest()


def task_identity(task):
    """What identifies a task's examples: `{"fingerprint": task.fingerprint()}` (JSON-able)."""
    return {"fingerprint": task.fingerprint()}


def spec_identity(module_id, task_id, train_split, eval_split, setting, seed, deterministic):
    """Everything that determines one fine-tune's result, as a JSON-able dict."""
    return {
        "format": SPEC_FORMAT,
        "module": module_id,
        "task": task_id,
        "train_split": train_split,
        "eval_split": eval_split,
        "setting": setting,
        "seed": int(seed),
        "deterministic": bool(deterministic),
    }
