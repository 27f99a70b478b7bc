"""The task contract: a named classification problem with fixed splits and one image format.

Every task, whatever its source (a TFDS dataset or an image folder), yields examples
``{"image": float32 [H, W, 3] in [0, 1], "label": int64}`` so that selection and
fine-tuning never need to know where the data came from.
"""

from __future__ import annotations

import dataclasses
import dis
import enum
import functools
import hashlib
import inspect
import json
import linecache
import types
from collections.abc import Iterable, Mapping

import numpy as np
import tensorflow as tf

from vtab_eval.tasks.augmentation import FLIP_AND_CROP, Augmentation

GROUPS = ("natural", "specialized", "structured")
METRICS = ("accuracy", "mean_per_class_accuracy")
# The VTAB-1k protocol: tune on train800 -> val200, then train on train800val200 -> test.
VTAB_SPLITS = ("train800", "val200", "train800val200", "test")
# Full-data splits (VTAB defines them too); Table-3 style fine-tuning trains on "trainval".
FULL_SPLITS = ("train", "val", "trainval")
SPLIT_NAMES = VTAB_SPLITS + FULL_SPLITS
# Bumped whenever what `Task.fingerprint` covers changes, so old fingerprints never match new ones.
FINGERPRINT_VERSION = 2


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class Task:
    """A transfer task: what it is called, how many classes, which splits, how it is scored.

    Attributes:
      name: registry name, e.g. "cifar100" or "folder:/data/flowers".
      num_classes: labels are in [0, num_classes).
      group: VTAB group ("natural", "specialized", "structured"), or None for folder tasks.
      splits: maps every name in SPLIT_NAMES to a TFDS split string (TFDS tasks) or to a
        description of the images it holds (folder tasks).
      metric: "accuracy" or "mean_per_class_accuracy".
      suite: which list the task belongs to ("vtab1k", "table3" or "folder").
      tfds_name: TFDS "name[/config]:version" passed to tfds.load, or None.
      augmentation: which random flips/crops keep the labels true (vtab_eval/tasks/augmentation.py).
    """

    name: str
    num_classes: int
    group: str | None
    splits: Mapping[str, str]
    metric: str = "accuracy"
    suite: str
    tfds_name: str | None = None
    augmentation: Augmentation = FLIP_AND_CROP

    def __post_init__(self):
        if self.group is not None and self.group not in GROUPS:
            raise ValueError(
                f"Task {self.name!r}: group must be one of {GROUPS}, got {self.group!r}"
            )
        if self.metric not in METRICS:
            raise ValueError(
                f"Task {self.name!r}: metric must be one of {METRICS}, got {self.metric!r}"
            )
        if self.num_classes < 2:
            raise ValueError(
                f"Task {self.name!r}: needs at least 2 classes, got {self.num_classes}"
            )
        missing = [s for s in SPLIT_NAMES if s not in self.splits]
        if missing:
            raise ValueError(f"Task {self.name!r}: splits lack {missing}")
        # Read-only view so a shared registry entry cannot be altered by a caller.
        object.__setattr__(self, "splits", types.MappingProxyType(dict(self.splits)))

    def split_string(self, split: str) -> str:
        """Returns the split definition for one of SPLIT_NAMES; ValueError otherwise."""
        if split not in self.splits:
            raise ValueError(
                f"Task {self.name!r} has no split {split!r}; expected one of {list(self.splits)}"
            )
        return self.splits[split]

    def load(
        self,
        split: str,
        data_dir: str | None = None,
        image_size: int | None = None,
        shuffle_files: bool = False,
    ) -> tf.data.Dataset:
        """Loads one split as a dataset of {"image": float32 [H, W, 3] in [0, 1], "label": int64}.

        Args:
          split: one of SPLIT_NAMES, e.g. "train800" or "test".
          data_dir: TFDS data directory (None: the TFDS default); ignored by folder tasks.
          image_size: if given, every image is resized (bilinear) to image_size x image_size.
          shuffle_files: passed to TFDS (file order only); ignored by folder tasks.
        """
        if image_size is not None and (not isinstance(image_size, int) or image_size < 1):
            raise ValueError(f"image_size must be a positive int or None, got {image_size!r}")
        self.split_string(split)  # Validates the name before any I/O.
        raw = self._load_examples(split, data_dir, shuffle_files)

        def convert(example):
            return to_model_input(example["image"], example["label"], image_size)

        return raw.map(convert, num_parallel_calls=tf.data.AUTOTUNE)

    def _load_examples(
        self, split: str, data_dir: str | None, shuffle_files: bool
    ) -> tf.data.Dataset:
        """Yields {"image": uint8 [H, W, 1 or 3], "label": integer} for a split in SPLIT_NAMES.

        Subclasses implement it.
        """
        raise NotImplementedError

    def fingerprint(self) -> str:
        """Hex SHA-256 of everything that determines the task's examples (docs/tasks.md).

        Stable across processes and machines; computed once per instance (no I/O: folder tasks
        record their files' sizes and modification times when they are built). Caches, results
        paths and resume checks key a task on this, never on its name or path.
        """
        cached = self.__dict__.get("_fingerprint")
        if cached is None:
            identity = {"fingerprint_version": FINGERPRINT_VERSION, **self._identity()}
            text = json.dumps(identity, sort_keys=True, separators=(",", ":"), allow_nan=False)
            cached = hashlib.sha256(text.encode("utf-8")).hexdigest()
            object.__setattr__(self, "_fingerprint", cached)
        return cached

    def _identity(self) -> dict:
        """The JSON-serialisable content `fingerprint` hashes; subclasses extend it."""
        return {
            "type": type(self).__name__,
            "num_classes": self.num_classes,
            "metric": self.metric,
            "splits": dict(self.splits),
            "image_format": callable_identity(to_model_input),
        }

    def split_size(self, split: str) -> int | None:
        """Number of examples of `split` if known without reading data (folder tasks), else None."""
        self.split_string(split)
        return None

    def validate_splits(self, splits: Iterable[str], min_images: int = 1) -> None:
        """Checks, before any training, that every split in `splits` exists and holds enough images.

        Call it with the splits a protocol will use, e.g. `protocol.SPLIT_SCHEMES["vtab1k"]`.
        Sizes are only checked where they are known without reading data (folder tasks).

        Raises:
          ValueError: one line naming the task (the folder, for folder tasks), the split and its
            size, for an unknown split or one with fewer than `min_images` images.
        """
        if isinstance(splits, str):
            splits = (splits,)
        for split in splits:
            size = self.split_size(split)
            if size is not None and size < min_images:
                raise ValueError(self._too_small_message(split, size, min_images))

    def _too_small_message(self, split: str, size: int, min_images: int) -> str:
        return (
            f"Task {self.name!r} is too small for split {split!r}: it holds {size} images "
            f"({self.splits[split]}); at least {min_images} needed"
        )

    def to_json(self) -> dict:
        """The public description printed by `python -m vtab_eval.list_tasks` (see docs/tasks.md)."""
        return {
            "name": self.name,
            "tfds_name": self.tfds_name,
            "num_classes": self.num_classes,
            "group": self.group,
            "metric": self.metric,
            "suite": self.suite,
            "splits": dict(self.splits),
            "augmentation": self.augmentation.to_json(),
        }


