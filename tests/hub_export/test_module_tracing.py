"""How often exporting traces the model (issue 12, section 4), and that the shared trace computes
what the model computes through every saved entry point."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_hub as hub
from tolerances import model_atol

from bit_experts.presets import create_model, preset_config
from bit_experts.resnet_v2 import BiTResNetV2
from hub_export.module import IMAGE_SPEC, HubModule, save_module, training_invariant


class _ZeroWhenTraining(BiTResNetV2):
    """A model whose `training` flag matters (a stand-in for dropout): logits, or zeros in training."""

    def call(self, images, expert_ids=None, training=None):
        logits = super().call(images, expert_ids, training)
        return logits * 0.0 if training else logits


def _images(size=32, n=2, seed=0):
    return np.random.default_rng(seed).uniform(0, 1, (n, size, size, 3)).astype("float32")


def _perturbed(model, seed=1):
    rng = np.random.default_rng(seed)
    for w in model.weights:  # the head starts at zero: make every output depend on the weights
        w.assign(w.numpy() + rng.normal(0, 0.05, w.shape).astype("float32"))
    return model


def _count_forward_passes(monkeypatch):
    """Counts the Python calls of `BiTResNetV2.features`: one per trace of the model."""
    calls = []
    original = BiTResNetV2.features

    def counted(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(BiTResNetV2, "features", counted)
    return calls


@pytest.mark.parametrize("output", ["features", "logits"])
def test_a_save_traces_the_forward_pass_once(output, monkeypatch, tmp_path):
    model = create_model("r14_micro", num_classes=3)
    model(_images())  # built before counting
    calls = _count_forward_passes(monkeypatch)
    module = HubModule(model, output)
    assert calls == []  # nothing is traced before the save: it would be traced again there
    save_module(module, str(tmp_path / "m"), {"name": "m"})
    # Before issue 12: two traces in HubModule() and three more in the save.
    assert len(calls) == 1
    save_module(module, str(tmp_path / "again"))  # a second save reuses the save-time traces
    assert len(calls) == 1


def test_a_model_whose_training_flag_matters_gets_its_own_training_trace(monkeypatch, tmp_path):
    model = _perturbed(_ZeroWhenTraining(num_classes=3, name="zero", **preset_config("r14_micro")))
    images = _images()
    expected = model(images).numpy()
    assert not training_invariant(model) and np.abs(expected).max() > 0
    calls = _count_forward_passes(monkeypatch)
    save_module(HubModule(model, "logits"), str(tmp_path / "m"))
    assert len(calls) == 2
    loaded = hub.load(str(tmp_path / "m"))
    np.testing.assert_array_equal(loaded(images, training=True).numpy(), 0.0)
    inference = loaded(images, training=False).numpy()
    np.testing.assert_allclose(inference, expected, atol=model_atol(model, images, expected))


def test_bit_computes_the_same_graph_for_both_training_values():
    """What `training_invariant` relies on: BiT's forward pass has no batch norm or dropout, so its
    trace is op for op the same whether `training` is True or False."""
    model = create_model("r14_micro", num_classes=3, num_experts=2)
    assert training_invariant(model)

    def op_types(training):
        fn = tf.function(lambda x: model(x, expert_ids=tf.constant(1), training=training))
        return [op.type for op in fn.get_concrete_function(IMAGE_SPEC).graph.get_operations()]

    assert op_types(True) == op_types(False)


@pytest.mark.parametrize("output, key", [("features", "feature_vector"), ("logits", "logits")])
def test_every_saved_entry_point_computes_the_model(output, key, tmp_path):
    model = _perturbed(create_model("r14_micro", num_classes=3, num_experts=2))
    module = HubModule(model, output, expert_id=1)
    save_module(module, str(tmp_path / "m"))
    loaded = hub.load(str(tmp_path / "m"))

    def compute(images, expert_id):
        ids = tf.constant(expert_id)
        return (model.features(images, ids) if output == "features" else model(images, ids)).numpy()

    for size in (32, 24):
        images = _images(size, seed=size)
        expected = compute(images, 1)
        atol = model_atol(model, images, expected)
        assert atol < 1e-3 * np.abs(expected).max()  # far below what a wrong expert changes
        results = {
            "__call__ training=False": loaded(images, training=False),
            "__call__ training=True": loaded(images, training=True),
            "serving_default": loaded.signatures["serving_default"](images=images)[key],
        }
        for entry, result in results.items():
            assert result.shape == expected.shape, entry
            np.testing.assert_allclose(result.numpy(), expected, atol=atol, err_msg=entry)
        assert np.abs(compute(images, 0) - expected).max() > 100 * atol  # the other expert differs
