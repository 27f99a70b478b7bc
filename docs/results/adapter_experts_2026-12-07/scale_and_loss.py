"""Study probe (docs/results/adapter_experts_2026-12-07.md): for a finished world job, prints

- per adapter expert and block, the RMS of the residual stream entering the block and of the
  expert's adapter branch added to it (held-out images);
- per slice, B's, each adapter expert's and each full expert's held-out sigmoid cross-entropy
  (summed over labels) split into the slice's labels and the others, and the slice-restricted
  top-1 accuracy.

  python docs/results/adapter_experts_2026-12-07/scale_and_loss.py WORKDIR
"""

import json
import sys

import numpy as np
import tensorflow as tf
from keras import ops

from bit_experts.layers import pad_for_kernel
from bit_experts.training import outputs, slice_eval


def rms(t):
    return float(ops.sqrt(ops.mean(ops.square(t))))


def scales(model, images, expert_id):
    x = ops.cast(images, "float32") * 2.0 - 1.0
    x = model.root_conv(pad_for_kernel(x, 7))
    x = ops.max_pool(pad_for_kernel(x, 3), pool_size=3, strides=2, padding="valid")
    parts = []
    for b, units in enumerate(model.blocks):
        branch = model.adapters[b]._branch(x, ops.convert_to_tensor(expert_id, "int32"))
        parts.append(f"block{b + 1} stream {rms(x):.2f} branch {rms(branch):.3f}")
        x = x + branch
        for unit in units:
            x = unit(x)
    return "; ".join(parts)


def loss_parts(logits, labels, allowed):
    targets = np.eye(logits.shape[1], dtype=np.float32)[labels]
    xent = tf.nn.sigmoid_cross_entropy_with_logits(labels=targets, logits=logits).numpy()
    inside = np.zeros(logits.shape[1], bool)
    inside[allowed] = True
    acc = slice_eval.restricted_accuracy(logits, labels, allowed)
    return (
        f"loss {xent.sum(1).mean():.3f} (slice labels {xent[:, inside].sum(1).mean():.3f}, "
        f"others {xent[:, ~inside].sum(1).mean():.3f}) acc {acc:.3f}"
    )


def main(workdir):
    adapters = outputs.load_model(workdir, "adapters")
    baseline = outputs.load_model(workdir, "baseline")
    info = json.load(open(f"{workdir}/models/adapters/info.json"))
    images, labels = slice_eval.heldout_world_images(workdir, 5)
    x = np.asarray(images, np.float32) / 255.0
    slices = slice_eval.slice_labels(workdir)
    for e in info["experts"]:
        print(e["name"], scales(adapters, x[:256], e["expert_id"]))
    base = np.asarray(baseline(x))
    for e in info["experts"]:
        allowed = slices[e["slice"]]
        rows = np.isin(labels, allowed)
        full = outputs.load_model(workdir, "expert_" + e["slice"])
        print(e["slice"])
        print("  B      ", loss_parts(base[rows], labels[rows], allowed))
        adapted = np.asarray(adapters(x[rows], expert_ids=e["expert_id"]))
        print("  adapter", loss_parts(adapted, labels[rows], allowed))
        print("  full   ", loss_parts(np.asarray(full(x[rows])), labels[rows], allowed))


if __name__ == "__main__":
    main(sys.argv[1])
