"""EPN and baseline-classifier probabilities of a work directory on task folders, saved to npz.

python probs.py WORKDIR TASKS_DIR OUT_NPZ task ...
"""

import json
import sys

import numpy as np
import tensorflow as tf

from bit_experts.training import outputs
from vtab_eval.tasks import get_task

workdir, tasks_dir, out = sys.argv[1:4]
names = sys.argv[4:]
epn = outputs.load_model(workdir, "epn")
base = outputs.load_model(workdir, "baseline")
domains = json.load(open(f"{workdir}/expert_domains.json"))
info = json.load(open(f"{workdir}/models/epn/info.json"))
saved = {
    "domains": np.array([d["name"] for d in domains]),
    "counts": np.array([d["image_count"] for d in domains]),
    "priors": np.array([d["label_prior"] for d in domains]),
    "epn_outputs": np.array(info["experts"]),
    "num_images": info["image_count"],
}
for name in names:
    task = get_task(f"folder:{tasks_dir}/{name}")
    ds = task.load("train800val200", image_size=32).batch(100)
    e, b = [], []
    for batch in ds:
        e.append(tf.sigmoid(epn(batch["image"], training=False)).numpy())
        b.append(tf.sigmoid(base(batch["image"], training=False)).numpy())
    saved[f"epn/{name}"] = np.concatenate(e).astype(np.float64)
    saved[f"cls/{name}"] = np.concatenate(b).astype(np.float64)
    print(name, saved[f"epn/{name}"].shape, flush=True)
np.savez(out, **saved)
