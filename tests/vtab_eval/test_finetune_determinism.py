"""Seeded, deterministic fine-tuning (issue 16): same seed, same numbers; another seed, others.

The module under test has dropout in training mode (a stateful random op inside a restored
function) and the setting uses random crops, flips and mixup, so every seeded source of randomness
takes part. Equality is bitwise: same process or a fresh one, on the same machine.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import vtab_eval_toys as toys

from bit_experts import determinism
from vtab_eval import finetune, sweeps, tasks

SETTING = sweeps.make_setting(
    0.3, 10, 8, resolution=16, resize=20, flip=True, mixup_alpha=0.4, warmup_steps=2
)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("determinism")
    spec = "folder:" + toys.make_colour_folder(str(root / "data"), per_class=12)
    handle = toys.save_toy_module(str(root / "dropout"), "dropout")
    return tasks.get_task(spec), handle, root, spec


def _run(world, seed, name, setting=SETTING):
    task, handle, root, _ = world
    path = root / f"{name}.npz"
    result = finetune.finetune_and_evaluate(
        handle, task, "train800", "test", setting, seed=seed, predictions_path=str(path)
    )
    with np.load(path) as saved:
        return result, saved["logits"]


def test_seeds_are_derived_from_the_seed_and_recorded(world):
    result, _ = _run(world, 7, "seeds")
    assert result["seeds"] == dict(finetune.finetune_seeds(7), deterministic=True)
    assert result["seed"] == 7
    seeds = finetune.finetune_seeds(7)
    assert len({seeds[k] for k in ("data_order", "augmentation", "mixup", "global")}) == 4
    assert seeds != finetune.finetune_seeds(8)
    assert determinism.is_enabled()
    with pytest.raises(ValueError, match="seed"):
        finetune.finetune_seeds(-1)


def test_same_seed_same_numbers_other_seed_other_numbers(world):
    first, first_logits = _run(world, 3, "first")
    again, again_logits = _run(world, 3, "again")  # The kept module is reused here.
    assert again["final_loss"] == first["final_loss"]  # bitwise
    assert again["score"] == first["score"]
    np.testing.assert_array_equal(again_logits, first_logits)
    other, other_logits = _run(world, 4, "other")
    assert other["final_loss"] != first["final_loss"]
    assert not np.array_equal(other_logits, first_logits)


def test_a_fine_tune_does_not_depend_on_what_ran_before_it(world):
    """In this process after other fine-tunes (module reused) == alone in a fresh process."""
    task, handle, root, spec = world
    _run(world, 11, "before", sweeps.make_setting(0.1, 4, 8, resolution=16, flip=True))
    here, here_logits = _run(world, 5, "here")
    script = textwrap.dedent(f"""
        import json, sys
        import numpy as np
        from vtab_eval import finetune, sweeps, tasks
        setting = json.loads({json.dumps(json.dumps(SETTING))})
        out = {str(root / "fresh.npz")!r}
        result = finetune.finetune_and_evaluate(
            {handle!r}, tasks.get_task({spec!r}), "train800", "test", setting, seed=5,
            predictions_path=out)
        print("RESULT" + json.dumps(result))
    """)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env
    )
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT")]
    assert line, proc.stderr[-3000:]
    fresh = json.loads(line[0][len("RESULT") :])
    assert fresh["final_loss"] == here["final_loss"]  # JSON keeps a float's exact value
    assert fresh["seeds"] == here["seeds"]
    with np.load(root / "fresh.npz") as saved:
        np.testing.assert_array_equal(saved["logits"], here_logits)


def _batches(task, seed, count=3):
    data = finetune._prepare_train(task.load("train800"), SETTING, task.num_classes, seed)
    return [(b["image"].numpy(), b["label"].numpy()) for b in data.take(count)]


def test_input_pipeline_is_a_function_of_its_seed(world):
    """Order, crops, flips and mixup repeat for a seed, with parallel maps, and change with it."""
    task = world[0]
    first, again, other = _batches(task, 0), _batches(task, 0), _batches(task, 1)
    for (image, label), (image2, label2) in zip(first, again):
        np.testing.assert_array_equal(image, image2)
        np.testing.assert_array_equal(label, label2)
    assert not all(np.array_equal(a[0], b[0]) for a, b in zip(first, other))
