"""Ranking identity and bad input (issue 13): stale features, per-module resolution, modules that
cannot be fine-tuned, and flag values refused in one line before any work."""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import vtab_eval_toys as toys

from vtab_eval import checks, config, engine, module_contract

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_SPEC = tf.TensorSpec([None, None, None, 3], tf.float32)


def _rank(collection, task, output_json, **changes):
    """What `python -m vtab_eval.rank` does, in this process: its config (`changes`: keys of the
    "selection" section or top-level keys), then `engine.rank`."""
    selection = {k: changes.pop(k) for k in list(changes) if k in config.DEFAULTS["selection"]}
    made = config.make(
        collection=collection, tasks=[task], output_json=output_json, selection=selection, **changes
    )
    return engine.rank(made, lambda message: None)


def _save_sized(path, side):
    metadata = {"name": f"sized{side}", "kind": "full", "resolution": side}
    return toys.save_toy_module(path, "sized", metadata, side=side)


class _SignatureOnly(tf.Module):
    def __init__(self):
        super().__init__()
        self.w = tf.Variable(np.eye(3, 4, dtype=np.float32))

    @tf.function(input_signature=[_SPEC])
    def serve(self, images):
        return {"features": tf.matmul(tf.reduce_mean(images, axis=[1, 2]), self.w)}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("rank_inputs")
    data = toys.make_colour_folder(str(root / "data"), per_class=8)
    return root, data


def _scores(result):
    return {e["handle"]: e["score"] for e in result["experts"]}


def test_ranking_does_not_depend_on_handle_order(setup):
    root, data = setup
    small, large = _save_sized(str(root / "m32"), 32), _save_sized(str(root / "m64"), 64)
    results = []
    for name, order in (("ab", [small, large]), ("ba", [large, small])):
        handles = toys.write_handle_list(str(root / f"{name}.txt"), order)
        results.append(_rank(handles, f"folder:{data}", str(root / f"{name}.json")))
    for result in results:
        assert result["left_out"] == [] and result["resolution"] is None
        assert {e["handle"]: e["resolution"] for e in result["experts"]} == {
            small: 32,
            large: 64,
        }
    assert _scores(results[0]) == _scores(results[1])
    # A forced resolution applies to every module (and the 64-px one cannot take 32 px).
    forced = _rank(str(root / "ab.txt"), f"folder:{data}", str(root / "forced.json"), resolution=32)
    assert forced["resolution"] == 32 and [e["handle"] for e in forced["left_out"]] == [large]


def test_changed_folder_is_re_embedded_and_rescored(tmp_path):
    data = toys.make_colour_folder(str(tmp_path / "data"), per_class=8)
    colour = toys.save_toy_module(str(tmp_path / "colour"), "colour")
    handles = toys.write_handle_list(str(tmp_path / "pool.txt"), [colour])
    args = dict(resolution=16, cache_dir=str(tmp_path / "cache"))
    first = _rank(handles, f"folder:{data}", str(tmp_path / "1.json"), **args)
    again = _rank(handles, f"folder:{data}", str(tmp_path / "2.json"), **args)
    assert first["cache"]["computed"] == [colour] and again["cache"]["cached"] == [colour]
    # Images of class 1's colour added to class 0's folder: 1-NN now confuses the two.
    other = toys.make_colour_folder(str(tmp_path / "other"), per_class=6, seed=5)
    for i in range(6):
        shutil.copy(
            os.path.join(other, "train", "class1", f"{i:03d}.png"),
            os.path.join(data, "train", "class0", f"added{i}.png"),
        )
    third = _rank(handles, f"folder:{data}", str(tmp_path / "3.json"), **args)
    assert third["cache"]["computed"] == [colour] and third["cache"]["cached"] == []
    assert third["num_images"] > first["num_images"]
    assert _scores(third)[colour] < _scores(first)[colour]


