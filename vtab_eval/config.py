"""The evaluation config: one plain nested dict for `run`, `rank`, `audit` and the demo.

The package's one config style (`bit_experts.config_schema`), as the training config has it. A
command turns its flags into this dict in `main()` (`from_flags`) and makes one call
(`vtab_eval.engine`); the library never reads a flag. Named configs (`--config=NAME[:ARG]`,
vtab_eval/configs/) set a protocol; flags given on the command line override them. Every key, its
flag and its meaning: docs/evaluation.md.
"""

from __future__ import annotations

import copy
import re

from absl import flags

from bit_experts import config_schema as cs
from bit_experts.training.strategies import STRATEGIES
from vtab_eval.tasks import SPLIT_NAMES

AUTO = "auto"
# embed.PRECISIONS (not imported: that would import TensorFlow before parsing).
PRECISIONS = ("float32", "bfloat16", "float16", "float32_standardized")
# An image side above this is refused before any work: a batch of 64 RGB float32 images at 2048 px
# is 3 GiB before any activation. Raise it here for larger modules.
MAX_RESOLUTION = 2048


def _one_of(*values):
    return (lambda x: x in values, "one of " + ", ".join(repr(v) for v in values))


_OPT_LIST = (
    lambda x: x is None or (isinstance(x, list) and len(x) > 0),
    "None or a non-empty list",
)
_RATES = (
    lambda x: x is None or (bool(x) and all(cs.is_number(v) and v > 0 for v in x)),
    "None or a list of numbers > 0",
)
_STEPS = (
    lambda x: x is None or (bool(x) and all(cs.is_int(v) and v > 0 for v in x)),
    "None or a list of ints >= 1",
)
_SIDE = (
    lambda x: cs.is_int(x) and 0 <= x <= MAX_RESOLUTION,
    f"an int in [0, {MAX_RESOLUTION}] (vtab_eval.config.MAX_RESOLUTION; raise it for larger images)",
)
_POSITIVE = (lambda x: cs.is_number(x) and x > 0, "a number > 0")
_NON_NEGATIVE = (lambda x: cs.is_number(x) and x >= 0, "a number >= 0")
_PROBABILITY = (lambda x: cs.is_number(x) and 0 <= x <= 1, "a number in [0, 1]")
_LEVEL = (lambda x: cs.is_number(x) and 0 < x < 1, "a number in (0, 1)")
_TASKS = (lambda x: isinstance(x, list) and cs.is_str_list(x), "a list of task names")
_OPT_NAMES = (lambda x: x is None or cs.is_str_list(x), "None or a list of names")
_NAMES = (lambda x: cs.is_str_list(x) and len(x) > 0, "a non-empty list of names")
_ANY_STR = (lambda x: isinstance(x, str), "a string")
_SEEDS = (
    lambda x: x is None or (isinstance(x, list) and all(cs.is_int(s) for s in x)),
    "None or a list of integers",
)

