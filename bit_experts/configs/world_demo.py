"""The offline demo's upstream job: baseline, 6 full experts, 6 adapter experts and the EPN.

Command (the demo, `python -m vtab_eval.demo`, runs this as its first stage):
  python -m bit_experts.train --config=world_demo --workdir=runs/demo/upstream

Variants (`--config=world_demo:VARIANT`):
  (none)  r14_tiny at 32 px on five scripts of the glyph world (latin, greek, cyrillic, numerals,
          hebrew: 186 characters x 40 images = 7440 images), batch 64. The six largest non-root
          hierarchy nodes become experts: small_letters, capital_letters, latin, cyrillic,
          numerals, greek (the root `glyph` is left out: see `experts` below).
          Baseline 800 steps, each full expert 300 steps, each adapter expert 1000 steps, EPN 150
          steps.
  quick   the same path with 3 images per character, r14_micro and a few steps per model (tests).

Expected runtime on 2 CPU cores: see the README's demo section (measured by the demo itself).
"""

# Five scripts keep the world small enough for 2 cores while leaving `greek` among the six largest
# nodes, so the held-out-font Greek task has a matching expert.
DEMO_SCRIPTS = ["latin", "greek", "cyrillic", "numerals", "hebrew"]


def get_config(arg=None):
    config = {
        "upstream": {
            "source": "world",
            "world_images_per_class": 40,
            "world_image_size": 32,
            "world_scripts": list(DEMO_SCRIPTS),
            "crop_min_area": 0.5,
            "flip": False,  # a mirrored glyph is another glyph
        },
        "hierarchy": {"source": "upstream"},
        # The root's slice is every image, so its expert would be B trained further on B's own
        # data; the demo ranks B itself with the experts as the generic member instead, and keeps
        # `greek` in the top 6 at no extra training cost.
        "experts": {"top_k": 6, "include_roots": False},
        "model": {"preset": "r14_tiny", "image_size": 32},
        "batch_size": 64,
        "baseline": {"steps": 800, "base_lr": 1.6, "warmup_steps": 80},
        # 300 steps (100 before): at 100 the full experts were not better than B on their own
        # slices (-5.2 to +3.7 points); at 300 five of six are, with paired 95% intervals above 0
        # (docs/selection.md, "Are the experts experts?").
        "full": {"steps": 300, "base_lr": 0.4, "warmup_steps": 30},
        # 1000 steps at base_lr 16 (100 at 1.6 before): the adapters train only themselves, on B's
        # frozen backbone and head, and at 1.6 their output stayed at 1-15% of the residual stream
        # they add to; at 100 or 300 steps with base_lr 1.6 to 40 none of the six was better than
        # B on its own slice; at 1000 steps and 16, four of six are, with paired 95% intervals
        # above 0 (n = 1; docs/results/adapter_experts_2026-12-07.md).
        "adapter": {"steps": 1000, "base_lr": 16.0, "warmup_steps": 100},
        "epn": {"steps": 150, "base_lr": 0.8, "warmup_steps": 15},
        "checkpoint_every": 100,
        "log_every": 100,
    }
    if arg in (None, ""):
        return config
    if arg == "quick":
        config["upstream"]["world_images_per_class"] = 3
        config["model"]["preset"] = "r14_micro"
        config["batch_size"] = 16
        config["baseline"].update(steps=6, warmup_steps=2)
        for stage in ("full", "adapter", "epn"):
            config[stage].update(steps=3, warmup_steps=1)
        config["checkpoint_every"] = 3
        config["log_every"] = 3
        return config
    raise ValueError(f"unknown world_demo variant {arg!r}; expected none or 'quick'")
