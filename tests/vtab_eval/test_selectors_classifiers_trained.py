"""domain_prediction and label_matching with a hierarchy root among the expert domains (issue 25),
on a baseline and an EPN trained by the real job on the colour-patch toy (training_toys: root >
red, green, blue; the root's slice is every image).

The tasks are patches of each colour in a shade upstream never shows, as the demo's held-out fonts
are letters drawn in fonts upstream never uses. Before issue 25 domain_prediction picked the root on
every task: the test first checks that the toy reproduces that (the mean log p, i.e. every share 1),
then that the prior-divided scores of both selectors pick the domain each task comes from.
(label_matching's KL picked the root on the demo world, whose classifier of 186 labels spreads
mass outside any one domain; this one of 9 labels hardly does: test_selectors_classifiers.py has
that case.)
"""

import json
import os

import numpy as np
import pytest
import tensorflow as tf
from training_toys import COLOURS, toy_config, toy_source

from bit_experts.training import job, outputs
from vtab_eval import selectors

STEPS = 30  # of B and of the EPN: enough for both to tell the three colours apart


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("root_eligible"))
    config = toy_config(baseline=STEPS, epn=STEPS)
    config["experts"] = {"top_k": 4, "include_roots": True}  # the root and the three colours
    source = toy_source()
    prepared = job.prepare_job(config, workdir, source=source, print_fn=str)
    prepared.run(["baseline", "epn"])
    domains = prepared.upstream.domains
    assert [d.name for d in domains][0] == "root" and domains[0].image_count == source.num_images
    shares = {d.name: d.image_count / source.num_images for d in domains}
    priors = {d.name: d.label_prior for d in domains}
    epn, classifier = outputs.load_model(workdir, "epn"), outputs.load_model(workdir, "baseline")
    info = json.loads(open(os.path.join(workdir, "models", "epn", outputs.INFO_FILE)).read())
    own = dict(zip(info["experts"], info["upstream_log_p"]))  # the EPN's prior, as published
    return [d.name for d in domains], shares, priors, epn, classifier, own


def _unseen_shade(colour, n=60, size=16, seed=7):
    """`n` patches of `colour` darkened and lifted (0.8 x + 20), a shade upstream never shows."""
    rng = np.random.default_rng([seed, list(COLOURS).index(colour)])
    shade = np.array(COLOURS[colour], np.float64) * 0.8 + 20
    noise = rng.normal(0, 20, (n, size, size, 3))
    return (np.clip(shade + noise, 0, 255) / 255).astype(np.float32)


@pytest.mark.parametrize("colour", list(COLOURS))
def test_the_domain_of_the_task_wins_and_the_root_no_longer_wins_everything(trained, colour):
    names, shares, priors, epn, classifier, own = trained
    images = _unseen_shade(colour)
    best = lambda scores, higher=True: selectors.select_best(scores, higher).selected

    epn_probs = tf.sigmoid(epn(images, training=False)).numpy()
    domain_prediction = selectors.get("domain_prediction").score_probabilities
    raw = domain_prediction(epn_probs, names, dict.fromkeys(names, 0.0))
    assert best(raw) == "root"  # the bias: the root's p is ~1 on every image
    for log_priors in ({k: np.log(v) for k, v in shares.items()}, own):
        scores = domain_prediction(epn_probs, names, log_priors)
        assert best(scores) == colour
        assert scores[colour] > 0 > max(v for k, v in scores.items() if k not in (colour, "root"))

    upstream = tf.sigmoid(classifier(images, training=False)).numpy().astype(np.float64)
    scores = selectors.get("label_matching").score_probabilities(upstream, priors, shares)
    assert best(scores) == colour
    assert scores["root"] == pytest.approx(0.0, abs=1e-9)  # the fallback; sums over 9 labels
