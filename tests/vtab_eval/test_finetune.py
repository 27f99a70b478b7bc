"""Fine-tuning a hub module with a new zero-initialised head, the whole network trainable."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
import vtab_eval_toys as toys

from vtab_eval import classifier as classifier_lib
from vtab_eval import finetune, sweeps, tasks


@pytest.fixture(scope="module")
def folder_task(tmp_path_factory):
    root = tmp_path_factory.mktemp("finetune_data")
    return tasks.get_task("folder:" + toys.make_colour_folder(str(root), per_class=12))


def test_scores():
    result = finetune.scores([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 2, 2], num_classes=4)
    # Ratios of counts in float64: approx only absorbs the division's rounding.
    assert result["accuracy"] == pytest.approx(5 / 6)
    # Classes present: 0 (1/1), 1 (1/2), 2 (3/3); class 3 has no examples and is ignored.
    assert result["mean_per_class_accuracy"] == pytest.approx((1 + 0.5 + 1) / 3)
    assert result["num_examples"] == 6


def test_toy_module_learns_the_task(tmp_path, folder_task):
    handle = toys.save_toy_module(str(tmp_path / "colour"), "colour")
    classifier = classifier_lib.build_classifier(handle, folder_task.num_classes)
    assert not np.any(classifier.kernel.numpy()) and not np.any(classifier.bias.numpy())
    before = classifier.module.trainable_variables[0].numpy().copy()
    setting = sweeps.make_setting(0.5, 60, 16, resolution=16, warmup_steps=5)
    stats = finetune.train(
        classifier, folder_task.load("train800"), setting, folder_task.num_classes, seed=0
    )
    assert np.isfinite(stats["final_loss"]) and stats["steps"] == 60
    assert not np.allclose(before, classifier.module.trainable_variables[0].numpy())
    logits, labels = classifier_lib.predict_logits(classifier, folder_task.load("test"), 16)
    assert finetune.scores(np.argmax(logits, axis=-1), labels, 3)["accuracy"] >= 0.8


def test_bit_module_all_weights_and_adapters_are_tuned(tmp_path, folder_task):
    from bit_experts.presets import create_model
    from hub_export.module import HubModule, save_module

    model = create_model("r14_micro", num_experts=1)
    model(np.zeros((1, 16, 16, 3), "float32"), expert_ids=np.zeros((1,), "int32"))
    handle = save_module(HubModule(model, expert_id=0), str(tmp_path / "bit"))
    classifier = classifier_lib.build_classifier(handle, folder_task.num_classes)
    module_vars = classifier.module.trainable_variables
    assert any("adapter" in v.name for v in module_vars)
    before = [v.numpy().copy() for v in module_vars]
    setting = sweeps.make_setting(0.05, 3, 8, resolution=16)
    stats = finetune.train(classifier, folder_task.load("train800"), setting, 3, seed=1)
    assert np.isfinite(stats["final_loss"])
    changed = [not np.array_equal(b, v.numpy()) for b, v in zip(before, module_vars)]
    # Backbone weights all move; adapters start as the identity (zero output conv), so within a
    # few steps only some of theirs do, but they are tuned too.
    assert all(c for c, v in zip(changed, module_vars) if "adapter" not in v.name)
    assert any(c for c, v in zip(changed, module_vars) if "adapter" in v.name)
    assert np.any(classifier.kernel.numpy())


def test_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="failed to load") as error:
        classifier_lib.build_classifier(str(tmp_path / "nothing"), 3)
    assert "nothing" in str(error.value)
    with pytest.raises(ValueError, match="wrong|expected"):
        classifier_lib.build_classifier(toys.save_toy_module(str(tmp_path / "r1"), "rank1"), 3)


@pytest.mark.slow
def test_mirrored_strategy_matches_single_device(tmp_path, folder_task):
    handle = toys.save_toy_module(str(tmp_path / "colour"), "colour")
    script = textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, {os.path.dirname(toys.__file__)!r})
        from bit_experts.training import strategies
        strategies.configure_cpu_devices(2)
        import tensorflow as tf
        from vtab_eval import classifier as classifier_lib, finetune, sweeps, tasks
        task = tasks.get_task({folder_task.name!r})
        setting = sweeps.make_setting(0.1, 5, 8, resolution=16)
        out = {{}}
        for name in ("mirrored", "default"):
            strategy = strategies.make_strategy(name)
            c = classifier_lib.build_classifier({handle!r}, 3, strategy)
            finetune.train(c, task.load("train800"), setting, 3, strategy, seed=0)
            out[name] = [c.kernel.numpy().tolist(), c.module.trainable_variables[0].numpy().tolist()]
            out[name + "_replicas"] = strategy.num_replicas_in_sync
        print("RESULT" + json.dumps(out))
    """)
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT")]
    assert line, proc.stderr[-3000:]
    import json

    out = json.loads(line[0][len("RESULT") :])
    assert out["mirrored_replicas"] == 2
    for a, b in zip(out["mirrored"], out["default"]):
        # Two replicas sum their gradients in another order than one batch does: per step
        # ~sqrt(8) * 2**-24 of |grad|; over 5 steps at lr 0.1 on weights of size ~0.1-1 that is
        # < 1e-6, so rtol 1e-4 / atol 1e-5 hold 10x; a lost replica's half-gradient is O(lr).
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_a_reused_module_starts_from_its_published_weights(tmp_path):
    """A module kept for reuse is reset to its published weights before the next fine-tune."""
    import tensorflow_hub as hub

    handle = _tiny_module_for_reuse(tmp_path)
    published = [v.numpy().copy() for v in hub.load(handle).variables]
    classifier = classifier_lib.build_classifier(handle, 3)
    for variable in classifier.module.variables:
        variable.assign(variable + 1.0)  # what a fine-tune leaves behind
    again = classifier_lib.build_classifier(handle, 3)
    assert again.module is classifier.module  # kept, not reloaded
    for value, variable in zip(published, again.module.variables):
        np.testing.assert_array_equal(value, variable.numpy())


