"""The declared versions of the tasks against a record of their definitions (issue 22, point 5).

A task's fingerprint hashes its declared `version`, not its code (docs/tasks.md, "Task identity").
This test keeps the versions honest: task_definitions.json records, for every registered task, its
version and the SHA-256 of its definition: TFDS name, decoded features, splits, classes, metric,
augmentation policy, and its preprocess (label) function: its source without comments or blank
lines, the arguments a `functools.partial` binds, and what the global names it reads hold (this
project's functions recursively by the same rule, other values by repr or name). A task read from
disk rather than TFDS (FGVC Aircraft) records its identity and its module's source. The same record
holds `base.IMAGE_FORMAT_VERSION` with the source of `to_model_input` and `folder._read_image`,
and `folder.FOLDER_VERSION` with the source of the folder-task rules.

A definition that changes under the same version fails here, naming the task. Bump the version
(docs/tasks.md says how), then regenerate the record:

    TASK_DEFINITIONS_WRITE=1 python -m pytest -q -n 0 tests/vtab_eval/test_task_registry.py
"""

import dataclasses
import functools
import hashlib
import inspect
import io
import json
import os
import textwrap
import tokenize
import types

from bit_experts import lazy_api
from vtab_eval import tasks
from vtab_eval.tasks import base, fgvc_aircraft, folder, natural, specialized, structured, table3

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RECORD = os.path.join(REPO, "tests", "vtab_eval", "task_definitions.json")
COMMAND = "TASK_DEFINITIONS_WRITE=1 python -m pytest -q -n 0 tests/vtab_eval/test_task_registry.py"
_DECLARED_IN = {
    **{
        t.name: m.__file__
        for m in (natural, specialized, structured, table3, fgvc_aircraft)
        for t in m.TASKS
    },
    "image_format": base.__file__,
    "folder:*": folder.__file__,
}


def _source(obj) -> str:
    """The source of a function or class, without comments and blank lines."""
    text = textwrap.dedent(inspect.getsource(obj))
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    except tokenize.TokenError:  # A lambda cut out of a longer expression: the raw lines.
        return text
    return " ".join(t.string for t in tokens if t.type not in (tokenize.COMMENT, tokenize.NL))


def _code(fn, seen: set):
    """What a function's result depends on (see the module docstring), as JSON-able values."""
    if isinstance(fn, functools.partial):
        keywords = {k: _value(v, seen) for k, v in sorted(fn.keywords.items())}
        return [_code(fn.func, seen), [_value(v, seen) for v in fn.args], keywords]
    if fn in seen:
        return f"(see {fn.__qualname__})"
    seen.add(fn)
    names = inspect.getclosurevars(fn)
    reads = {**names.globals, **names.nonlocals}
    return [_source(fn), {k: _value(v, seen) for k, v in sorted(reads.items())}]


def _value(value, seen: set):
    own = (getattr(value, "__module__", None) or "").startswith("vtab_eval")
    if isinstance(value, functools.partial) or (inspect.isfunction(value) and own):
        return _code(value, seen)
    if inspect.isclass(value) and own:
        return _source(value)
    if isinstance(value, (types.ModuleType, lazy_api.LazyModule)):  # `tf`, imported or not yet
        return f"module {value.__name__}"
    if callable(value):
        return f"{getattr(value, '__module__', '')}.{getattr(value, '__qualname__', '?')}"
    text = repr(sorted(value) if isinstance(value, (set, frozenset)) else value)
    return text if " at 0x" not in text else f"instance of {type(value).__qualname__}"


def definition(task) -> dict:
    """Everything a registered task's examples and scores depend on, but its version."""
    if isinstance(task, fgvc_aircraft.AircraftTask):  # read from disk: its whole reading code
        identity = {
            k: v for k, v in task._identity().items() if k not in ("version", "image_format")
        }
        return {**identity, "code": _source(fgvc_aircraft)}
    return {
        "tfds_name": task.tfds_name,
        "decode": json.loads(json.dumps(task.decode)),
        "splits": dict(task.splits),
        "num_classes": task.num_classes,
        "metric": task.metric,
        "augmentation": task.augmentation.to_json(),
        "preprocess": _code(task.preprocess, set()),
    }