def test_modules_that_cannot_be_fine_tuned_are_ranked_but_never_selected(setup, tmp_path):
    import keras

    _, data = setup
    exported = str(tmp_path / "keras3_export")
    model = keras.Sequential(
        [keras.Input((None, None, 3)), keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(4)]
    )
    model.export(exported, verbose=False)
    signature_only = str(tmp_path / "signature_only")
    module = _SignatureOnly()
    tf.saved_model.save(module, signature_only, signatures={"serving_default": module.serve})
    colour = toys.save_toy_module(str(tmp_path / "colour"), "colour")
    assert module_contract.finetunable(colour) == (True, "")
    for path in (exported, signature_only):
        ok, reason = module_contract.finetunable(path)
        assert not ok and "no __call__" in reason
    assert "Keras 3" in module_contract.finetunable(exported)[1]

    handles = toys.write_handle_list(str(tmp_path / "pool.txt"), [exported, signature_only, colour])
    result = _rank(handles, f"folder:{data}", str(tmp_path / "r.json"), resolution=16)
    experts = {e["handle"]: e for e in result["experts"]}
    assert all(e["status"] == "ok" for e in experts.values())  # all three ranked
    assert experts[exported]["finetunable"] is False and experts[exported]["finetunable_reason"]
    assert experts[colour]["finetunable"] is True and "finetunable_reason" not in experts[colour]
    assert result["selected"] == colour
    # With nothing fine-tunable, the ranking stops with one line naming the modules.
    only = toys.write_handle_list(str(tmp_path / "only.txt"), [exported])
    with pytest.raises(ValueError, match="no scored expert can be fine-tuned.*keras3_export"):
        _rank(only, f"folder:{data}", str(tmp_path / "o.json"), resolution=16)


def _refused(setup, match, **kwargs):
    root, data = setup
    handles = toys.write_handle_list(str(root / "none.txt"), [str(root / "never_loaded")])
    output = kwargs.pop("output_json", str(root / "refused" / "r.json"))
    with pytest.raises(ValueError, match=match) as info:
        _rank(handles, f"folder:{data}", output, **kwargs)
    assert "\n" not in str(info.value)
    assert not os.path.isfile(output)  # nothing written


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(batch_size=0), r"^bad config: selection.batch_size must be an int >= 1, got 0$"),
        (dict(batch_size=-3, cache_only=True), "^bad config: selection.batch_size"),
        (dict(resolution=-1), r"^bad config: selection.resolution must be an int in \[0, 2048\]"),
        (
            dict(num_shards=2, shard_index=2),
            r"^bad config: selection.shard_index must be in \[0, num_shards=2\), got 2$",
        ),
        (dict(split="train900"), "^bad config: selection.split must be one of"),
        (dict(cache_only=True, cache_dir="/nonexistent/cache"), "--cache_dir: .* not a directory"),
    ],
)
def test_bad_values_are_refused_before_any_work(setup, kwargs, match):
    _refused(setup, match, **kwargs)


def test_bad_paths_are_refused_before_any_work(setup, monkeypatch):
    root, _ = setup
    (root / "a_file").write_text("x")
    under_file = str(root / "a_file" / "out" / "r.json")
    _refused(setup, "--output_json: .* is under .*a_file.*regular file", output_json=under_file)
    _refused(setup, "--cache_dir: .*a_file.* regular file", cache_dir=str(root / "a_file"))
    _refused(setup, "--plot_png: .*regular file", plot_png=str(root / "a_file" / "p.png"))
    # A read-only cache directory (simulated: the tests may run as root, who may write anyway).
    read_only = root / "read_only"
    read_only.mkdir(exist_ok=True)
    real_mkstemp = checks.tempfile.mkstemp

    def mkstemp(*args, dir=None, **kw):
        if dir == str(read_only):
            raise PermissionError(13, "Permission denied", dir)
        return real_mkstemp(*args, dir=dir, **kw)

    monkeypatch.setattr(checks.tempfile, "mkstemp", mkstemp)
    _refused(setup, "--cache_dir: .*read_only.* not writable", cache_dir=str(read_only / "c"))
    # A full disk.
    monkeypatch.setattr(
        checks.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10, 10, 4096)
    )
    _refused(setup, "--output_json: the disk holding .* MiB free; at least 64 MiB expected")


def test_command_line_error_is_one_line(setup):
    root, data = setup
    (root / "a_file").write_text("x")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "vtab_eval.rank",
            f"--collection={root / 'none.txt'}",
            f"--dataset=folder:{data}",
            f"--output_json={root / 'a_file' / 'r.json'}",
            "--batch_size=0",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=REPO),
    )
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last == (
        "vtab_eval.rank: error: bad config: selection.batch_size (--batch_size) must be an int "
        ">= 1, got 0"
    )
    assert "Traceback" not in proc.stderr
