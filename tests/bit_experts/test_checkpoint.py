import numpy as np
import pytest
from reference_bit import bit_features, random_bit_checkpoint
from tolerances import model_atol

from bit_experts import checkpoint
from bit_experts.presets import create_model

UNITS, WIDTH, GROUPS = (1, 2, 1, 1), 0.125, 4


def _save(tmp_path, weights, name="ckpt.npz"):
    path = tmp_path / name
    np.savez(path, **weights)
    return path


def _images(n=2, size=32, seed=0):
    return np.random.default_rng(seed).uniform(0, 1, (n, size, size, 3)).astype("float32")


def test_loaded_checkpoint_matches_reference_bit_computation(tmp_path):
    weights = random_bit_checkpoint(UNITS, WIDTH, num_classes=5, groups=GROUPS)
    model = checkpoint.load_bit_checkpoint(_save(tmp_path, weights), groups=GROUPS)
    assert model.block_units == UNITS and model.width_factor == WIDTH and model.num_classes == 5
    images = _images(size=35)
    expected = bit_features(weights, images, groups=GROUPS)
    got = np.asarray(model.features(images))
    # Float64 reference: float32 bound of the network from its fan-ins, depth and output size
    # (tests/tolerances.py), in place of rtol=atol=1e-4 of the largest feature. A wrong name
    # mapping, transposed kernel or wrong GroupNorm epsilon changes features by O(1).
    atol = model_atol(model, images, expected)
    np.testing.assert_allclose(got, expected, rtol=0, atol=atol)
    logits = (
        expected @ weights["resnet/head/conv2d/kernel"][0, 0] + weights["resnet/head/conv2d/bias"]
    )
    # Same bound at the logits' size (the head is one of the counted layers); was a fixed 1e-3.
    np.testing.assert_allclose(
        np.asarray(model(images)), logits, rtol=0, atol=model_atol(model, images, logits)
    )


def test_every_bit_key_maps_to_a_distinct_variable_and_round_trips(tmp_path):
    model = create_model("r14_micro", num_classes=3)
    mapping = checkpoint.variable_map(model)
    assert len({id(v) for v in mapping.values()}) == len(mapping) == len(model.weights)
    assert "resnet/block1/unit01/a/proj/standardized_conv2d/kernel" in mapping
    for v in model.weights:
        v.assign(np.random.default_rng(len(v.path)).normal(size=v.shape))
    path = checkpoint.save_bit_checkpoint(model, tmp_path / "ours.npz")
    reloaded = checkpoint.load_bit_checkpoint(path, groups=4)
    for a, b in zip(model.weights, reloaded.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_r50x1_architecture_is_inferred_from_keys():
    weights = {k: np.zeros(s) for k, s in _shapes(create_model("r50x1", num_classes=10)).items()}
    arch = checkpoint.infer_architecture(weights)
    assert arch == {"block_units": (3, 4, 6, 3), "width_factor": 1, "num_classes": 10}


def _shapes(model):
    return {k: tuple(v.shape) for k, v in checkpoint.checkpoint_weights(model).items()}


def test_new_head_can_replace_the_checkpoint_head(tmp_path):
    weights = random_bit_checkpoint(UNITS, WIDTH, num_classes=5, groups=GROUPS)
    model = checkpoint.load_bit_checkpoint(_save(tmp_path, weights), num_classes=7, groups=GROUPS)
    assert model.num_classes == 7
    np.testing.assert_array_equal(model.head.kernel.numpy(), 0)
    no_head = checkpoint.load_bit_checkpoint(_save(tmp_path, weights), num_classes=0, groups=GROUPS)
    assert no_head.head is None


def test_strict_loading_lists_every_problem(tmp_path):
    weights = random_bit_checkpoint(UNITS, WIDTH, groups=GROUPS)
    del weights["resnet/block2/unit02/b/group_norm/gamma"]
    weights["resnet/block1/unit01/z/extra"] = np.zeros(3)
    weights["resnet/block3/unit01/c/standardized_conv2d/kernel"] = np.zeros((1, 1, 3, 3))
    with pytest.raises(checkpoint.CheckpointError) as error:
        checkpoint.load_bit_checkpoint(_save(tmp_path, weights), groups=GROUPS)
    message = str(error.value)
    assert "missing keys (1): ['resnet/block2/unit02/b/group_norm/gamma']" in message
    assert "unexpected keys (1): ['resnet/block1/unit01/z/extra']" in message
    assert "mis-shaped keys (1)" in message and "block3/unit01/c/standardized_conv2d" in message


@pytest.mark.parametrize(
    "content, match",
    [
        (b"not a zip file at all", "not a readable .npz"),
        (None, "does not exist"),
    ],
)
def test_unreadable_checkpoints_are_clear(tmp_path, content, match):
    path = tmp_path / "bad.npz"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises((checkpoint.CheckpointError, FileNotFoundError), match=match):
        checkpoint.load_bit_checkpoint(path)


def test_truncated_checkpoint_is_clear(tmp_path):
    path = _save(tmp_path, random_bit_checkpoint(UNITS, WIDTH, groups=GROUPS))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(checkpoint.CheckpointError, match="not a readable .npz"):
        checkpoint.load_bit_checkpoint(path, groups=GROUPS)


def test_non_bit_checkpoint_is_refused(tmp_path):
    path = _save(tmp_path, {"conv1/kernel": np.zeros((3, 3, 3, 8))})
    with pytest.raises(checkpoint.CheckpointError, match="not a BiT ResNet-v2 checkpoint"):
        checkpoint.load_bit_checkpoint(path)
