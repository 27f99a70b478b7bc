"""The evaluation config (`vtab_eval.config`): defaults, checks, named configs, flags."""

import copy
import importlib
import pathlib
import re

import pytest
from absl import flags

from vtab_eval import config, files, selectors

CONFIGS = pathlib.Path(config.__file__).parent / "configs"
NAMED = sorted(p.stem for p in CONFIGS.glob("*.py") if p.stem != "__init__")
# Flags a command defines beside the config's (`define_flags` of its module).
COMMAND_ONLY = {
    "run": {"config", "report_only", "dry_run", "compare"},
    "rank": {"config"},
    "audit": {"config", "rescore"},
}


def _leaves(tree, path=""):
    return {
        p
        for k, v in tree.items()
        for p in (_leaves(v, f"{path}{k}.") if isinstance(v, dict) else {path + k})
    }


def _flag_values(command, *argv):
    """A fresh FlagValues with `command`'s flags, parsed from `argv` (the global FLAGS untouched)."""
    values = flags.FlagValues()
    config.define_flags(command, values)
    values([command, *argv])
    return values


def test_defaults_resolve_and_every_key_has_a_rule():
    before = copy.deepcopy(config.DEFAULTS)
    resolved = config.make()
    assert resolved == config.DEFAULTS and resolved is not config.DEFAULTS
    resolved["selection"]["selectors"].append("random")
    assert config.DEFAULTS == before  # a resolved config is a copy
    assert _leaves(config.DEFAULTS) == _leaves(config.SCHEMA)
    # The paper's VTAB-1k protocol is named; the bare defaults pick each suite's sweep: the cheap
    # local setting for VTAB-1k and folder tasks, the table-3 search for table-3 tasks.
    assert resolved["finetune"]["sweep"] == "auto"
    assert resolved["selection"]["split"] == "train800val200"


def test_changes_apply_per_section_and_copies_are_kept():
    made = config.make(tasks=["t"], finetune={"sweep": "quick"}, protocol={"num_retrains": 3})
    assert made["tasks"] == ["t"] and made["finetune"]["sweep"] == "quick"
    assert made["finetune"]["batch_size"] == config.DEFAULTS["finetune"]["batch_size"]
    assert made["protocol"]["num_retrains"] == 3 and made["protocol"]["num_selections"] == 1
    changed = config.set_key(made, "selection.batch_size", 8)
    assert config.get_key(changed, "selection.batch_size") == 8
    assert made["selection"]["batch_size"] == config.DEFAULTS["selection"]["batch_size"]


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"selction": {}}, r"^unknown config key 'selction'; did you mean 'selection'"),
        ({"finetune": {"stesp": [1]}}, r"^unknown config key 'finetune.stesp'.*'steps'"),
        ({"finetune": {"batch_size": -1}}, r"^bad config: finetune.batch_size must be an int >= 0"),
        ({"seed": -1}, r"^bad config: seed must be an int in \[0, 2\*\*31 - 1\], got -1$"),
        ({"deterministic": 1}, r"^bad config: deterministic must be true or false, got 1$"),
        ({"selection": {"split": "train900"}}, r"^bad config: selection.split must be one of"),
        ({"protocol": {"scheme": "x"}}, r"^bad config: protocol.scheme must be one of"),
        ({"finetune": {"sweep": "fast"}}, r"^bad config: finetune.sweep must be one of"),
        (
            {"selection": {"num_shards": 2, "shard_index": 2}},
            r"^bad config: selection.shard_index must be in \[0, num_shards=2\), got 2$",
        ),
        ({"tasks": "cifar100"}, r"^bad config: tasks must be a list of task names"),
    ],
)
def test_a_bad_key_or_value_is_one_line_naming_the_key(changes, message):
    with pytest.raises(ValueError, match=message) as info:
        config.make(**changes)
    assert "\n" not in str(info.value)


def test_an_unknown_selector_is_refused_and_a_registered_one_accepted(monkeypatch):
    with pytest.raises(ValueError) as info:
        config.make(selection={"selectors": ["knn", "oracle"]})
    assert str(info.value).startswith("bad config: selection.selectors: unknown ['oracle']")
    assert "knn" in str(info.value) and "\n" not in str(info.value)
    # The check reads the registry (no list of methods of its own): a proxy registered elsewhere
    # is accepted as it is.
    real = selectors.names
    monkeypatch.setattr(selectors, "names", lambda kind=None: [*real(kind), "oracle"])
    assert config.make(selection={"selectors": ["oracle"]})["selection"]["selectors"] == ["oracle"]


