"""Ranking a pool with every selector, by name; each picks a planted best expert."""

import numpy as np
import pytest
import selector_battery as battery
import tensorflow as tf
import vtab_eval_toys as toys

from vtab_eval import ranking, selectors, tasks

Entry = toys.Entry
PRIORS = {
    "expert_a": np.array([5.0, 5.0, 0.0, 0.0]),
    "expert_b": np.array([0.0, 1.0, 4.0, 5.0]),
    "expert_c": np.array([1.0, 1.0, 1.0, 1.0]),  # every label, as a root's
}
UPSTREAM = 100  # upstream images of the EPN and the classifier; slices: a 40, b 50, c all


def _slice(name, image_count):
    return {"slice": name, "image_count": image_count}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("ranking")
    save = lambda name, kind, **kw: toys.save_toy_module(str(root / name), kind, **kw)
    pool = [
        Entry(save("b", "noise"), "baseline", "baseline", "feature_vector", {}),
        Entry(save("e_noise", "noise"), "expert_a", "full", "feature_vector", _slice("a", 40)),
        Entry(save("e_colour", "colour"), "expert_b", "full", "feature_vector", _slice("b", 50)),
        Entry(save("e_nan", "nan"), "expert_c", "full", "feature_vector", _slice("c", UPSTREAM)),
        # The EPN believes every image belongs to domain "b".
        Entry(
            save("epn", "const", values=[-3.0, 4.0, -2.0]),
            "epn",
            "epn",
            "epn",
            {"outputs": ["a", "b", "c"], "output_activation": "sigmoid", "image_count": UPSTREAM},
        ),
        # The baseline classifier predicts upstream labels 2 and 3.
        Entry(
            save("clf", "const", values=[-9.0, -9.0, 5.0, 5.0]),
            "baseline_classifier",
            "baseline",
            "classifier",
            {"output_activation": "sigmoid", "image_count": UPSTREAM},
        ),
    ]
    task = tasks.get_task("folder:" + toys.make_colour_folder(str(root / "data"), per_class=8))
    return root, pool, task


def _rank(setup, method, **options):
    root, pool, task = setup
    options = {"resolution": 16, **options}
    return ranking.rank(
        pool, task, method, options, cache_dir=str(root / "cache"), label_priors=PRIORS
    )


def test_knn_picks_the_informative_expert_and_reports_bad_ones(setup):
    _, pool, _ = setup
    result = _rank(setup, "knn", include_baseline=False)
    assert result["selected"] == pool[2].handle and result["selected_name"] == "expert_b"
    assert [e["name"] for e in result["experts"]] == ["expert_a", "expert_b", "expert_c"]
    statuses = {e["name"]: e["status"] for e in result["experts"]}
    assert statuses == {"expert_a": "ok", "expert_b": "ok", "expert_c": "left_out"}
    assert [x["handle"] for x in result["left_out"]] == [pool[3].handle]
    scores = {e["name"]: e["score"] for e in result["experts"]}
    assert scores["expert_b"] == 1.0 and scores["expert_a"] < 0.8
    assert result["num_images"] == 19 and result["higher_is_better"]
    assert result["forward_passes"] == 19 * 2  # images x the two experts with features
    assert "seed" not in result and result["cache"]["computed"] + result["cache"]["cached"]


@pytest.mark.parametrize("method", ranking.methods())
def test_every_selector_ranks_through_rank_into_the_documented_dict(setup, method):
    result = _rank(setup, method)
    battery.assert_ranking_battery(result, method)
    if method not in ("random", "baseline"):
        assert result["selected_name"] == "expert_b"  # the planted expert


def test_domain_prediction_and_label_matching_pick_planted_experts(setup):
    dp = _rank(setup, "domain_prediction")
    assert dp["selected_name"] == "expert_b" and dp["num_images"] == 19
    assert dp["forward_passes"] == 19  # the EPN alone
    lm = _rank(setup, "label_matching", include_baseline=False)
    assert lm["selected_name"] == "expert_b" and lm["higher_is_better"]
    # b explains the predicted labels 2-3, c (every label) scores 0, a (labels 0-1) far below.
    scores = [e["score"] for e in lm["experts"]]
    assert scores[1] > scores[2] > scores[0]
    assert scores[2] == pytest.approx(0.0, abs=1e-12)  # log(1) up to float64 sums of 4 terms