def _tiny_module_for_reuse(tmp_path):
    from bit_experts.presets import create_model
    from hub_export.module import HubModule, save_module

    return save_module(HubModule(create_model("r14_micro")), tmp_path / "module")


class _Module(tf.__internal__.tracking.AutoTrackable):
    """A SavedModel root that lacks parts of the reusable API (which ones: the arguments)."""

    def __init__(self, call_modes=(False, True), trainable=True, signature_only=False):
        super().__init__()
        w = tf.Variable(tf.ones([3, 4]), name="w")
        if signature_only:
            self.serve = tf.function(
                lambda images: {"out": tf.reduce_mean(images, [1, 2]) @ w},
                input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)],
            )
            self.w = w
            return
        self.variables = [w]
        self.trainable_variables = [w] if trainable else []
        self.regularization_losses = []
        self.__call__ = tf.function(
            lambda images, training=False: tf.reduce_mean(images, [1, 2]) @ w
        )
        for training in call_modes:
            self.__call__.get_concrete_function(
                tf.TensorSpec([None, None, None, 3], tf.float32), training
            )


@pytest.mark.parametrize(
    "kind, arguments, reason",
    [
        ("signature_only", {"signature_only": True}, "no __call__"),
        ("frozen", {"trainable": False}, "trainable_variables is empty"),
        ("inference_only", {"call_modes": (False,)}, "no traced training=True"),
    ],
)
def test_a_module_that_cannot_be_fine_tuned_gets_one_line(
    tmp_path, folder_task, kind, arguments, reason
):
    """Not a TypeError from deep inside TF: one ValueError line naming the module and the gap."""
    handle = str(tmp_path / kind)
    module = _Module(**arguments)
    tf.saved_model.save(module, handle, signatures=getattr(module, "serve", None))
    with pytest.raises(ValueError, match=reason) as error:
        classifier_lib.build_classifier(handle, 3)
    message = str(error.value)
    assert handle in message and "\n" not in message and "cannot be fine-tuned" in message
    setting = sweeps.make_setting(0.1, 2, 8, resolution=16)
    with pytest.raises(ValueError, match=reason):
        finetune.finetune_and_evaluate(handle, folder_task, "train800", "test", setting)