def to_model_input(image: tf.Tensor, label: tf.Tensor, image_size: int | None = None) -> dict:
    """Turns a uint8 image (grey or RGB) and an integer label into the common example format."""
    image = tf.cast(image, tf.float32) / 255.0
    if image.shape[-1] == 1:
        # Grey datasets (dSprites, smallNORB) are tiled to 3 channels, as VTAB does.
        image = tf.tile(image, [1, 1, 3])
    if image_size is not None:
        image = tf.image.resize(image, [image_size, image_size], method="bilinear")
    return {"image": image, "label": tf.cast(label, tf.int64)}


def callable_identity(fn) -> dict:
    """A JSON description of a label or decode function that changes whenever its result may.

    Returns ``{"function": qualified name, "code_sha256": hex}``, or for a `functools.partial`
    ``{"partial": identity of the function, "args": [...], "keywords": {...}}``. `code_sha256` is
    the SHA-256 of the function's own source (lambdas and functions without source, e.g. made by
    `exec`, add their byte code and constants), its default arguments and closure cells, and,
    sorted by name, what each global name it reads holds: the names its byte code loads with
    LOAD_GLOBAL/LOAD_NAME (nested functions included; attribute names never count), plus
    `module.attribute` read from a module of this project (`vtab_eval`, `bit_experts`).
    Each value counts as follows:

    - plain constants (numbers, strings, bytes, None, enums, and tuples, lists, sets and dicts of
      them) by value; numpy arrays by dtype, shape and the SHA-256 of their bytes, numpy scalars
      by dtype and value;
    - functions and classes of this project, recursively, after unwrapping decorators
      (`__wrapped__`: `functools.wraps`, `lru_cache`, `tf.function`); a class by its source, its
      bases and every entry of its `__dict__` (methods, static/class methods and properties
      followed like functions, class constants by value); a bound method by its function and
      the object it is bound to: by value if plain, else by its class (followed if it is this
      project's);
    - other objects (instances, modules, third-party callables) by qualified name: an instance
      counts by its class (followed if it is this project's), never by its state.

    Edits elsewhere in the same file do not count; neither do the interpreter, library versions,
    values written to globals after the fingerprint is taken, nor the state of instances. Source
    is read from the file on disk when the identity is computed, so a file edited after it was
    imported counts as edited although the loaded code is the old one.

    Raises:
      ValueError: a bound argument that is not a number, string, bool, None, list, tuple, numpy
        array or scalar, or callable.
    """
    if isinstance(fn, functools.partial):
        return {
            "partial": callable_identity(fn.func),
            "args": [_value_identity(a) for a in fn.args],
            "keywords": {k: _value_identity(v) for k, v in sorted(fn.keywords.items())},
        }
    digest = hashlib.sha256()
    for part in _code_parts(fn, {}):
        digest.update(part.encode("utf-8"))
        digest.update(b"\0")
    return {"function": _qualified_name(fn), "code_sha256": digest.hexdigest()}