# Every key: (default, rule); the rule is config_schema's (check, what was expected).
_KEYS = {
    "collection": (None, cs.OPT_STR),  # collection dir, manifest.json or a text file of handles
    "tasks": ([], _TASKS),  # names, folder:PATH or suites (vtab1k, table3, all)
    "output_dir": (None, cs.OPT_STR),
    "output_json": (None, cs.OPT_STR),  # rank: the ranking (or shard report) JSON
    "plot_png": (None, cs.OPT_STR),  # rank: a bar plot of the scores
    "data_dir": (None, cs.OPT_STR),  # TFDS data directory
    "cache_dir": (None, cs.OPT_STR),  # feature cache; None: OUT/feature_cache
    "memo_dir": (None, cs.OPT_STR),  # fine-tune memo; None: OUT/finetunes
    "skip_bad_images": (False, cs.BOOL),
    "seed": (0, cs.SEED),
    "deterministic": (True, cs.BOOL),
    "selection": {
        "selectors": (["knn"], _NAMES),
        "split": ("train800val200", _one_of(*SPLIT_NAMES)),
        "resolution": (0, _SIDE),  # 0: each module at its own (metadata "resolution", else 224)
        "precision": ("float32", _one_of(*PRECISIONS)),
        "batch_size": (64, cs.INT_MIN1),
        "include_baseline": (True, cs.BOOL),
        "cache_only": (False, cs.BOOL),
        "verify_checksums": (True, cs.BOOL),
        "fallback": ("none", _one_of("none", "baseline")),
        "fallback_confidence": (0.9, _PROBABILITY),
        "confidence_level": (0.95, _LEVEL),
        "n_resamples": (9999, cs.INT_MIN1),
        "num_shards": (1, cs.INT_MIN1),
        "shard_index": (0, cs.INT_MIN0),
    },
    "finetune": {
        "sweep": (AUTO, cs.STR),  # a preset, or auto: the task's suite's (protocol.default_sweep)
        "learning_rates": (None, _RATES),  # with steps: a grid sweep given by flags
        "steps": (None, _STEPS),
        "batch_size": (0, cs.INT_MIN0),  # a flags sweep's; 0: one that fits (sweeps.fitting_batch)
        "resolution": (0, _SIDE),  # 0: the preset's; flags sweep: the modules' (checks.module_side)
        "random_search_size": (36, cs.INT_MIN1),
        "strategy": ("default", _one_of(*STRATEGIES)),
        "tpu": ("", _ANY_STR),
        "save_models": (False, cs.BOOL),
    },
    "executor": {  # where fine-tunes and embeddings run (docs/scale.md)
        "name": ("local", _one_of("local", "ray")),
        "ray_address": ("", _ANY_STR),  # "": a local Ray instance; "auto", "ray://host:port"
        "cpus_per_item": (1.0, _POSITIVE),
        "gpus_per_item": (0.0, _NON_NEGATIVE),  # fractions share a GPU
        "max_retries": (3, cs.INT_MIN0),  # of an item whose worker process died
        "threads_per_item": (0, cs.INT_MIN0),  # 0: the cores the command may use
    },
    "protocol": {
        "num_selections": (1, cs.INT_MIN1),
        "num_retrains": (1, cs.INT_MIN1),
        "scheme": (AUTO, _one_of(AUTO, "vtab1k", "full")),
        "search": (AUTO, _one_of(AUTO, "per_selection", "once")),
        "aggregate": (AUTO, _one_of(AUTO, "median", "mean")),
    },
    "audit": {
        "seeds": (None, _SEEDS),  # None: 0, 1, 2 (quick: 0, 1)
        "proxies": (None, _OPT_LIST),  # None: every feature proxy
        "probe_policies": (None, _OPT_NAMES),  # None: every probe policy whose proxy is audited
        "reference": ("knn", cs.STR),
        "quick": (False, cs.BOOL),
        "upstream_dir": (None, cs.OPT_STR),
        "bank_dir": (None, cs.OPT_STR),
    },
}


def _column(table, index):
    return {k: _column(v, index) if isinstance(v, dict) else v[index] for k, v in table.items()}


DEFAULTS, SCHEMA = _column(_KEYS, 0), _column(_KEYS, 1)


def resolve(user):
    """Fills in `DEFAULTS` and checks every key; returns the complete config (a new dict).

    Besides each value's type and range: every selector is registered (`vtab_eval.selectors`),
    the fallback "baseline" has B ranked and a selector with per-image hits to apply to, the
    sweep is a preset or "auto" and the shard index is below the shard count. Nothing is read or
    written.
    Raises ValueError: one line naming the first bad key, what was expected and what was given.
    """
    from vtab_eval import selectors, sweeps

    config = cs.merge(DEFAULTS, user, "")
    cs.check_schema(config, SCHEMA)
    selection, sweep = config["selection"], config["finetune"]["sweep"]
    known = selectors.names()
    unknown = [m for m in selection["selectors"] if m not in known]
    cs.require(not unknown, f"selection.selectors: unknown {unknown}; expected some of {known}")
    known = (AUTO, *sweeps.PRESETS)
    cs.require(sweep in known, f"finetune.sweep must be one of {known}, got {sweep!r}")
    if selection["fallback"] == "baseline":  # it applies to the selectors with per-image hits
        rows, chosen = selectors.names(rows=True), selection["selectors"]
        cs.require(
            any(m in rows for m in chosen),
            f"selection.fallback 'baseline' needs per-image correctness, which "
            f"{', '.join(map(repr, chosen))} lack{'s' if len(chosen) == 1 else ''}; "
            f"use one of {rows}",
        )
        cs.require(
            selection["include_baseline"],
            "selection.fallback 'baseline' needs the baseline B ranked with the experts: "
            "selection.include_baseline (--include_baseline) must be true",
        )
    cs.require(
        selection["shard_index"] < selection["num_shards"],
        f"selection.shard_index must be in [0, num_shards={selection['num_shards']}), got "
        f"{selection['shard_index']}",
    )
    return config


def make(name=None, **changes):
    """A resolved config: the named config `name` (or `DEFAULTS` alone), then `changes`: top-level
    keys, a section's value a partial dict of that section, e.g. `make("local", collection=C,
    tasks=["folder:T"], finetune={"sweep": "quick"})`. ValueError: a bad key or value (one line).
    """
    config = resolve(load(name) if name else {})
    return resolve(cs.merge(config, changes, ""))


def load(name):
    """The named config `name[:arg]` (vtab_eval/configs/ or a .py file), unresolved."""
    return cs.load_config(name, "vtab_eval.configs")


