"""Upstream training on ImageNet-21k: an R50x1 baseline, the 50 largest WordNet nodes as experts.

What it does: trains B (R50x1, 224 px, mixed bfloat16, batch 4096, 300k steps of SGD at lr
0.03 x batch/256 with 5k warmup steps and cosine decay, weight decay 1e-4, multi-label sigmoid loss
over the 21k labels) on TFDS `imagenet21k`, chooses the 50 largest nodes of the WordNet hierarchy as
expert domains, fine-tunes one full expert and one adapter expert per domain from B (10k steps each)
and trains the EPN (20k steps). These are this repository's settings, not a published recipe.

Command (TPU; data prepared beforehand with TFDS, never downloaded here):
  python -m bit_experts.train --config=imagenet21k --workdir=gs://BUCKET/i21k --strategy=tpu \
      --set upstream.data_dir=gs://BUCKET/tfds --set hierarchy.source=is_a:/path/to/wordnet.is_a.txt

  The hierarchy is WordNet's `is_a` edge list restricted to ImageNet-21k synsets; the TFDS label
  names must be the synset ids used as node names there. A work directory on GCS needs a local
  mount: checkpoints and models are renamed into place with os.replace (docs/training.md).

Variants:
  (none)   as above: B trained here.
  bit_m    the paper's ImageNet-21k setting: B is BiT-M R50x1 itself (Kolesnikov et al., 2020: the
           BiT ResNet pre-trained on ImageNet-21k), head included, with 0 baseline steps; the
           experts and the EPN are trained from it as above. Give the checkpoint with
           `--init_from=BiT-M-R50x1.npz` (google-research/big_transfer's file; that name is the
           default). Its 21843 outputs must be the upstream labels in the same order.
  local    the same data with r14_micro at 64 px and 20 steps per model, to check a data setup on a
           workstation.

Steps and cost per stage (batch 4096 in every stage, 224 px; an image is one forward and one
backward pass, about 3 forward passes of compute; the adapter stage's backward pass runs through
the frozen backbone but computes no weight gradients there, so it costs somewhat less):

  stage      models x steps     steps      images      vs B's 300k steps
  baseline   1 x 300,000        300,000    1.23e+09    1     (bit_m: 0 steps, 0 images)
  full       50 x 10,000        500,000    2.05e+09    1.67
  adapter    50 x 10,000        500,000    2.05e+09    1.67
  epn        1 x 20,000         20,000     8.19e+07    0.07
  total                         1,320,000  5.41e+09    4.4   (bit_m: 1,020,000 steps, 4.18e+09)

For scale: BiT-M's own pre-training was 90 epochs of ImageNet-21k's ~14M images (Kolesnikov et al.,
2020), ~1.28e9 images, about B's 300k steps here. One expert (10k steps, 4.1e7 images) is 1/30 of
B; so is one Domain Adaptive Transfer fine-tune per task (`bit_experts.training.dat`, which uses
the `full` schedule). Expected runtime: days on a TPU v3-32 (not run in this repository). Expected
result: a baseline and 50 full + 50 adapter experts ready for `hub_export`; their accuracy has not
been measured here.
"""


def get_config(arg=None):
    config = {
        "upstream": {
            "source": "tfds:imagenet21k",
            "data_dir": None,
            "split": "train",
            "shuffle_buffer": 250_000,
        },
        "hierarchy": {"source": "is_a:wordnet.is_a.txt"},
        "experts": {"top_k": 50},
        "model": {"preset": "r50x1", "image_size": 224, "precision": "mixed_bfloat16"},
        "batch_size": 4096,
        "baseline": {"steps": 300_000, "base_lr": 0.03, "warmup_steps": 5_000},
        "full": {"steps": 10_000, "base_lr": 0.03, "warmup_steps": 500},
        "adapter": {"steps": 10_000, "base_lr": 0.03, "warmup_steps": 500},
        "epn": {"steps": 20_000, "base_lr": 0.03, "warmup_steps": 1_000},
        "checkpoint_every": 2_000,
        "log_every": 100,
    }
    if arg in (None, ""):
        return config
    if arg == "bit_m":
        config["init_from"] = "BiT-M-R50x1.npz"
        config["baseline"].update(steps=0, warmup_steps=0)
        return config
    if arg == "local":
        config["model"] = {"preset": "r14_micro", "image_size": 64, "precision": "float32"}
        config["batch_size"] = 32
        config["upstream"]["shuffle_buffer"] = 1_000
        for stage in ("baseline", "full", "adapter", "epn"):
            config[stage].update(steps=20, warmup_steps=2)
        config["checkpoint_every"] = 10
        config["log_every"] = 5
        return config
    raise ValueError(f"unknown imagenet21k variant {arg!r}; expected none, 'bit_m' or 'local'")
