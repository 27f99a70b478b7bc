"""A tiny upstream for the training tests: colour-patch images under a three-group hierarchy."""

import numpy as np

from bit_experts import data
from bit_experts.training import config

GROUPS = {"red": ["r0", "r1", "r2"], "green": ["g0", "g1"], "blue": ["b0", "b1", "b2", "b3"]}
COLOURS = {"red": (200, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 200)}


def toy_source(per_class=6, size=16):
    """Three colour groups of leaf classes under one root; images are noisy colour patches."""
    rng = np.random.default_rng(0)
    names = [leaf for leaves in GROUPS.values() for leaf in leaves]
    edges = [("root", g) for g in GROUPS] + [(g, leaf) for g, ls in GROUPS.items() for leaf in ls]
    labels = np.repeat(np.arange(len(names)), per_class)
    group_of = {leaf: g for g, ls in GROUPS.items() for leaf in ls}
    base = np.array([COLOURS[group_of[names[i]]] for i in labels], np.float64)
    noise = rng.normal(0, 20, (len(labels), size, size, 3))
    images = np.clip(base[:, None, None, :] + noise, 0, 255).astype(np.uint8)
    return data.array_source("toy", images, labels, names, edges)


def toy_config(**stage_steps):
    """r14_micro at 16 px, the three colour groups as experts, 2 steps per stage unless given."""
    cfg = {
        "experts": {"top_k": 3, "include_roots": False},  # The three colour groups.
        "model": {"preset": "r14_micro", "image_size": 16},
        "batch_size": 8,
        "checkpoint_every": 1,
        "log_every": 1,
    }
    for stage in config.STAGES:
        cfg[stage] = {"steps": stage_steps.get(stage, 2), "warmup_steps": 1, "base_lr": 0.5}
    return cfg
