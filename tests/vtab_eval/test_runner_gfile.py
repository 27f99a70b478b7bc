"""The evaluation (`vtab_eval.run`) with its output folder on a `tf.io.gfile` URL without rename
(docs/workdir.md).

The output folder (fine-tune memo OUT/finetunes, results, rankings, report, TensorBoard scalars,
predictions, feature cache) lives on TensorFlow's in-memory `ram://` filesystem and every rename
raises. Before, `Memo` made the URL absolute as a local path, and the fine-tune's summary folder
was created with `os.makedirs`: both wrote a local folder literally named `ram:`. A run killed
after one fine-tune and rerun redoes only the fine-tunes whose memo file is missing.
"""

import io

import gfile_double
import numpy as np
import pytest
import vtab_eval_toys as toys
from gfile_double import Killed

from bit_experts import atomic_files
from vtab_eval import checks, config, engine, files, finetune, finetune_outputs, report, runner

no_rename, ram_root = gfile_double.no_rename, gfile_double.ram_root  # fixtures


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A local toy collection and folder task (made before renames are forbidden)."""
    root = tmp_path_factory.mktemp("runner_gfile")
    pool = toys.save_toy_pool(str(root))
    data = toys.make_colour_folder(str(root / "data"), per_class=8)
    return pool, f"folder:{data}"


def _run(pool, task, out, **finetune):
    """What `python -m vtab_eval.run --selectors=baseline --sweep=quick --resolution=16
    --selection_resolution=16 --num_retrains=2` does, in this process."""
    cfg = config.make(
        collection=pool,
        tasks=[task],
        output_dir=out,
        selection={"selectors": ["baseline"], "resolution": 16},
        finetune={"sweep": "quick", "resolution": 16, **finetune},
        protocol={"num_retrains": 2},
    )
    executor = runner.make_executor(cfg, lambda m: None, progress=False)
    engine.evaluate(
        cfg,
        executor=executor,
        log=lambda m: None,
        on_task_done=lambda d: report.write(d, with_plots=False),
    )
    return report.write(out)


def test_run_on_ram_writes_memo_and_outputs_and_a_rerun_redoes_only_what_a_kill_lost(
    inputs, ram_root, no_rename, monkeypatch
):
    pool, task = inputs
    out = f"{ram_root}/out"
    real = finetune.finetune_and_evaluate
    calls = []

    def dies_after_one(*args, **kwargs):
        if len(calls) == 1:
            raise Killed
        calls.append(args[2:4])
        return real(*args, **kwargs)

    monkeypatch.setattr(finetune, "finetune_and_evaluate", dies_after_one)
    with pytest.raises(Killed):
        _run(pool, task, out)
    assert len(runner.load_records(f"{out}/finetunes")) == 1
    assert atomic_files.listdir(f"{out}/finetunes")[0].endswith(".json")

    def counting(*args, **kwargs):
        calls.append(args[2:4])
        return real(*args, **kwargs)

    monkeypatch.setattr(finetune, "finetune_and_evaluate", counting)
    del calls[:]
    results = _run(pool, task, out)
    records = runner.load_records(f"{out}/finetunes")
    assert len(calls) == len(records) - 1  # the recorded fine-tune is not redone
    outcomes = results["baseline"]["data"]["outcomes"]
    assert len(outcomes) == 2 and results["baseline"]["data"]["complete"] is True

    # Every final fine-tune's predictions and scalars are on the URL, next to the report.
    finals = [r for r in records.values() if "predictions_path" in r.get("outputs", {})]
    assert len(finals) == 2
    for record in finals:
        path = f"{out}/{record['outputs']['predictions_path']}"
        with np.load(io.BytesIO(atomic_files.read_bytes(path))) as npz:
            accuracy = float(np.mean(npz["predictions"] == npz["labels"]))
        assert accuracy == pytest.approx(record["accuracy"], abs=1e-6)
        events = atomic_files.listdir(f"{out}/{record['outputs']['summary_dir']}")
        assert len(events) == 1 and events[0].startswith("events.out.tfevents.")
    assert "| baseline |" in atomic_files.read_bytes(f"{out}/report.md").decode("utf-8")
    assert report.load_results(out)["baseline"]["data"]["outcomes"] == outcomes

    del calls[:]
    assert _run(pool, task, out)["baseline"]["data"]["outcomes"] == outcomes
    assert calls == []  # everything memoised


def test_saving_fine_tuned_models_to_a_url_is_refused_before_anything_runs(inputs, ram_root):
    pool, task = inputs
    with pytest.raises(ValueError, match="--save_models: --output_dir=ram://.* is a URL"):
        _run(pool, task, f"{ram_root}/out", save_models=True)
    assert not atomic_files.exists(ram_root)
    with pytest.raises(ValueError, match="save_model_dir .* is a URL"):  # the library's check
        finetune_outputs.check_output_paths(None, None, f"{ram_root}/model")


# --- user-given paths that are URLs stay URLs, or are refused in one line (issue 13, section 4) ---


def test_rank_output_json_and_cache_only_dir_on_a_url_are_kept_as_urls(ram_root, no_rename):
    """Before, `os.path.abspath` made `ram://r/rank.json` a local `<cwd>/ram:/r/rank.json`, and
    `--cache_only` refused an existing ram:// cache as 'not a directory' (os.path.isdir).
    `engine.rank` checks its paths with these."""
    out = f"{ram_root}/r/rank.json"
    assert checks.output_file("--output_json", out) == out
    assert checks.writable_dir("--cache_dir", f"{ram_root}/c") == f"{ram_root}/c"
    atomic_files.makedirs(f"{ram_root}/cache")
    assert (
        checks.cache_dir("--cache_dir", f"{ram_root}/cache", read_only=True) == f"{ram_root}/cache"
    )
    with pytest.raises(ValueError, match=r"^--output_json: 'mylocal://x/r.json': no tf.io.gfile"):
        checks.output_file("--output_json", "mylocal://x/r.json")
    with pytest.raises(ValueError, match=r"^--cache_dir: .* is not a directory"):
        checks.cache_dir("--cache_dir", f"{ram_root}/none", read_only=True)


def test_audit_keeps_url_output_memo_and_cache_dirs(ram_root, monkeypatch):
    """Before, audit_command ran output_dir, memo_dir and cache_dir through os.path.abspath; the
    audit (as every command) now takes them from `files.output_paths`."""
    from vtab_eval import selection_audit

    seen = []

    def prepare(cfg, log, extra_problems=(), probe=False):
        seen.append(files.output_paths(cfg))
        raise Killed  # stop before anything is resolved or run

    monkeypatch.setattr(checks, "prepare", prepare)
    audit = {"quick": True}
    with pytest.raises(Killed):
        selection_audit.run(
            config.make(
                collection="C", tasks=["folder:/x"], output_dir=f"{ram_root}/audit", audit=audit
            )
        )
    assert seen == [
        (f"{ram_root}/audit", f"{ram_root}/audit/finetunes", f"{ram_root}/audit/feature_cache")
    ]
    monkeypatch.undo()
    bad_memo = config.make(
        collection="C",
        tasks=["folder:/x"],
        output_dir=f"{ram_root}/audit",
        memo_dir="mylocal://m",
        audit=audit,
    )
    with pytest.raises(ValueError, match=r"^--memo_dir: 'mylocal://m': no tf.io.gfile filesystem"):
        selection_audit.run(bad_memo)
    assert not atomic_files.exists(ram_root)


def test_local_only_inputs_refuse_a_url_in_one_line(ram_root):
    """Task folders, the audit's task bank and upstream dir, and the demo read local disks only;
    before, a URL became a local `ram:/...` path ('does not exist', or a local `ram:` folder)."""
    from vtab_eval import audit, offline_demo, selection_audit
    from vtab_eval.tasks import folder

    url = f"{ram_root}/x"
    with pytest.raises(ValueError, match=r"^folder task='ram://.*' is a URL; it must be a local"):
        folder.make_folder_task(url)
    with pytest.raises(ValueError, match=r"^--bank_dir='ram://.*' is a URL"):
        audit.bank_task_names(url)
    with pytest.raises(ValueError, match=r"^--workdir='ram://.*' is a URL"):
        offline_demo.run_demo(url, eval_config=None, evaluate=None)
    with pytest.raises(ValueError, match=r"^--cache_dir: 'mylocal://out': no tf.io.gfile filesys"):
        checks.writable_dir("--cache_dir", "mylocal://out")
    cfg = config.make(audit={"upstream_dir": url, "quick": True, "seeds": [0]})
    [problem] = selection_audit.check_arguments(cfg)
    assert problem.startswith(f"--upstream_dir={url}: is a URL; slice accuracy")
