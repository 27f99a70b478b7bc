"""Study probe, not the pipeline (docs/results/adapter_experts_2026-12-07.md).

For each expert domain of a finished world job, trains B plus one adapter set on the domain's slice
with a choice of what trains, and measures it at once on held-out images of the slice against B
(restricted top-1, paired bootstrap interval, as `bit_experts.expert_quality` does):

  adapters            only the adapters (what the adapter stage trains)
  head                only B's label head (adapters stay the identity)
  adapters_head       adapters and the head
  adapters_mask       adapters; the loss sees the out-of-slice logits pushed to -30, so only the
                      slice's labels carry gradient
  adapters_head_mask  both of the above

Each expert gets its own copy of B's head here, which the adapter stage's one shared head cannot
give. Uses Job's private helpers (_create, _plan, _dataset_fn) so the data, schedule and seeds are
the adapter stage's.

  python docs/results/adapter_experts_2026-12-07/one_expert_probe.py WORKDIR MODE STEPS BASE_LR \
      [SLICE,SLICE...]
"""

import json
import shutil
import sys
import time

import keras
import numpy as np

from bit_experts.training import job as jobmod
from bit_experts.training import slice_eval
from bit_experts.training.loop import train_unit
from bit_experts.training.transfer import copy_backbone


class _Masked(keras.Model):
    """The wrapped model's logits plus a fixed offset (the loss then ignores offset labels)."""

    def __init__(self, inner, offset):
        super().__init__()
        self.inner = inner
        self.offset = offset

    def call(self, images, expert_ids=None, training=None):
        return self.inner(images, expert_ids=expert_ids) + self.offset


def main(workdir, mode, steps, lr, only=None):
    cfg = json.load(open(f"{workdir}/config.json"))
    cfg["adapter"].update(steps=steps, base_lr=lr, warmup_steps=steps // 10)
    cfg["log_every"] = steps
    out = f"/tmp/adapt/probe_{mode}_{steps}_{lr}"
    shutil.rmtree(out, ignore_errors=True)
    ignore = shutil.ignore_patterns("checkpoints", "logs", "adapters")
    shutil.copytree(workdir, out, ignore=ignore)
    json.dump(cfg, open(f"{out}/config.json", "w"))
    job = jobmod.prepare_job(cfg, out, print_fn=lambda s: None)
    baseline = job.baseline()
    images, labels = slice_eval.heldout_world_images(out, 10)
    slices = slice_eval.slice_labels(out)
    x = np.asarray(images, np.float32) / 255.0
    base_logits = np.concatenate(
        [np.asarray(baseline(x[i : i + 512])) for i in range(0, len(x), 512)]
    )
    num_labels = job.upstream.source.num_labels
    for d in job.upstream.domains:
        if only and d.name not in only:
            continue
        began = time.time()
        model = job._create("adapters", num_classes=num_labels, num_experts=1)
        model.train_adapters_only()
        if "head" in mode:
            model.head.trainable = True
        if mode == "head":
            for adapter in model.adapters:
                adapter.trainable = False
        trained = model
        if mode.endswith("_mask"):
            offset = np.full((num_labels,), -30.0, np.float32)
            offset[slices[d.name]] = 0.0
            trained = _Masked(model, offset)
        plan = job._plan("adapter", d.name, expert_id=0)
        train_unit(
            plan,
            trained,
            job._dataset_fn(plan, indices=d.image_indices),
            job.strategy,
            f"{out}/ck/{d.name}",
            init_fn=lambda m=model: copy_backbone(m, baseline, head=True),
            log_every=steps,
            checkpoint_every=10**6,
            print_fn=lambda s: None,
        )
        allowed = slices[d.name]
        rows = np.flatnonzero(np.isin(labels, allowed))
        expert = slice_eval.restricted_correct(
            np.asarray(model(x[rows], expert_ids=0)), labels[rows], allowed
        )
        base = slice_eval.restricted_correct(base_logits[rows], labels[rows], allowed)
        low, high = slice_eval.paired_delta_interval(expert, base)
        print(
            f"{mode} steps={steps} lr={lr} {d.name:16s} n={len(rows)} expert "
            f"{expert.mean() * 100:.1f} B {base.mean() * 100:.1f} delta "
            f"{100 * (expert.mean() - base.mean()):+.1f} [{100 * low:+.1f}, {100 * high:+.1f}] "
            f"{'above 0' if low > 0 else 'no'} ({time.time() - began:.0f} s)",
            flush=True,
        )


if __name__ == "__main__":
    args = sys.argv[1:]
    main(args[0], args[1], int(args[2]), float(args[3]), args[4].split(",") if args[4:] else None)