_OWN_PACKAGES = ("vtab_eval", "bit_experts")
_PLAIN = (type(None), type(Ellipsis), bool, int, float, complex, str, bytes)
# Opcodes that read a global name; LOAD_FROM_DICT_OR_GLOBALS exists from Python 3.12.
_GLOBAL_OPS = frozenset({"LOAD_GLOBAL", "LOAD_NAME", "LOAD_FROM_DICT_OR_GLOBALS"})
# Attribute reads (3.12 folds LOAD_METHOD into LOAD_ATTR); EXTENDED_ARG may sit in between.
_ATTR_OPS = frozenset({"LOAD_ATTR", "LOAD_METHOD"})
_BUILTIN_CALLABLES = (
    types.BuiltinFunctionType,
    types.MethodWrapperType,
    types.WrapperDescriptorType,
    types.MethodDescriptorType,
    types.ClassMethodDescriptorType,
)
_MAX_PLAIN_DEPTH = 32  # Deeper constants are treated as non-plain (named by type).
_MAX_WRAPPERS = 32  # Longer decorator chains are not unwrapped.


def _qualified_name(obj) -> str:
    """`module.qualname` of a function or class; `instance of module.Class` for anything else."""
    qualname = getattr(obj, "__qualname__", None)
    if not isinstance(qualname, str):
        return f"instance of {_qualified_name(type(obj))}"
    return f"{getattr(obj, '__module__', None)}.{qualname}"


def _module_of(obj) -> str:
    if isinstance(obj, types.FunctionType):
        # Not `__module__`: functools.wraps copies it from the wrapped function.
        module = obj.__globals__.get("__name__")
    else:
        module = getattr(obj, "__module__", None)
    return module if isinstance(module, str) else ""


def _is_own(obj) -> bool:
    if isinstance(obj, types.ModuleType):
        return obj.__name__.split(".")[0] in _OWN_PACKAGES
    return _module_of(obj).split(".")[0] in _OWN_PACKAGES