def test_max_resolution_is_refused_in_one_line():
    for key in ("selection", "finetune"):
        assert config.make(**{key: {"resolution": config.MAX_RESOLUTION}})
        with pytest.raises(ValueError) as info:
            config.make(**{key: {"resolution": config.MAX_RESOLUTION + 1}})
        assert str(info.value) == (
            f"bad config: {key}.resolution must be an int in [0, {config.MAX_RESOLUTION}] "
            "(vtab_eval.config.MAX_RESOLUTION; raise it for larger images), "
            f"got {config.MAX_RESOLUTION + 1}"
        )
    values = _flag_values("run", "--selection_resolution=4096")
    with pytest.raises(ValueError) as info:
        config.from_flags("run", values)
    assert str(info.value).startswith(
        f"bad config: selection.resolution (--selection_resolution) must be an int in "
        f"[0, {config.MAX_RESOLUTION}]"
    )


# --- named configs: one battery over vtab_eval/configs/ ------------------------------------------


def test_the_documented_named_configs_exist():
    # `--config`'s help and the config docstring name these four.
    assert {"demo", "local", "table3", "vtab1k"} <= set(NAMED)


@pytest.mark.parametrize("name", NAMED)
def test_every_named_config_resolves_and_says_how_to_run_it(name):
    resolved = config.make(name)
    loaded = config.load(name)
    # Every key the file sets survives resolution as it set it; the rest are the defaults.
    for key in _leaves(loaded):
        assert config.get_key(resolved, key) == config.get_key(loaded, key), key
    for key in _leaves(config.DEFAULTS) - _leaves(loaded):
        assert config.get_key(resolved, key) == config.get_key(config.DEFAULTS, key), key
    # Its docstring gives the command, the expected runtime and the expected result.
    doc = importlib.import_module(f"vtab_eval.configs.{name}").__doc__
    assert "Command" in doc and "Expected runtime" in doc and "result" in doc, name
    commands = re.findall(r"python -m (vtab_eval\.\w+)((?: --\S+)*)", doc)
    assert commands, f"{name}: no `python -m vtab_eval.<command>` line"
    for module, args in commands:
        command = module.split(".")[1]
        given = {a.split("=")[0].lstrip("-") for a in args.split()}
        if command in config.FLAGS:
            assert given <= set(config.FLAGS[command]) | COMMAND_ONLY[command], (name, given)
        if "config" in given:
            assert f"--config={name}" in args, (name, args)


@pytest.mark.parametrize("name", ["vtab1k:quick", "demo:quick"])
def test_variants_resolve(name):
    base, variant = config.make(name.split(":")[0]), config.make(name)
    assert variant != base
    assert config.get_key(variant, "finetune.sweep") in ("quick", "demo_quick")


@pytest.mark.parametrize("name", ["vtab1k:huge", "demo:huge", "local:x", "table3:x"])
def test_an_unknown_variant_is_refused(name):
    with pytest.raises(ValueError, match=r"unknown variant 'huge'|unknown variant 'x'"):
        config.make(name)


def test_the_paper_protocols_are_what_their_docstrings_say():
    vtab = config.make("vtab1k")
    assert vtab["tasks"] == ["vtab1k"] and vtab["finetune"]["sweep"] == "vtab_lightweight"
    assert (vtab["protocol"]["num_selections"], vtab["protocol"]["num_retrains"]) == (10, 3)
    table3 = config.make("table3")
    assert table3["protocol"]["num_retrains"] == 30 and table3["protocol"]["search"] == "once"
    assert table3["finetune"]["random_search_size"] == 36


def test_a_config_file_of_ones_own(tmp_path):
    path = tmp_path / "mine.py"
    path.write_text(
        "def get_config(arg=None):\n"
        "    return {'seed': int(arg or 0), 'finetune': {'sweep': 'quick'}}\n"
    )
    made = config.make(f"{path}:7")
    assert made["seed"] == 7 and made["finetune"]["sweep"] == "quick"
    with pytest.raises(ValueError, match=r"unknown config 'nope'.*\['demo', 'local', 'table3'"):
        config.make("nope")
    with pytest.raises(FileNotFoundError, match="missing.py"):
        config.make(str(tmp_path / "missing.py"))
    for text, error in [
        ("def get_config(arg: return 1\n", r"SyntaxError: .* \(line 1\)"),
        ("import no_such_module_here\n", "ModuleNotFoundError: No module named"),
        ("x = 1 / 0\n", "ZeroDivisionError: division by zero"),
    ]:
        path.write_text(text)
        with pytest.raises(ValueError, match=f"^config file .*mine.py' cannot be loaded: {error}"):
            config.make(str(path))


# --- flags -------------------------------------------------------------------------------------


def test_define_flags_leaves_the_global_flags_alone():
    before = set(flags.FLAGS)
    values = _flag_values("rank")
    assert set(flags.FLAGS) == before
    assert {"config", *config.FLAGS["rank"]} <= set(values)
    for command, table in config.FLAGS.items():
        for name, (key, help_text) in table.items():
            assert help_text and config.get_key(config.DEFAULTS, key) is not ..., (command, name)


@pytest.mark.parametrize("command", sorted(config.FLAGS))
def test_no_flag_given_is_the_defaults(command):
    assert config.from_flags(command, _flag_values(command)) == config.make()