def test_random_is_seeded_and_baseline_picks_b(setup):
    _, pool, task = setup
    a = ranking.rank(pool, task, "random", {"seed": 5}, cache_dir=None)
    assert a == ranking.rank(pool, task, "random", {"seed": 5}, cache_dir=None)
    handles = [e.handle for e in selectors.candidates(pool)]
    scores = selectors.get("random").score_names(handles, 5, task.fingerprint())
    expected = selectors.select_best(scores).selected
    assert a["selected"] == expected and a["seed"] == 5 and a["forward_passes"] == 0
    assert a["experts"][0]["name"] == "baseline"  # include_baseline is the default
    assert ranking.rank(pool, task, "baseline", cache_dir=None)["selected_name"] == "baseline"


def test_options_default_and_are_checked(setup):
    _, pool, task = setup
    assert ranking.check_options() == ranking.DEFAULTS
    assert ranking.check_options({"resolution": 0})["resolution"] is None
    assert ranking.DEFAULTS["include_baseline"] and ranking.DEFAULTS["split"] == "train800val200"
    with pytest.raises(ValueError, match=r"unknown selection options \['colour'\]"):
        ranking.rank(pool, task, "random", {"colour": 1}, cache_dir=None)


def test_methods_are_the_registry_but_what_the_run_plans(setup):
    _, pool, task = setup
    planned = {"hindsight", "knn_probe", "knn_probe_top1", "probe_all"}
    assert ranking.methods() == tuple(n for n in selectors.names() if n not in planned)
    for name in planned:
        with pytest.raises(ValueError, match=f"'{name}' ranks nothing: it fine-tunes"):
            ranking.rank(pool, task, name, cache_dir=None)


class CentroidProxy(selectors.Selector):
    """A proxy that lives in this test file alone: per-image hits where the image's nearest class
    centroid (image included) is its own class (a toy of Mensink et al., TPAMI 2013)."""

    name = "toy_centroid"
    rows = True

    def score(self, ctx):
        features, labels = ctx.features()
        correct = {}
        for handle, x in features.items():
            centroids = np.stack([x[labels == c].mean(axis=0) for c in np.unique(labels)])
            distances = ((x[:, None, :] - centroids[None]) ** 2).sum(axis=-1)
            correct[handle] = np.unique(labels)[distances.argmin(axis=1)] == labels
        return selectors.Scores({h: float(np.mean(c)) for h, c in correct.items()}, correct)


@pytest.fixture
def toy_proxy():
    selectors.register(CentroidProxy)
    yield CentroidProxy.name
    selectors.unregister(CentroidProxy.name)


def test_a_proxy_registered_in_a_test_file_ranks_like_the_built_in_ones(setup, toy_proxy):
    assert toy_proxy in ranking.methods() and toy_proxy in selectors.names("feature", rows=True)
    result = _rank(setup, toy_proxy, fallback="baseline", fallback_confidence=0.5)
    battery.assert_ranking_battery(result, toy_proxy)
    assert result["selected_name"] == "expert_b" and result["precision"] == "float32"
    assert result["pairwise"] and result["fallback"]["policy"] == "baseline"
    assert result["fallback"]["fired"] == (result["fallback"]["p_better"] < 0.5)


def test_missing_selector_inputs_are_explained(setup):
    _, pool, task = setup
    experts_only = [e for e in pool if e.role == "feature_vector"]
    with pytest.raises(selectors.SelectorUnavailable, match="EPN"):
        ranking.rank(experts_only, task, "domain_prediction", {"resolution": 16}, cache_dir=None)
    with pytest.raises(selectors.SelectorUnavailable, match="classifier"):
        ranking.rank(experts_only, task, "label_matching", cache_dir=None, label_priors={"x": [1]})
    with pytest.raises(ValueError, match="unknown selection method"):
        ranking.rank(pool, task, "oracle", cache_dir=None)


class ArrayTask:
    """A task over in-memory arrays, for labels a real task would refuse to hold."""

    def __init__(self, labels, num_classes=3):
        self.name, self.num_classes, self.labels = "arrays", num_classes, np.asarray(labels)

    def split_size(self, split):
        return None  # unknown without reading, as for a TFDS task

    def load(self, split, data_dir=None, image_size=None):
        images = np.random.default_rng(0).random((len(self.labels), 8, 8, 3)).astype("float32")
        return tf.data.Dataset.from_tensor_slices({"image": images, "label": self.labels})


@pytest.mark.parametrize(
    "labels, message",
    [
        ([0, 1, 5, 1], "labels must be in"),
        ([1, 1, 1], "at least 2 classes"),
        ([0], "at least 2 images"),
    ],
)
def test_bad_task_labels_are_refused(setup, labels, message):
    _, pool, _ = setup
    with pytest.raises(ValueError, match=message):
        ranking.rank(pool[2:3], ArrayTask(labels), "knn", {"resolution": 8}, cache_dir=None)