def _dtype_text(dtype) -> str:
    return dtype.str if dtype.fields is None else repr(dtype.descr)


def _plain_repr(value, _active: frozenset = frozenset()):
    """Address-free text of a constant built from plain values, or None when it is not one.

    Cycles (a list that holds itself) and nesting deeper than _MAX_PLAIN_DEPTH are not plain.
    """
    if isinstance(value, enum.Enum):
        return f"{_qualified_name(type(value))}.{value.name}"
    if isinstance(value, np.generic):
        item = value.item()
        if isinstance(item, np.generic):  # longdouble: numpy's repr is exact and address-free
            text = repr(item)
        else:  # datetime64 and void items are not plain: their bytes
            text = _plain_repr(item, _active) or value.tobytes().hex()
        return f"numpy.{_dtype_text(value.dtype)}({text})"
    if type(value) is np.ndarray:
        if value.dtype.hasobject:
            text = _plain_repr(value.tolist(), _active)
            return None if text is None else f"ndarray(object, {value.shape}, {text})"
        data = hashlib.sha256(np.ascontiguousarray(value).tobytes()).hexdigest()
        return f"ndarray({_dtype_text(value.dtype)}, {value.shape}, sha256={data})"
    if type(value) in _PLAIN:
        return repr(value)
    if not isinstance(value, (tuple, list, frozenset, set, Mapping)):
        return None
    if id(value) in _active or len(_active) >= _MAX_PLAIN_DEPTH:
        return None
    active = _active | {id(value)}
    if isinstance(value, Mapping):
        pairs = [(_plain_repr(k, active), _plain_repr(v, active)) for k, v in value.items()]
        if any(k is None or v is None for k, v in pairs):
            return None
        return "{" + ", ".join(f"{k}: {v}" for k, v in sorted(pairs)) + "}"
    items = [_plain_repr(v, active) for v in value]
    if None in items:
        return None
    if isinstance(value, (set, frozenset)):
        items.sort()
    return f"{type(value).__name__}({', '.join(items)})"


def _global_names(code: types.CodeType, refs: dict | None = None) -> dict[str, set]:
    """Global names the byte code of `code` (and of code nested in it) reads.

    Maps each name read with LOAD_GLOBAL/LOAD_NAME to the attribute chains read right after it
    (`mod.sub.helper` gives "mod" -> {("sub",), ("sub", "helper")}). Attribute names of other
    objects (`image.shape`) are not globals and never appear.
    """
    refs = {} if refs is None else refs
    chain = None
    for instruction in dis.get_instructions(code):
        if instruction.opname == "EXTENDED_ARG":
            continue
        if instruction.opname in _GLOBAL_OPS:
            chain = (instruction.argval,)
            refs.setdefault(instruction.argval, set())
        elif instruction.opname in _ATTR_OPS and chain is not None:
            chain += (instruction.argval,)
            refs[chain[0]].add(chain[1:])
        else:
            chain = None
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            _global_names(const, refs)
    return refs


def _code_text(code: types.CodeType) -> str:
    """Byte code, names and constants (recursively) of a code object: what tells apart two
    lambdas on one source line, or functions without source."""
    consts = [
        _code_text(c) if isinstance(c, types.CodeType) else (_plain_repr(c) or type(c).__name__)
        for c in code.co_consts
    ]
    return (
        f"code {code.co_name} {code.co_code.hex()} names={code.co_names} "
        f"vars={code.co_varnames} free={code.co_freevars} consts=[{', '.join(consts)}]"
    )


def _code_source(code: types.CodeType) -> str | None:
    """The source block of a code object, read like inspect.getsource does, or None (`exec`,
    interactive code). Not inspect.getsource(fn): it follows `__wrapped__`, and for a code
    object it scans every loaded module."""
    linecache.checkcache(code.co_filename)
    lines = linecache.getlines(code.co_filename)
    if not 0 < code.co_firstlineno <= len(lines):
        return None
    return "".join(inspect.getblock(lines[code.co_firstlineno - 1 :]))


