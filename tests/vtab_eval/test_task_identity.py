"""Task identity and bad input: fingerprints, undecodable images, splits too small (issue 13)."""

import functools
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import vtab_eval_toys as toys

from vtab_eval import tasks
from vtab_eval.tasks import base, folder

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_registered_fingerprints_are_distinct_and_stable_across_processes():
    names = tasks.list_tasks()
    here = {name: tasks.get_task(name).fingerprint() for name in names}
    assert len(set(here.values())) == len(names)  # clevr_count vs clevr_distance differ by label
    assert all(len(f) == 64 and int(f, 16) >= 0 for f in here.values())
    code = "from vtab_eval import tasks; print(tasks.get_task('clevr_count').fingerprint())"
    env = dict(os.environ, PYTHONPATH=REPO, PYTHONHASHSEED="123")
    other = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert other.stdout.strip() == here["clevr_count"]


def test_folder_fingerprint_follows_content_not_path(tmp_path):
    data = toys.make_colour_folder(str(tmp_path / "a"), per_class=4)
    task = tasks.get_task(f"folder:{data}")
    first = task.fingerprint()
    assert task.fingerprint() is first  # cached on the instance
    assert tasks.get_task(f"folder:{data}").fingerprint() == first
    assert tasks.make_folder_task(data, seed=1).fingerprint() != first
    assert tasks.make_folder_task(data, test_fraction=0.5).fingerprint() != first
    # A copy that keeps file times has the same content identity under another name.
    moved = shutil.copytree(data, str(tmp_path / "b"), copy_function=shutil.copy2)
    assert tasks.get_task(f"folder:{moved}").fingerprint() == first
    # One more image in a class folder: a new fingerprint.
    toys.make_colour_folder(str(tmp_path / "extra"), per_class=1)
    shutil.copy2(
        tmp_path / "extra" / "train" / "class0" / "000.png",
        os.path.join(data, "train", "class0", "new.png"),
    )
    assert tasks.get_task(f"folder:{data}").fingerprint() != first
    # Same size, new modification time: treated as new content.
    path = os.path.join(data, "train", "class1", "000.png")
    before = tasks.get_task(f"folder:{data}").fingerprint()
    stat = os.stat(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert tasks.get_task(f"folder:{data}").fingerprint() != before


def _cut(path):
    data = open(path, "rb").read()
    with open(path, "wb") as handle:
        handle.write(data[: len(data) // 2])


BAD_FILES = {
    "empty": lambda path: open(path, "wb").close(),
    "cut_off": _cut,
    "not_an_image": lambda path: open(path, "w").write("plain text, not a PNG"),
}


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_undecodable_image_is_named_in_one_line_or_skipped(tmp_path, kind):
    data = toys.make_colour_folder(str(tmp_path / "d"), per_class=5, size=24)
    bad = os.path.join(data, "train", "class2", "003.png")
    BAD_FILES[kind](bad)
    with pytest.raises(ValueError) as info:
        tasks.get_task(f"folder:{data}")
    message = str(info.value)
    assert bad in message and "--skip_bad_images" in message and "\n" not in message
    with pytest.warns(folder.BadImageWarning, match="class2/003.png"):
        task = tasks.get_task(f"folder:{data}", skip_bad_images=True)
    every = task.files["trainval"][0] + task.files["test"][0]
    assert len(every) == 14 and bad not in every
    assert [p for p, _ in task.skipped_images] == ["train/class2/003.png"]
    assert task.to_json()["skipped_images"][0]["path"] == "train/class2/003.png"
    # Every kept file decodes: a whole pass over the data raises nothing.
    assert sum(1 for _ in task.load("trainval", image_size=8)) == len(task.files["trainval"][0])


def test_validate_splits_names_folder_split_and_sizes(tmp_path):
    data = toys.make_colour_folder(str(tmp_path / "small"), per_class=4)
    task = tasks.get_task(f"folder:{data}")
    task.validate_splits(["train800", "train800val200", "test"])  # non-empty: fine
    with pytest.raises(ValueError) as info:
        task.validate_splits(("train800", "val200", "train800val200", "test"))
    message = str(info.value)
    assert data in message and "'val200'" in message and "holds 0 images" in message
    assert "10 pool" in message and "\n" not in message
    with pytest.raises(ValueError, match="at least 900"):
        task.validate_splits(["train800"], min_images=900)
    with pytest.raises(ValueError, match="no split 'val300'"):
        task.validate_splits(["val300"])
    # Registered tasks: names only (sizes need the data).
    tasks.get_task("cifar100").validate_splits(["train800", "val200"])


_PROBE = """
import functools
import numpy as np

THRESHOLDS = (0.25, 0.5)
UNUSED = 1


def _helper(x):
    return x * 2


def label_fn(x):
    scaled = np.asarray(x)
    return sum(t < _helper(scaled) for t in THRESHOLDS)


def unrelated():
    return UNUSED
"""


def _load_probe(tmp_path, source, name="vtab_eval._probe"):
    """Loads `source` as module `name` from a file, registered in sys.modules (where
    inspect.getsource looks up classes); the caller restores sys.modules."""
    path = tmp_path / f"{name.rpartition('.')[2]}_{hashlib.sha256(source.encode()).hexdigest()}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _probe_identity(tmp_path, source, attr="label_fn", helpers=None):
    """callable_identity of `attr` in a fresh module (named inside vtab_eval) with `source`.

    `helpers` maps more module names (inside vtab_eval) to their sources, loaded first.
    """
    helpers = helpers or {}
    saved = {name: sys.modules.get(name) for name in ["vtab_eval._probe", *helpers]}
    try:
        for name, text in helpers.items():
            _load_probe(tmp_path, text, name)
        return base.callable_identity(getattr(_load_probe(tmp_path, source), attr))
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def _assert_variants(tmp_path, source, changed, unchanged=(), **kwargs):
    """Each (old, new) edit of `source` in `changed` changes the identity; those in `unchanged`
    keep it."""
    reference = _probe_identity(tmp_path, source, **kwargs)
    assert _probe_identity(tmp_path, source + "\n", **kwargs) == reference  # stable
    for old, new in changed:
        assert old in source, old
        assert _probe_identity(tmp_path, source.replace(old, new), **kwargs) != reference, new
    for old, new in unchanged:
        assert old in source, old
        assert _probe_identity(tmp_path, source.replace(old, new), **kwargs) == reference, new


def test_callable_identity_follows_the_code_it_reads_not_the_whole_file(tmp_path):
    reference = _probe_identity(tmp_path, _PROBE)
    assert reference == _probe_identity(tmp_path, _PROBE + "\n")  # stable for the same code
    unchanged = {
        "an unrelated function": _PROBE.replace("return UNUSED", "return UNUSED + 1"),
        "an unrelated constant": _PROBE.replace("UNUSED = 1", "UNUSED = 2"),
        "a new function": _PROBE + "\n\ndef added():\n    return 3\n",
    }
    for what, source in unchanged.items():
        assert _probe_identity(tmp_path, source) == reference, what
    changed = {
        "the function's body": _PROBE.replace("sum(t <", "sum(t <="),
        "a constant it reads": _PROBE.replace("(0.25, 0.5)", "(0.25, 0.75)"),
        "a helper it calls": _PROBE.replace("x * 2", "x * 3"),
        "a module it uses": _PROBE.replace("import numpy as np", "import math as np"),
    }
    for what, source in changed.items():
        assert _probe_identity(tmp_path, source) != reference, what


def test_callable_identity_of_partial_covers_bound_arguments():
    one = base.callable_identity(functools.partial(round, ndigits=1))
    two = base.callable_identity(functools.partial(round, ndigits=2))
    assert one != two and one["partial"] == two["partial"]
    with pytest.raises(
        ValueError, match="cannot fingerprint a bound argument of type object"
    ) as info:
        base.callable_identity(functools.partial(round, object()))
    assert "\n" not in str(info.value) and "expected a number" in str(info.value)


def test_numpy_constants_count_by_dtype_shape_and_every_byte(tmp_path):
    source = """
import numpy as np

EDGES = np.linspace(0.0, 1.0, 2001)
FINE = np.array([0.123456789, 0.5])
SCALE = np.float64(0.5)


def label_fn(x):
    return np.searchsorted(EDGES, x * SCALE) + np.searchsorted(FINE, x)
"""
    changed = [
        # The printed repr elides the middle of a long array and rounds to 8 digits.
        (
            "EDGES = np.linspace(0.0, 1.0, 2001)\n",
            "EDGES = np.linspace(0.0, 1.0, 2001)\nEDGES[1000] += 1e-3\n",
        ),
        ("0.123456789", "0.123456781"),
        ("np.linspace(0.0, 1.0, 2001)", "np.linspace(0.0, 1.0, 2001).astype(np.float32)"),
        ("np.array([0.123456789, 0.5])", "np.array([[0.123456789, 0.5]])"),
        ("np.float64(0.5)", "np.float32(0.5)"),
    ]
    _assert_variants(tmp_path, source, changed)


def test_partial_accepts_numpy_arguments_by_dtype_and_value():
    def identity(*args, **kwargs):
        return base.callable_identity(functools.partial(np.take, *args, **kwargs))

    assert identity(axis=np.int64(0)) == identity(axis=np.int64(0))
    assert len({json.dumps(identity(axis=v)) for v in (np.int64(0), np.int64(1), 0)}) == 3
    assert identity(np.arange(3)) == identity(np.arange(3))
    assert identity(np.arange(3)) != identity(np.arange(3) + 1)
    assert identity(np.arange(3)) != identity(np.arange(3, dtype=np.int32))


def test_helpers_reached_through_a_module_attribute_count(tmp_path):
    helpers = """
CUT = 0.5
UNUSED = 1


def scale(x):
    return x * 2


def unrelated():
    return UNUSED
"""
    source = """
import sys

helpers = sys.modules["vtab_eval._probe_helpers"]


def label_fn(x):
    return helpers.scale(x) > helpers.CUT
"""
    reference = _probe_identity(tmp_path, source, helpers={"vtab_eval._probe_helpers": helpers})
    for old, new, same in [
        ("x * 2", "x * 3", False),
        ("CUT = 0.5", "CUT = 0.7", False),
        ("UNUSED = 1", "UNUSED = 2", True),
        ("return UNUSED", "return UNUSED + 1", True),
    ]:
        edited = {"vtab_eval._probe_helpers": helpers.replace(old, new)}
        assert (_probe_identity(tmp_path, source, helpers=edited) == reference) is same, new


def test_attribute_names_are_not_globals(tmp_path):
    source = """
shape = 1


def label_fn(image):
    return image.shape
"""
    _assert_variants(tmp_path, source, changed=[], unchanged=[("shape = 1", "shape = 2")])


def test_default_arguments_and_closure_cells_count_by_value(tmp_path):
    source = """
LOW = 0.5
HIGH = 2.0


def label_fn(x, low=LOW, *, high=HIGH):
    return low < x < high


def _make(cut):
    def check(x):
        return x > cut

    return check


closure_fn = _make(0.5)
"""
    _assert_variants(tmp_path, source, [("LOW = 0.5", "LOW = 0.7"), ("HIGH = 2.0", "HIGH = 3.0")])
    _assert_variants(tmp_path, source, [("_make(0.5)", "_make(0.7)")], attr="closure_fn")


def test_wrapped_functions_are_followed_through_their_decorators(tmp_path):
    source = """
import functools

import tensorflow as tf

CUTS = (0.5,)


def _logged(fn):
    @functools.wraps(fn)
    def wrapper(*args):
        return fn(*args)

    return wrapper


@functools.lru_cache(maxsize=None)
def _cached(x):
    return x * 2


@tf.function
def _compiled(x):
    return x + 1


@_logged
def label_fn(x):
    return _cached(x) + _compiled(x) > CUTS[0]
"""
    changed = [
        ("(0.5,)", "(0.7,)"),  # read by the wrapped root function
        ("x * 2", "x * 3"),  # functools.lru_cache helper
        ("x + 1", "x + 4"),  # tf.function helper
        ("return fn(*args)", "return not fn(*args)"),  # this project's decorator
    ]
    _assert_variants(tmp_path, source, changed)


_CLASS_PROBE = """
CUT = 0.5
SCALE = 2.0
OFFSET = 0.0


class _Binner:
    @staticmethod
    def over(x):
        return x > CUT

    @classmethod
    def scaled(cls, x):
        return x * SCALE

    @property
    def offset(self):
        return OFFSET

    def __call__(self, x):
        return self.over(self.scaled(x) + self.offset)


_BINNER = _Binner()
_BOUND = _BINNER.__call__
LOOKUP = {0: 1, 1: 0}.get


def label_fn(x):
    return _Binner.over(x)


def bound_fn(x):
    return _BOUND(x)
"""


@pytest.mark.parametrize("attr", ["label_fn", "bound_fn", "_BOUND", "_BINNER"])
def test_methods_of_classes_and_bound_methods_count(tmp_path, attr):
    changed = [("CUT = 0.5", "CUT = 0.7")]
    if attr != "label_fn":  # Methods that `_Binner.over` does not reach.
        changed += [("SCALE = 2.0", "SCALE = 3.0"), ("OFFSET = 0.0", "OFFSET = 1.0")]
    _assert_variants(tmp_path, _CLASS_PROBE, changed, attr=attr)


def test_builtin_method_counts_the_plain_value_it_is_bound_to(tmp_path):
    _assert_variants(tmp_path, _CLASS_PROBE, [("{0: 1, 1: 0}", "{0: 0, 1: 1}")], attr="LOOKUP")


def test_lambdas_on_one_line_and_exec_defined_functions_differ_by_code(tmp_path):
    source = """
label_fn, plus_two = (lambda x: x + 1), (lambda x: x + 2)
real, imag = (lambda x: x.real), (lambda x: x.imag)
exec("def by_exec(x):\\n    return x > 3\\n")
"""
    assert _probe_identity(tmp_path, source) != _probe_identity(tmp_path, source, "plus_two")
    assert _probe_identity(tmp_path, source, "real") != _probe_identity(tmp_path, source, "imag")
    _assert_variants(tmp_path, source, [("x > 3", "x > 5")], attr="by_exec")


def test_instances_count_by_class_never_by_address(tmp_path, monkeypatch):
    source = """
class _Settings:
    def __call__(self, x):
        return x


SETTINGS = _Settings()


def label_fn(x):
    return SETTINGS(x)
"""
    monkeypatch.setitem(sys.modules, "vtab_eval._probe", None)  # restored after the test
    # Both modules stay alive, so their instances necessarily have different addresses.
    first, second = _load_probe(tmp_path, source), _load_probe(tmp_path, source + "\n")
    identities = [base.callable_identity(f) for f in (first.label_fn, second.label_fn)] + [
        base.callable_identity(m.SETTINGS) for m in (first, second)
    ]
    assert identities[0] == identities[1] and identities[2] == identities[3]
    assert identities[2]["function"] == "instance of vtab_eval._probe._Settings"
    assert not any(" at 0x" in json.dumps(i) for i in identities)
    parts = list(base._code_parts(first.label_fn, {}))
    assert "SETTINGS =" in parts and "instance of vtab_eval._probe._Settings" in parts
    assert not any(" at 0x" in part for part in parts)


def test_self_referencing_and_deep_globals_do_not_crash(tmp_path):
    source = """
LOOP = []
LOOP.append(LOOP)
DEEP = 0
for _ in range(200):
    DEEP = [DEEP]


def label_fn(x):
    return LOOP, DEEP, x
"""
    first = _probe_identity(tmp_path, source)
    assert first == _probe_identity(tmp_path, source + "\n")
    assert base._plain_repr(np.arange(2).tolist()) == "list(0, 1)"


_STABLE_PROBE = """
import functools

import numpy as np

NAMES = frozenset({"alpha", "beta", "gamma", "delta", "epsilon"})
EDGES = np.linspace(0.0, 1.0, 11)


class _Settings:
    def scale(self, x):
        return x * 2


SETTINGS = _Settings()
CHOOSE = (lambda x: x + 1), (lambda x: x + 2)


@functools.lru_cache(maxsize=None)
def _cached(x):
    return x


def _make(cut):
    def check(x):
        return x > cut

    return check


def label_fn(x, names=NAMES, check=_make(0.5)):
    return check(SETTINGS.scale(CHOOSE[0](_cached(x)))), EDGES, names
"""


def test_callable_identity_is_the_same_in_separate_processes(tmp_path):
    path = tmp_path / "stable_probe.py"
    path.write_text(_STABLE_PROBE)
    code = (
        "import importlib.util, json, sys\n"
        "from vtab_eval.tasks import base\n"
        f"spec = importlib.util.spec_from_file_location('vtab_eval._probe', {str(path)!r})\n"
        "module = importlib.util.module_from_spec(spec)\n"
        "sys.modules[spec.name] = module\n"
        "spec.loader.exec_module(module)\n"
        "print(json.dumps(base.callable_identity(module.label_fn), sort_keys=True))\n"
    )
    runs = [  # Two processes at once, with different hash seeds (set and dict orders).
        subprocess.Popen(
            [sys.executable, "-c", code],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=dict(os.environ, PYTHONPATH=REPO, PYTHONHASHSEED=seed),
        )
        for seed in ("1", "2")
    ]
    outputs = []
    for run in runs:
        stdout, stderr = run.communicate(timeout=300)
        assert run.returncode == 0, stderr[-2000:]
        outputs.append(stdout.strip().splitlines()[-1])
    assert outputs[0] == outputs[1]
    assert json.loads(outputs[0]) == _probe_identity(tmp_path, _STABLE_PROBE)
