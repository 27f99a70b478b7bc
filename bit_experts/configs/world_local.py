"""The embedded glyph world on a CPU: baseline, 3 full experts, 3 adapter experts and the EPN.

Command:
  python -m bit_experts.train --config=world_local --workdir=/tmp/bit_experts/world_local

Variants (`--config=world_local:VARIANT`):
  (none)   r14_tiny at 32 px, 9400 upstream images (470 characters x 20), batch 64; baseline 1200
           steps, each full and adapter expert 200 steps, EPN 300 steps. Crops keep >= 50% of the
           image and there are no flips (a mirrored glyph is another glyph).
  quick    940 images, batch 16, 2-6 steps per model: a smoke run for tests (~1 min).
  control  as (none), with random control experts of the same sizes (paper appendix G).

Expected runtime on 2 CPU cores (default strategy): about 4-5 minutes for the whole job (see
docs/training.md for measured numbers). Expected result: models/ holds baseline, expert_<domain> x 3,
adapters (3 experts) and epn; the baseline's training loss falls from ~7 (the label prior) to ~2,
with a training-batch precision@1 around 0.6 at the end.
"""


def get_config(arg=None):
    config = {
        "upstream": {
            "source": "world",
            "world_images_per_class": 20,
            "world_image_size": 32,
            "crop_min_area": 0.5,
            "flip": False,
        },
        "hierarchy": {"source": "upstream"},
        "experts": {"top_k": 3},
        "model": {"preset": "r14_tiny", "image_size": 32},
        "batch_size": 64,
        "baseline": {"steps": 1200, "base_lr": 1.6, "warmup_steps": 100},
        "full": {"steps": 200, "base_lr": 0.4, "warmup_steps": 20},
        "adapter": {"steps": 200, "base_lr": 1.6, "warmup_steps": 20},
        "epn": {"steps": 300, "base_lr": 0.8, "warmup_steps": 30},
        "checkpoint_every": 100,
        "log_every": 100,
    }
    if arg in (None, ""):
        return config
    if arg == "control":
        config["experts"]["control"] = True
        return config
    if arg == "quick":
        config["upstream"]["world_images_per_class"] = 2
        config["model"]["preset"] = "r14_micro"
        config["batch_size"] = 16
        config["baseline"].update(steps=6, warmup_steps=2)
        for stage in ("full", "adapter", "epn"):
            config[stage].update(steps=3, warmup_steps=1)
        config["checkpoint_every"] = 2
        config["log_every"] = 2
        return config
    raise ValueError(f"unknown world_local variant {arg!r}; expected none, 'quick' or 'control'")