def _class_source(cls: type) -> str | None:
    try:
        return inspect.getsource(cls)
    except (OSError, TypeError):  # Built-in, or defined by `exec`.
        return None


def _wrapped(obj):
    """What a decorator wraps (`__wrapped__`, or a tf.function's `python_function`), or None."""
    if isinstance(obj, (type, types.MethodType)) or not callable(obj):
        return None  # A bound method forwards `__wrapped__` to its function, losing the binding.
    inner = getattr(obj, "__wrapped__", None)
    if inner is None:
        inner = getattr(obj, "python_function", None)
    return inner if callable(inner) and inner is not obj else None


def _unwrapped_once(obj):
    """`_wrapped(obj)` if unwrapping `obj` ends within _MAX_WRAPPERS layers (like
    inspect.unwrap's guard: a Mock has endless `__wrapped__`), else None."""
    chain = [obj]
    while len(chain) <= _MAX_WRAPPERS and (inner := _wrapped(chain[-1])) is not None:
        chain.append(inner)
    return chain[1] if 1 < len(chain) <= _MAX_WRAPPERS else None


def _innermost(obj):
    for _ in range(_MAX_WRAPPERS):
        if isinstance(obj, types.MethodType):
            obj = obj.__func__
        elif (inner := _unwrapped_once(obj)) is not None:
            obj = inner
        else:
            break
    return obj


def _bound_identity(owner) -> str:
    """The object a method is bound to: by value if plain, else by its type's name."""
    if isinstance(owner, type):
        return _qualified_name(owner)
    return _plain_repr(owner) or f"instance of {_qualified_name(type(owner))}"


def _describe(value) -> str:
    """Names a value that is not followed, without its state and without a memory address."""
    if isinstance(value, types.MethodType) or (
        isinstance(value, _BUILTIN_CALLABLES)
        and getattr(value, "__self__", None) is not None
        and not isinstance(value.__self__, types.ModuleType)
    ):
        func = getattr(value, "__func__", value)
        return f"{_qualified_name(func)} bound to {_bound_identity(value.__self__)}"
    if (inner := _unwrapped_once(value)) is not None:
        return _describe(inner)
    return _qualified_name(value)


def _value_parts(label: str, value, seen: dict):
    """Yields what `label` (a global, default, closure cell or class entry) holds."""
    if isinstance(value, types.ModuleType):
        yield f"{label} = module {value.__name__}"
    elif (plain := _plain_repr(value)) is not None:
        yield f"{label} = {plain}"
    elif isinstance(value, functools.partial):
        yield f"{label} = " + json.dumps(callable_identity(value), sort_keys=True)
    elif _is_own(_innermost(value)):
        yield f"{label} ="
        yield from _code_parts(value, seen)
    else:
        yield f"{label} = {_describe(value)}"


def _code_parts(obj, seen: dict):
    """Yields the strings `callable_identity` hashes for the callable `obj` (see there).

    `seen` maps id -> object for everything followed so far: it stops cycles and keeps the
    objects alive, so that an id is never reused during one traversal.
    """
    if id(obj) in seen:
        yield f"seen {_describe(obj)}"
        return
    seen[id(obj)] = obj
    if isinstance(obj, functools.partial):
        yield json.dumps(callable_identity(obj), sort_keys=True)
    elif isinstance(obj, types.MethodType):
        owner = obj.__self__
        yield f"method bound to {_bound_identity(owner)}"
        owner_class = owner if isinstance(owner, type) else type(owner)
        if _plain_repr(owner) is None and _is_own(owner_class):
            yield from _code_parts(owner_class, seen)  # Methods it calls through `self`.
        yield from _code_parts(obj.__func__, seen)
    elif (inner := _unwrapped_once(obj)) is not None:
        if isinstance(obj, types.FunctionType):
            yield "wrapped by"  # A decorator's wrapper function: its own code counts too.
            if _is_own(obj):
                yield from _function_parts(obj, seen)
            else:
                yield f"def {_module_of(obj)}.{obj.__code__.co_name}"
        else:
            yield f"wrapped by {_qualified_name(type(obj))}"
        yield from _code_parts(inner, seen)
    elif isinstance(obj, types.FunctionType):
        yield from _function_parts(obj, seen)
    elif isinstance(obj, type):
        yield from _class_parts(obj, seen)
    elif isinstance(obj, _BUILTIN_CALLABLES):
        yield f"builtin {_describe(obj)}"
    else:  # A callable instance: its class's code counts, its state does not.
        yield f"instance of {_qualified_name(type(obj))}"
        if _is_own(type(obj)):
            yield from _code_parts(type(obj), seen)


