"""Whether a module can be fine-tuned, checked from its `saved_model.pb` without loading it.

Fine-tuning (`vtab_eval.classifier`) uses the reusable SavedModel API (TF Hub TF2 format): the
root's `variables`, a non-empty `trainable_variables` and a traced `__call__(images, training=...)`
with both training=True and training=False. A module without them (a Keras 3 `model.export()`
archive, a signature-only SavedModel) can still be embedded and ranked, never fine-tuned.
"""

from __future__ import annotations

import os

from tensorflow.core.protobuf import saved_model_pb2

# Root attributes fine-tuning uses (`vtab_eval.classifier`).
REQUIRED_ATTRIBUTES = ("__call__", "variables", "trainable_variables")

# (module directory, size, mtime_ns) of saved_model.pb -> result, for checks done in this process.
_CHECKED: dict[tuple[str, int, int], tuple[bool, str]] = {}


def finetunable(entry) -> tuple[bool, str]:
    """(True, "") when `vtab_eval.finetune` can fine-tune the module `entry`, else (False, one line
    saying what it lacks), from its saved_model.pb alone. `entry`: a `ModuleEntry` (its `path` when
    set) or a handle string (any form `hub_export.collection.resolve_handle` takes: a folder, a
    collection name, a Kaggle handle in kagglehub's cache, a TF Hub handle in TFHUB_CACHE_DIR)."""
    handle = entry if isinstance(entry, str) else entry.handle
    path = None if isinstance(entry, str) else getattr(entry, "path", None)
    if path is None:
        from hub_export import collection

        try:
            path = collection.resolve_handle(handle)
        except collection.ModuleError as err:  # names it; not available here
            return False, str(err)
    pb = os.path.join(path, "saved_model.pb")
    try:
        info = os.stat(pb)
    except OSError:
        if os.path.isfile(os.path.join(path, "tfhub_module.pb")):
            return False, "TF1 Hub format module (no TF2 reusable SavedModel API)"
        return False, f"no saved_model.pb in {path}"
    stamp = (path, info.st_size, info.st_mtime_ns)
    if stamp not in _CHECKED:
        _CHECKED[stamp] = _check(pb)
    return _CHECKED[stamp]


def _check(pb_path) -> tuple[bool, str]:
    proto = saved_model_pb2.SavedModel()
    try:
        with open(pb_path, "rb") as handle:
            proto.ParseFromString(handle.read())
    except Exception as err:  # noqa: BLE001 - protobuf raises DecodeError and others
        return False, f"unreadable saved_model.pb ({type(err).__name__})"
    if not proto.meta_graphs or not proto.meta_graphs[0].object_graph_def.nodes:
        return False, "no object graph (a TF1-style SavedModel with signatures only)"
    graph = proto.meta_graphs[0].object_graph_def
    children = {c.local_name: c.node_id for c in graph.nodes[0].children}
    missing = [name for name in REQUIRED_ATTRIBUTES if name not in children]
    if "__call__" in missing:
        kind = "signature-only"
        if "serve" in children:
            kind = "serving-only (e.g. Keras 3 model.export())"
        return False, (
            f"no __call__(images, training=...): a {kind} SavedModel; root has {sorted(children)}"
        )
    if missing:
        return False, f"lacks {missing} of the reusable SavedModel API"
    if not graph.nodes[children["trainable_variables"]].children:
        return False, "trainable_variables is empty: nothing to fine-tune"
    node = graph.nodes[children["__call__"]]
    if node.WhichOneof("kind") != "function" or not node.function.concrete_functions:
        return False, "__call__ is not a traced tf.function"
    modes = _training_modes(node.function, graph)
    if True not in modes:
        return False, "__call__ has no traced training=True variant (fine-tuning calls it so)"
    if False not in modes:
        return False, "__call__ has no traced training=False variant (evaluation calls it so)"
    return True, ""


def _training_modes(function, graph) -> set:
    """The values `training` takes over the traced concrete functions of a SavedFunction."""
    spec = function.function_spec.fullargspec.named_tuple_value
    fields = {v.key: v.value for v in spec.values}
    args = [v.string_value for v in fields["args"].list_value.values] if "args" in fields else []
    if args and args[0] == "self":
        args = args[1:]
    defaults = []
    if "defaults" in fields and fields["defaults"].WhichOneof("kind") == "tuple_value":
        defaults = list(fields["defaults"].tuple_value.values)
    value = dict(zip(reversed(args), reversed(defaults))).get("training")  # of the last arguments
    default = None
    if value is not None and value.WhichOneof("kind") == "bool_value":
        default = value.bool_value
    modes = set()
    for name in function.concrete_functions:
        signature = graph.concrete_functions[name].canonicalized_input_signature
        positional, keywords = signature.tuple_value.values
        passed = dict(zip(args, positional.tuple_value.values))
        value = {**passed, **keywords.dict_value.fields}.get("training")
        if value is None:
            if default is not None:
                modes.add(default)
        elif value.WhichOneof("kind") == "bool_value":
            modes.add(value.bool_value)
        else:  # A tensor-valued `training` accepts both.
            modes.update((True, False))
    return modes
