"""Ranking a pool with every selector; each picks a planted best expert."""

import numpy as np
import pytest
import tensorflow as tf
import vtab_eval_toys as toys

from vtab_eval import ranking, selectors, tasks

Entry = toys.Entry


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("ranking")
    save = lambda name, kind, **kw: toys.save_toy_module(str(root / name), kind, **kw)
    pool = [
        Entry(save("b", "noise"), "baseline", "baseline", "feature_vector", {}),
        Entry(save("e_noise", "noise"), "expert_a", "full", "feature_vector", {"slice": "a"}),
        Entry(save("e_colour", "colour"), "expert_b", "full", "feature_vector", {"slice": "b"}),
        Entry(save("e_nan", "nan"), "expert_c", "full", "feature_vector", {"slice": "c"}),
        # The EPN believes every image belongs to domain "b".
        Entry(
            save("epn", "const", values=[-3.0, 4.0, -2.0]),
            "epn",
            "epn",
            "epn",
            {"outputs": ["a", "b", "c"], "output_activation": "sigmoid"},
        ),
        # The baseline classifier predicts upstream labels 2 and 3.
        Entry(
            save("clf", "const", values=[-9.0, -9.0, 5.0, 5.0]),
            "baseline_classifier",
            "baseline",
            "classifier",
            {"output_activation": "sigmoid"},
        ),
    ]
    task = tasks.get_task("folder:" + toys.make_colour_folder(str(root / "data"), per_class=8))
    return root, pool, task


def test_knn_picks_the_informative_expert_and_reports_bad_ones(setup):
    root, pool, task = setup
    result = ranking.rank(pool, task, "knn", resolution=16, cache_dir=str(root / "cache"))
    assert result["selected"] == pool[2].handle and result["selected_name"] == "expert_b"
    assert [e["name"] for e in result["experts"]] == ["expert_a", "expert_b", "expert_c"]
    statuses = {e["name"]: e["status"] for e in result["experts"]}
    assert statuses == {"expert_a": "ok", "expert_b": "ok", "expert_c": "left_out"}
    assert [x["handle"] for x in result["left_out"]] == [pool[3].handle]
    scores = {e["name"]: e["score"] for e in result["experts"]}
    assert scores["expert_b"] == 1.0 and scores["expert_a"] < 0.8
    assert result["num_images"] == 19 and result["higher_is_better"]


def test_domain_prediction_and_label_matching_pick_planted_experts(setup):
    root, pool, task = setup
    dp = ranking.rank(pool, task, "domain_prediction", resolution=16, cache_dir=str(root / "c"))
    assert dp["selected_name"] == "expert_b"
    priors = {
        "expert_a": np.array([5.0, 5.0, 0.0, 0.0]),
        "expert_b": np.array([0.0, 1.0, 4.0, 5.0]),
        "expert_c": np.array([1.0, 1.0, 1.0, 1.0]),
    }
    lm = ranking.rank(
        pool, task, "label_matching", resolution=16, cache_dir=str(root / "c"), label_priors=priors
    )
    assert lm["selected_name"] == "expert_b" and not lm["higher_is_better"]
    assert lm["experts"][1]["score"] < lm["experts"][2]["score"] < lm["experts"][0]["score"]


def test_random_is_seeded_and_baseline_picks_b(setup):
    _, pool, task = setup
    a = ranking.rank(pool, task, "random", seed=5)
    assert a == ranking.rank(pool, task, "random", seed=5)
    handles = [e.handle for e in ranking.candidates(pool)]
    expected = selectors.select_best(selectors.random_scores(handles, 5)).selected
    assert a["selected"] == expected
    assert ranking.rank(pool, task, "baseline")["selected_name"] == "baseline"
    assert (
        ranking.rank(pool, task, "random", seed=5, include_baseline=True)["experts"][0]["name"]
        == "baseline"
    )


def test_missing_selector_inputs_are_explained(setup):
    _, pool, task = setup
    experts_only = [e for e in pool if e.role == "feature_vector"]
    with pytest.raises(ranking.SelectorUnavailable, match="EPN"):
        ranking.rank(experts_only, task, "domain_prediction", resolution=16)
    with pytest.raises(ranking.SelectorUnavailable, match="classifier"):
        ranking.rank(experts_only, task, "label_matching", resolution=16, label_priors={"x": [1]})
    with pytest.raises(ValueError, match="unknown selection method"):
        ranking.rank(pool, task, "oracle")


class ArrayTask:
    """A task over in-memory arrays, for labels a real task would refuse to hold."""

    def __init__(self, labels, num_classes=3):
        self.name, self.num_classes, self.labels = "arrays", num_classes, np.asarray(labels)

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
        ranking.rank(pool[2:3], ArrayTask(labels), "knn", resolution=8)