def _function_parts(fn: types.FunctionType, seen: dict):
    code = fn.__code__
    yield f"def {_module_of(fn)}.{getattr(code, 'co_qualname', fn.__qualname__)}"
    source = _code_source(code)
    yield source or ""
    if source is None or code.co_name == "<lambda>":
        yield _code_text(code)  # A lambda's source line may hold several definitions.
    for i, value in enumerate(fn.__defaults__ or ()):
        yield from _value_parts(f"default {i}", value, seen)
    for name, value in sorted((fn.__kwdefaults__ or {}).items()):
        yield from _value_parts(f"default {name}", value, seen)
    for name, cell in zip(code.co_freevars, fn.__closure__ or ()):
        try:
            value = cell.cell_contents
        except ValueError:
            yield f"closure {name} empty"
            continue
        yield from _value_parts(f"closure {name}", value, seen)
    namespace = fn.__globals__
    for name, chains in sorted(_global_names(code).items()):
        if name not in namespace:
            continue  # A builtin.
        value = namespace[name]
        yield from _value_parts(name, value, seen)
        if isinstance(value, types.ModuleType) and _is_own(value):
            for chain in sorted(chains):
                yield from _attribute_parts(name, value, chain, seen)


def _attribute_parts(name: str, module: types.ModuleType, chain: tuple, seen: dict):
    """`module.a.b` read by a function, followed while it walks through this project's modules."""
    value = module
    for attribute in chain:
        if not (isinstance(value, types.ModuleType) and _is_own(value)):
            return  # An attribute of a value or of a third-party module: the value counted.
        value = getattr(value, attribute, _MISSING)
    label = ".".join((name, *chain))
    if value is _MISSING:
        yield f"{label} missing"
    else:
        yield from _value_parts(label, value, seen)


_MISSING = object()


def _class_parts(cls: type, seen: dict):
    yield f"class {_qualified_name(cls)}"
    yield _class_source(cls) or ""
    for base in cls.__bases__:
        yield from _value_parts("base", base, seen)
    for name, attr in sorted(vars(cls).items()):
        if isinstance(attr, (staticmethod, classmethod)):
            members = [("", attr.__func__)]
        elif isinstance(attr, property):
            members = [(f".{k}", f) for k in ("fget", "fset", "fdel") if (f := getattr(attr, k))]
        elif isinstance(attr, functools.cached_property):
            members = [("", attr.func)]
        else:
            members = [("", attr)]
        for suffix, member in members:
            if name.startswith("__") and name.endswith("__") and not callable(member):
                continue  # __module__, __doc__, __dict__, dataclass bookkeeping...
            yield from _value_parts(f"{cls.__qualname__}.{name}{suffix}", member, seen)


def _value_identity(value):
    """JSON form of a `functools.partial` bound argument."""
    if value is None or type(value) in (bool, int, float, str):
        return value
    if isinstance(value, (list, tuple)):
        return [_value_identity(v) for v in value]
    if isinstance(value, (np.generic, np.ndarray, enum.Enum)) and (plain := _plain_repr(value)):
        return {"value": plain}  # e.g. "numpy.<i8(3)": the dtype counts, not only the number
    if callable(value):
        return callable_identity(value)
    shown = " ".join(repr(value).split())
    raise ValueError(
        f"cannot fingerprint a bound argument of type {type(value).__name__} "
        f"({shown[:80]}): expected a number, string, bool, None, list, tuple, numpy array or "
        "scalar, or a callable"
    )
