"""Ranking at a reduced precision (`--precision`) and resolution: validation, cache keys, accuracy."""

import json
import math
import os

import numpy as np
import pytest
import vtab_eval_toys as toys

from vtab_eval import config, embed, feature_cache, ranking, tasks

# Unit roundoff of the reduced formats: 8 and 11 significant bits.
UNIT_ROUNDOFF = {"bfloat16": 2.0**-9, "float16": 2.0**-11}


def _save_expert(path, seed, resolution=16):
    """An r14_micro feature-vector module with random weights and its Keras archive, as published."""
    from bit_experts.presets import create_model, preset_config
    from hub_export.keras_artifact import write_keras_artifact
    from hub_export.module import HubModule, save_module

    model = create_model("r14_micro")
    rng = np.random.default_rng(seed)
    for w in model.weights:
        w.assign(w.numpy() + rng.normal(0, 0.05, w.shape).astype("float32"))
    metadata = {
        "name": os.path.basename(path),
        "kind": "full",
        "role": "feature_vector",
        "architecture": {"preset": "r14_micro", **preset_config("r14_micro")},
        "resolution": resolution,
        "input_range": [0.0, 1.0],
        "feature_dim": model.feature_dim,
        "slice": None,
    }
    module = HubModule(model, "features")
    save_module(module, path, metadata)
    write_keras_artifact(module, path, metadata)
    return path, model


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("rank_precision")
    first, model = _save_expert(str(root / "e0"), seed=1)
    second, _ = _save_expert(str(root / "e1"), seed=2)
    toy = toys.save_toy_module(str(root / "toy"), "colour")  # no Keras archive
    handles = toys.write_handle_list(str(root / "pool.txt"), [first, second, toy])
    data = toys.make_colour_folder(str(root / "data"), per_class=8)
    return root, model, [first, second, toy], handles, data


@pytest.mark.parametrize(
    "selection, key",
    [({"precision": "float64"}, "precision"), ({"resolution": -1}, "resolution")],
)
def test_bad_precision_or_resolution_is_one_line_before_any_work(setup, selection, key):
    root, _, _, handles, data = setup
    out = root / "bad" / "ranking.json"
    with pytest.raises(ValueError) as info:
        config.make(
            collection=handles, tasks=[f"folder:{data}"], output_json=str(out), selection=selection
        )
    message = str(info.value)
    assert message.startswith(f"bad config: selection.{key} must be") and "\n" not in message
    assert repr(next(iter(selection.values()))) in message
    assert not out.exists()
    with pytest.raises(ValueError, match="precision must be one of"):
        embed.check_precision("half")


def test_cache_keys_differ_by_precision_and_resolution():
    key = feature_cache.FeatureCache.key
    args = ("module-identity", "task-fingerprint", "train800val200")
    keys = {key(*args, side, precision=p) for side in (128, 224) for p in embed.PRECISIONS}
    assert len(keys) == 2 * len(embed.PRECISIONS) == 8
    # float32 keeps the key caches had before precision existed.
    assert key(*args, 224) == key(*args, 224, precision="float32")
    assert "bfloat16" in key(*args, 224, precision="bfloat16")
    assert "__float32_standardized__" in key(*args, 224, precision=embed.STANDARDIZED)


def _relative_error_bound(model, precision):
    """Bound on ||features_low - features_32|| / ||features_32|| (Frobenius norm).

    Under Keras' mixed policy each layer rounds its input, its weights and its output to the
    reduced format: 3 roundings of relative size <= u. Products accumulate in float32 inside the
    convolution kernels, and GroupNorm renormalises every layer's input, so the layers' relative
    errors add rather than compound; L independent layers add in quadrature: sqrt(L) * 3u. As in
    tests/tolerances.py, L = 2 per kernel (a GroupNorm before every convolution), and a factor 2.5
    covers the tails and GroupNorm's cancelling mean subtraction. The float32 side's own error
    (~1e-6 relative) is negligible.
    """
    layers = 2 * sum(1 for w in model.weights if w.path.endswith("kernel"))
    return 2.5 * math.sqrt(layers) * 3 * UNIT_ROUNDOFF[precision]


@pytest.mark.parametrize("precision", ["bfloat16", "float16"])
def test_reduced_precision_features_are_close_to_float32(setup, precision):
    _, model, (first, second, _), _, _ = setup
    images = np.random.default_rng(0).uniform(0, 1, (16, 32, 32, 3)).astype(np.float32)
    reference = np.asarray(embed.load_module(first)(images))
    low = np.asarray(embed.load_module(first, precision)(images))
    other = np.asarray(embed.load_module(second)(images))
    assert low.dtype == np.float32 and low.shape == reference.shape
    error = lambda a: np.linalg.norm(a - reference) / np.linalg.norm(reference)
    bound = _relative_error_bound(model, precision)
    assert 0 < error(low) < bound
    # A wrong result (another expert's weights) is far outside the bound.
    assert bound < 0.2 < error(other)


def test_standardized_features_equal_the_saved_modules_up_to_float32_rounding(setup):
    from tolerances import model_atol

    _, model, (first, second, toy), _, _ = setup
    images = np.random.default_rng(0).uniform(0, 1, (16, 32, 32, 3)).astype(np.float32)
    reference = np.asarray(embed.load_module(first)(images))
    once = np.asarray(embed.load_module(first, embed.STANDARDIZED)(images))
    assert once.dtype == np.float32 and once.shape == reference.shape
    # The same float32 function, each kernel standardised once instead of per call: as in
    # tests/bit_experts/test_resnet_v2_standardized.py, 3/2 of model_atol's two reductions per
    # kernel; another expert's weights differ by O(1) of the features.
    atol = 1.5 * model_atol(model, images, reference)
    np.testing.assert_allclose(once, reference, rtol=0, atol=atol)
    other = np.asarray(embed.load_module(second, embed.STANDARDIZED)(images))
    assert np.abs(other - reference).max() > 100 * atol
    with pytest.raises(embed.BadModuleError, match="float32_standardized.*Keras archive"):
        embed.load_module(toy, embed.STANDARDIZED)


def _options(**selection):
    """The ranking options of a config: its "selection" section and the seed."""
    made = config.make(selection={"resolution": 16, **selection})
    return ranking.options_of(made, made["seed"])


def test_rank_in_bfloat16_caches_apart_and_leaves_out_modules_without_archive(setup):
    root, _, (first, second, toy), handles, data = setup
    task = tasks.get_task(f"folder:{data}")
    cache = str(root / "cache")
    low = ranking.rank(
        [first, second, toy], task, "knn", _options(precision="bfloat16"), cache_dir=cache
    )
    assert low["precision"] == "bfloat16"
    assert [item["handle"] for item in low["left_out"]] == [toy]
    error = low["left_out"][0]["error"]
    assert "bfloat16" in error and "Keras archive" in error and "\n" not in error
    full = ranking.rank([first, second], task, "knn", _options(), cache_dir=cache)
    assert full["precision"] == "float32"
    assert full["cache"]["computed"] == [first, second]  # never served the bfloat16 entries
    again = ranking.rank(
        [first, second], task, "knn", _options(precision="bfloat16"), cache_dir=cache
    )
    assert again["cache"]["cached"] == [first, second]
    sidecars = [json.loads(p.read_text()) for p in (root / "cache").glob("*.json")]
    assert sorted(s["precision"] for s in sidecars) == ["bfloat16"] * 2 + ["float32"] * 2
