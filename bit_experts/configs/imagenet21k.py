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

  The paper's public experts were fine-tuned from BiT-M R50x1 instead of a baseline trained here:
  add `--init_from=BiT-M-R50x1.npz --set baseline.steps=N` (B = BiT-M's backbone with a new
  21k head, trained N steps; docs/training.md, "Starting B from a checkpoint").

Variants:
  (none)   as above.
  local    the same data with r14_micro at 64 px and 20 steps per model, to check a data setup on a
           workstation.

Expected runtime: days on a TPU v3-32 (not run in this repository). Expected result: a baseline and
50 full + 50 adapter experts ready for `hub_export`; their accuracy has not been measured here.
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
    if arg == "local":
        config["model"] = {"preset": "r14_micro", "image_size": 64, "precision": "float32"}
        config["batch_size"] = 32
        config["upstream"]["shuffle_buffer"] = 1_000
        for stage in ("baseline", "full", "adapter", "epn"):
            config[stage].update(steps=20, warmup_steps=2)
        config["checkpoint_every"] = 10
        config["log_every"] = 5
        return config
    raise ValueError(f"unknown imagenet21k variant {arg!r}; expected none or 'local'")
