"""Content identities of modules, tasks and fine-tunes, and the hash every key is built with:
equal identities mean equal results, and any change of input a new one (docs/evaluation.md)."""

import hashlib
import json

# Bump when the fine-tuning code changes what a spec's result means (memo records of another
# format are not reused; `vtab_eval.runner.run_tracks` says so in one line).
SPEC_FORMAT = 2


def content_hash(obj, length=64):
    """Hex SHA-256 of `obj` as compact, key-sorted JSON, cut to `length` characters."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def module_identity(entry):
    """What determines a module's outputs (a `ModuleEntry` or a handle), as hex: its weights
    fingerprint when its metadata has one (republished weights keep every cache entry), else its
    manifest checksum, else a checksum of its files, else a hash of an unresolvable handle."""
    from hub_export import handles
    from hub_export import identity as hub_identity

    handle = getattr(entry, "handle", entry)
    metadata = getattr(entry, "metadata", None) or {}
    found = metadata.get(hub_identity.FINGERPRINT_FIELD) or getattr(entry, "sha256", None)
    if found:
        return found
    try:
        return handles.module_sha256(handles.resolve(handle))
    except (handles.ModuleError, OSError):
        return "handle-" + hashlib.sha256(handle.encode("utf-8")).hexdigest()


def spec_identity(spec):
    """Everything that determines the result of a fine-tune (a `plan.Spec`), JSON-able."""
    return {
        "format": SPEC_FORMAT,
        "module": spec.module_id,
        "task": spec.task_id,
        "train_split": spec.train_split,
        "eval_split": spec.eval_split,
        "setting": spec.setting,
        "seed": spec.seed,
        "deterministic": spec.deterministic,
    }
