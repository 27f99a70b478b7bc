"""Module validation: what passes, and that each failure names the module and the problem."""

import numpy as np
import pytest
import tensorflow as tf

from bit_experts.presets import create_model
from hub_export import validate
from hub_export.expert_modules import backbone_copy
from hub_export.handles import ModuleError, check_signature
from hub_export.module import IMAGE_SPEC, save_module
from hub_export.packed import PackedAdapterModule


class _Fake(tf.__internal__.tracking.AutoTrackable):
    """A tiny module in the reusable SavedModel format whose behaviour a test chooses."""

    def __init__(self, behaviour, with_call=True):
        super().__init__()
        self.kernel = tf.Variable(np.ones((3, 4), np.float32))
        self.unused = tf.Variable(np.ones((4,), np.float32))
        self.variables = [self.kernel, self.unused]
        self.trainable_variables = [self.kernel, self.unused]
        self.regularization_losses = []
        self._behaviour = behaviour
        fn = tf.function(self._forward)
        for training in (False, True):
            fn.get_concrete_function(IMAGE_SPEC, training)
        if with_call:
            self.__call__ = fn
        self.serving_default = tf.function(lambda images: fn(images), input_signature=[IMAGE_SPEC])

    def _forward(self, images, training=False):
        out = tf.reduce_mean(images, axis=[1, 2]) @ self.kernel
        if self._behaviour == "nan":
            return out * np.nan
        if self._behaviour == "grows":  # output size depends on the resolution
            return tf.tile(out, [1, tf.shape(images)[1] // 16])
        if self._behaviour == "frozen":  # the output does not depend on the trainable variables
            return tf.stop_gradient(out)
        return out + tf.reduce_sum(self.unused)


def _save_fake(tmp_path, behaviour, **kwargs):
    path = tmp_path / f"{behaviour}{'' if kwargs.get('with_call', True) else '_no_call'}"
    save_module(_Fake(behaviour, **kwargs), str(path))
    return str(path)


@pytest.fixture(scope="module")
def packed_dir(tmp_path_factory):
    model = create_model("r14_micro", num_classes=0, num_experts=2)
    rng = np.random.default_rng(0)
    for adapter in model.adapters:  # non-zero adapters, so the two experts differ
        adapter.set_weights([w + rng.normal(0, 0.1, w.shape) for w in adapter.get_weights()])
    path = tmp_path_factory.mktemp("validate") / "packed"
    save_module(PackedAdapterModule(backbone_copy(model), ["a", "b"]), str(path))
    return str(path)


def test_packed_module_validates_every_expert(packed_dir):
    report = validate.validate_module(packed_dir, "packed", output_dim=256, resolutions=(32, 16))
    assert report["output_dim"] == 256 and report["resolutions"] == [32, 16]
    changed, total = map(int, report["fine_tune_changed_variables"].split("/"))
    assert total > 0 and changed * 2 > total and np.isfinite(report["fine_tune_loss"])
    with pytest.raises(ModuleError, match="expected float32 images|missing \\['__call__'"):
        validate.validate_module(packed_dir, "feature_vector", name="packed/1")


def test_a_healthy_fake_passes(tmp_path):
    report = validate.validate_module(_save_fake(tmp_path, "ok"), "feature_vector", output_dim=4)
    assert report["fine_tune_changed_variables"] == "2/2"


@pytest.mark.parametrize(
    "behaviour, output_dim, message",
    [
        ("nan", None, "'m/1': __call__ returned non-finite values"),
        ("ok", 7, "returned 4 outputs, its metadata says 7"),
        ("grows", None, "output size varies with resolution"),
        ("frozen", None, "changed only 0 of 2 trainable variables"),
    ],
)
def test_failures_name_the_module(tmp_path, behaviour, output_dim, message):
    path = _save_fake(tmp_path, behaviour)
    with pytest.raises(ModuleError, match=message):
        validate.validate_module(path, "feature_vector", output_dim, (32, 16), name="m/1")


def test_wrong_signature_and_corrupt_files(tmp_path):
    no_call = _save_fake(tmp_path, "ok", with_call=False)
    with pytest.raises(ModuleError, match=r"'nc': wrong signature .* missing \['__call__'\]"):
        check_signature(no_call, "feature_vector", "nc")
    with pytest.raises(ValueError, match="role must be one of"):
        check_signature(no_call, "regressor")
    good = _save_fake(tmp_path, "ok")
    with open(f"{good}/saved_model.pb", "r+b") as f:
        f.truncate(50)
    with pytest.raises(ModuleError, match="is corrupt|no object graph"):
        validate.validate_module(good, "feature_vector", name="t/1")


def test_default_resolutions():
    assert validate.default_resolutions(224) == (224, 112)
    assert validate.default_resolutions(20) == (20, 16)