def set_key(config, key, value):
    """`config` (a copy) with the dotted `key` ("selection.batch_size") set to `value`."""
    config = copy.deepcopy(config)
    node = config
    *parents, leaf = key.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
    return config


def get_key(config, key):
    """The value of the dotted `key` in `config`."""
    for part in key.split("."):
        config = config[part]
    return config


# Per command: flag -> (config key, help). A flag's type and default come from DEFAULTS at its key.
_COMMON = {
    "collection": ("collection", "Collection dir, manifest.json or text file of handles."),
    "data_dir": ("data_dir", "TFDS data directory."),
    "cache_dir": ("cache_dir", "Feature cache; default OUT/feature_cache (rank: beside the JSON)."),
    "deterministic": ("deterministic", "TF op determinism and seeded RNGs (--nodeterministic)."),
    "skip_bad_images": ("skip_bad_images", "Leave out undecodable folder images with a warning."),
}
EXECUTOR_FLAGS = {
    "executor": ("executor.name", "Where fine-tunes and embeddings run: local or ray."),
    "ray_address": ("executor.ray_address", "Ray cluster: empty (start one here), auto, ray://."),
    "cpus_per_item": ("executor.cpus_per_item", "Ray CPUs per fine-tune or embedding."),
    "gpus_per_item": ("executor.gpus_per_item", "Ray GPUs per item; fractions share a GPU."),
    "max_retries": ("executor.max_retries", "Ray retries of an item whose worker died."),
    "threads_per_item": (
        "executor.threads_per_item",
        "TensorFlow threads of each item; 0: the cores this command may use.",
    ),
}
_SWEEP = {
    "sweep": (
        "finetune.sweep",
        "Sweep preset: vtab_lightweight, bit_hyperrule, local, quick, random_search, demo, "
        "demo_quick; auto: random_search for table3 tasks, local for the others.",
    ),
    "learning_rates": ("finetune.learning_rates", "Sweep given by flags: learning rates."),
    "steps": ("finetune.steps", "Sweep given by flags: step counts (with --learning_rates)."),
    "batch_size": (
        "finetune.batch_size",
        "Batch size of a sweep given by flags; 0: one that fits the image side and the task.",
    ),
    "resolution": (
        "finetune.resolution",
        "Fine-tuning image side; 0: the preset's (a sweep given by flags: the modules').",
    ),
    "selection_resolution": ("selection.resolution", "Ranking image side; 0: module metadata."),
    "strategy": ("finetune.strategy", "tf.distribute strategy for fine-tuning."),
}
FLAGS = {
    "run": {
        **_COMMON,
        **EXECUTOR_FLAGS,
        **_SWEEP,
        "tasks": ("tasks", "Task names, folder:PATH, or a suite: vtab1k, table3."),
        "output_dir": ("output_dir", "Results, rankings, plots and the report go here."),
        "selectors": ("selection.selectors", "Selection methods side by side (registry names)."),
        "random_search_size": (
            "finetune.random_search_size",
            "Settings random_search draws from this package's own space (paper: 36, no space).",
        ),
        "num_selections": ("protocol.num_selections", "Repeated selections per task (paper: 10)."),
        "num_retrains": ("protocol.num_retrains", "Final fine-tunes per selection (paper: 3)."),
        "scheme": ("protocol.scheme", "Splits: vtab1k, full; auto: full for table3 tasks."),
        "search": ("protocol.search", "per_selection or once; auto: once for table3 tasks."),
        "aggregate": ("protocol.aggregate", "median or mean of a task's outcomes; auto: suite's."),
        "tpu": ("finetune.tpu", "TPU address for --strategy=tpu."),
        "seed": ("seed", "Base seed of every selection, random search and fine-tune."),
        "include_baseline": ("selection.include_baseline", "Rank B together with the experts."),
        "fallback": (
            "selection.fallback",
            "baseline: selectors with per-image hits pick B unless their best expert beats it.",
        ),
        "fallback_confidence": ("selection.fallback_confidence", "Probability to beat B with."),
        "save_models": ("finetune.save_models", "Also export every final fine-tune (OUT/models)."),
    },
    "rank": {
        **_COMMON,
        **EXECUTOR_FLAGS,
        "dataset": ("tasks", "Task name (python -m vtab_eval.list_tasks) or folder:PATH."),
        "output_json": ("output_json", "Where to write the ranking (or shard report) JSON."),
        "method": ("selection.selectors", "Selection method (a registered selector)."),
        "fallback": ("selection.fallback", "baseline: pick B unless the best expert beats it."),
        "fallback_confidence": ("selection.fallback_confidence", "Probability to beat B with."),
        "split": ("selection.split", "Task split the selector looks at."),
        "resolution": ("selection.resolution", "Image side for every module; 0: each its own."),
        "precision": ("selection.precision", "float32, bfloat16, float16, float32_standardized."),
        "batch_size": ("selection.batch_size", "Images per module call."),
        "seed": ("seed", "Seed of the random selector and the intervals."),
        "include_baseline": ("selection.include_baseline", "Rank B with the experts."),
        "num_shards": ("selection.num_shards", "Split feature extraction over this many workers."),
        "shard_index": ("selection.shard_index", "This worker's shard, in [0, num_shards)."),
        "cache_only": ("selection.cache_only", "Never compute features; missing: left out."),
        "plot_png": ("plot_png", "Also write a plot of the scores here."),
        "verify_checksums": ("selection.verify_checksums", "Check module checksums."),
    },
    "audit": {
        **_COMMON,
        **EXECUTOR_FLAGS,
        **_SWEEP,
        "tasks": ("tasks", "Task names, folder:PATH, or a suite (as vtab_eval.run)."),
        "output_dir": ("output_dir", "audit.md, audit.json and plots/ go here."),
        "bank_dir": ("audit.bank_dir", "Write the offline world's task bank here and audit it."),
        "seeds": ("audit.seeds", "Base seeds (>= 3; default 0,1,2; --quick: 0,1)."),
        "proxies": ("audit.proxies", "Feature proxies to audit; default: every one."),
        "probe_policies": (
            "audit.probe_policies",
            "Probe policies to audit (empty: none); default: each whose proxy is audited.",
        ),
        "reference": ("audit.reference", "The proxy other policies' regret is paired against."),
        "fallback_confidence": ("selection.fallback_confidence", "Confidence of the fallback."),
        "quick": ("audit.quick", "Tiny mode: 1-2 seeds allowed, quick sweep (smoke tests)."),
        "memo_dir": ("memo_dir", "Fine-tune memo; default OUT/finetunes."),
        "upstream_dir": ("audit.upstream_dir", "Upstream work dir: each expert on its slice."),
    },
}
_CONFIG_HELP = (
    "Named config (vtab_eval/configs/: vtab1k, table3, local, demo) or FILE.py[:ARG]; flags given "
    "here override it."
)
_SINGLE = {"dataset", "method"}  # string flags that fill a one-item list
_LISTS = {
    "learning_rates": float,
    "steps": int,
    "seeds": int,
    "proxies": str,
    "probe_policies": str,
}
_DEFINE = {bool: flags.DEFINE_bool, int: flags.DEFINE_integer, float: flags.DEFINE_float}