def declared() -> dict:
    """{key: (version, definition)}: every registered task, the image format, folder tasks."""
    registered = [tasks.get_task(name) for name in tasks.list_tasks()]
    entries = {task.name: (task.version, definition(task)) for task in registered}
    image_code = [_code(base.to_model_input, set()), _code(folder._read_image, set())]
    entries["image_format"] = (base.IMAGE_FORMAT_VERSION, image_code)
    rules = (folder.make_folder_task, folder._class_images, folder._pool_splits)
    entries["folder:*"] = (
        folder.FOLDER_VERSION,
        [_source(fn) for fn in rules + (folder.FolderTask._load_examples,)]
        + [repr(folder.IMAGE_EXTENSIONS)],
    )
    return entries


def record(entries: dict) -> dict:
    """What task_definitions.json holds: {key: {"version", "definition_sha256"}}."""
    return {
        key: {
            "version": version,
            "definition_sha256": hashlib.sha256(
                json.dumps(described, sort_keys=True).encode("utf-8")
            ).hexdigest(),
        }
        for key, (version, described) in entries.items()
    }


def problems(entries: dict, recorded: dict) -> list[str]:
    """One line per entry whose version or definition differs from the record, saying what to do."""
    current, found, name = record(entries), [], os.path.basename(RECORD)
    for key in sorted(current.keys() | recorded.keys()):
        now, then = current.get(key), recorded.get(key)
        if now == then:
            continue
        if now is None or then is None:
            state = "no longer registered" if now is None else "new"
            found.append(f"{key}: {state}, not in {name} yet: regenerate it: {COMMAND}")
        elif now["version"] == then["version"]:
            where = os.path.relpath(_DECLARED_IN.get(key, "vtab_eval/tasks"), REPO)
            found.append(
                f"{key}: its definition changed but its version is still {now['version']!r}: "
                f"bump the version in {where} (docs/tasks.md, 'Task identity'), then "
                f"regenerate {name}: {COMMAND}"
            )
        else:
            found.append(
                f"{key}: version {now['version']!r} but {name} records {then['version']!r}: "
                f"regenerate it: {COMMAND}"
            )
    return found


def test_every_definition_is_recorded_under_its_version():
    entries = declared()
    if os.environ.get("TASK_DEFINITIONS_WRITE"):
        with open(RECORD, "w", encoding="utf-8") as f:
            f.write(json.dumps(record(entries), indent=1, sort_keys=True) + "\n")
    recorded = {}
    if os.path.exists(RECORD):
        with open(RECORD, encoding="utf-8") as f:
            recorded = json.load(f)
    found = problems(entries, recorded)
    assert not found, "\n".join(found)


def test_a_changed_label_function_needs_a_version_bump():
    entries = declared()
    recorded = record(entries)
    task = tasks.get_task("clevr_count")

    def off_by_one(features):
        return {"image": features["image"], "label": structured.clevr_count_label(features) - 1}

    changed = dataclasses.replace(task, preprocess=off_by_one)  # same version
    [found] = problems({**entries, task.name: (changed.version, definition(changed))}, recorded)
    still = f"clevr_count: its definition changed but its version is still {task.version!r}"
    assert found.startswith(still)
    assert "vtab_eval/tasks/structured.py" in found and found.endswith(COMMAND)
    # Bumped: only the record is behind, and regenerating it makes the check pass.
    bumped = dataclasses.replace(changed, version=f"{int(task.version.split('.')[0]) + 1}.0.0")
    with_bump = {**entries, task.name: (bumped.version, definition(bumped))}
    [found] = problems(with_bump, recorded)
    assert found.startswith(f"clevr_count: version {bumped.version!r} but task_definitions.json")
    assert "bump" not in found
    assert problems(with_bump, record(with_bump)) == []


def test_helpers_and_constants_a_label_function_reads_count(monkeypatch):
    entries = declared()
    recorded = record(entries)
    monkeypatch.setattr(structured, "CLEVR_DISTANCE_THRESHOLDS", (0.0, 8.0, 9.0, 100.0))
    [found] = problems(declared(), recorded)
    assert found.startswith("clevr_distance: its definition changed")
    monkeypatch.undo()
    monkeypatch.setattr(
        structured, "_bin", lambda value, thresholds: value
    )  # kitti + clevr_distance
    assert [f.split(":")[0] for f in problems(declared(), recorded)] == [
        "clevr_distance",
        "kitti_distance",
    ]
    monkeypatch.undo()
    monkeypatch.setattr(base, "IMAGE_FORMAT_VERSION", 2)
    [found] = problems(declared(), recorded)
    assert found.startswith("image_format: version 2 but task_definitions.json records 1")