def test_only_the_flags_given_override_a_named_config():
    # --sweep and --num_retrains are not given: the named config's values stay, although the
    # flags' own defaults (auto, 1) differ.
    values = _flag_values("run", "--config=vtab1k", "--seed=5", "--selectors=knn")
    made = config.from_flags("run", values)
    named = config.make("vtab1k")
    assert made["finetune"]["sweep"] == named["finetune"]["sweep"] == "vtab_lightweight"
    assert made["protocol"]["num_retrains"] == named["protocol"]["num_retrains"] == 3
    assert made["seed"] == 5 and made["selection"]["selectors"] == ["knn"]
    assert made == config.make("vtab1k", seed=5, selection={"selectors": ["knn"]})
    # A flag given with its default value still overrides the named config.
    values = _flag_values("run", "--config=vtab1k", "--sweep=local", "--num_retrains=1")
    made = config.from_flags("run", values)
    assert made["finetune"]["sweep"] == "local" and made["protocol"]["num_retrains"] == 1


def test_flags_become_the_configs_values():
    made = config.from_flags(
        "run",
        _flag_values(
            "run",
            "--tasks=cifar100,folder:/x",
            "--learning_rates=0.1,0.01",
            "--steps=3",
            "--selection_resolution=16",
            "--nodeterministic",
            "--aggregate=mean",
            "--selectors=knn,random",
            "--fallback=baseline",
            "--fallback_confidence=0.8",
        ),
    )
    assert made["selection"]["fallback"] == "baseline"
    assert made["selection"]["fallback_confidence"] == 0.8
    assert made["tasks"] == ["cifar100", "folder:/x"]
    assert made["finetune"]["learning_rates"] == [0.1, 0.01] and made["finetune"]["steps"] == [3]
    assert made["selection"]["resolution"] == 16 and made["finetune"]["resolution"] == 0
    assert made["deterministic"] is False and made["protocol"]["aggregate"] == "mean"
    ranked = config.from_flags(
        "rank", _flag_values("rank", "--dataset=dtd", "--method=ncm", "--resolution=32")
    )
    assert ranked["tasks"] == ["dtd"] and ranked["selection"]["selectors"] == ["ncm"]
    assert ranked["selection"]["resolution"] == 32 and ranked["finetune"]["resolution"] == 0
    audited = config.from_flags("audit", _flag_values("audit", "--seeds=0,1,2", "--quick"))
    assert audited["audit"]["seeds"] == [0, 1, 2] and audited["audit"]["quick"] is True


@pytest.mark.parametrize(
    "command, argv, message",
    [
        ("run", ["--batch_size=-1"], "bad config: finetune.batch_size (--batch_size) must be"),
        ("rank", ["--batch_size=0"], "bad config: selection.batch_size (--batch_size) must be"),
        ("rank", ["--method=oracle"], "bad config: selection.selectors (--method): unknown"),
        ("run", ["--selectors=knn,oracle"], "bad config: selection.selectors (--selectors): "),
        ("run", ["--sweep=fast"], "bad config: finetune.sweep (--sweep) must be one of"),
        ("rank", ["--split=train900"], "bad config: selection.split (--split) must be one of"),
        (
            "rank",
            ["--num_shards=2", "--shard_index=2"],
            "bad config: selection.shard_index (--shard_index) must be in [0, num_shards=2)",
        ),
        ("run", ["--learning_rates=abc", "--steps=3"], "--learning_rates=abc: expected numbers"),
        (
            "run",
            ["--selectors=random,baseline", "--fallback=baseline"],
            "bad config: selection.fallback (--fallback) 'baseline' needs per-image correctness, "
            "which 'random', 'baseline' lack; use one of ('knn', ",
        ),
        (
            "run",
            ["--fallback=baseline", "--noinclude_baseline"],
            "bad config: selection.fallback (--fallback) 'baseline' needs the baseline B ranked",
        ),
        ("run", ["--fallback_confidence=2"], "bad config: selection.fallback_confidence (--fa"),
        ("audit", ["--seeds=0,x"], "--seeds=0,x: expected integers"),
    ],
)
def test_a_bad_flag_is_one_line_naming_the_flag(command, argv, message):
    with pytest.raises(ValueError) as info:
        config.from_flags(command, _flag_values(command, *argv))
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_output_paths(tmp_path):
    made = config.make(output_dir=str(tmp_path / "out"))
    assert files.output_paths(made) == (
        str(tmp_path / "out"),
        str(tmp_path / "out" / "finetunes"),
        str(tmp_path / "out" / "feature_cache"),
    )
    url = config.make(output_dir="ram://x/out", memo_dir="ram://y/memo")
    assert files.output_paths(url) == ("ram://x/out", "ram://y/memo", "ram://x/out/feature_cache")
    for key in ("output_dir", "memo_dir", "cache_dir"):
        unknown = config.make(**{"output_dir": str(tmp_path), key: "mylocal://x"})
        with pytest.raises(ValueError, match=f"^--{key}: 'mylocal://x': no tf.io.gfile filesystem"):
            files.output_paths(unknown)