def define_flags(command, flag_values=None, names=None):
    """Defines `command`'s flags (`FLAGS[command]`) and `--config` on absl's flag values; `names`:
    only these flags, without `--config` (a command with flags of its own, as the demo)."""
    flag_values = flags.FLAGS if flag_values is None else flag_values
    flags.disclaim_key_flags()  # the calling command's --help lists them, not this module's
    if names is None:
        flags.DEFINE_string("config", None, _CONFIG_HELP, flag_values=flag_values)
    for name, (key, help_text) in FLAGS[command].items():
        if names is not None and name not in names:
            continue
        default = get_key(DEFAULTS, key)
        define = _DEFINE.get(type(default), flags.DEFINE_string)
        if name in _SINGLE:
            default = default[0] if default else None
        elif name in _LISTS or isinstance(default, list):
            define = flags.DEFINE_list
        define(name, default, help_text, flag_values=flag_values)


def from_flags(command, flag_values=None):
    """The resolved config of `command`'s flags: `--config` (if given) over `DEFAULTS`, then every
    flag given on the command line. ValueError: a bad value or key, one line naming the flag."""
    flag_values = flags.FLAGS if flag_values is None else flag_values
    config = load(flag_values.config) if flag_values.config else {}
    for name, (key, _) in FLAGS[command].items():
        if not flag_values[name].present:
            continue
        value = flag_values[name].value
        if name in _SINGLE:
            value = [value]
        elif name in _LISTS and value:
            try:
                value = [_LISTS[name](v) for v in value]
            except ValueError:
                expected = "integers" if _LISTS[name] is int else "numbers"
                raise ValueError(f"--{name}={','.join(value)}: expected {expected}") from None
        config = set_key(config, key, value)
    try:
        return resolve(config)
    except ValueError as err:  # the key's flag beside it: "selection.batch_size (--batch_size)"
        message, key = str(err), re.match(r"bad config: ([\w.]+)", str(err))
        names = [n for n, (k, _) in FLAGS[command].items() if key and k == key[1]]
        message = message.replace(key[1], f"{key[1]} (--{names[0]})", 1) if names else message
        raise ValueError(message) from None
