"""The shipped upstream configs say what they cost: imagenet21k's table against its own values."""

import re

from bit_experts.configs import imagenet21k
from bit_experts.training import config


def _table():
    rows = {}
    for line in imagenet21k.__doc__.splitlines():
        match = re.match(
            r"\s+(baseline|full|adapter|epn)\s+(\d+) x ([\d,]+)\s+([\d,]+)\s+(\S+)", line
        )
        if match:
            stage, models, per_model, steps, images = match.groups()
            rows[stage] = (
                int(models),
                int(per_model.replace(",", "")),
                int(steps.replace(",", "")),
            )
            rows[stage] += (float(images),)
    return rows


def test_imagenet21k_docstring_gives_each_stages_steps_and_images():
    resolved = config.resolve_config(imagenet21k.get_config())
    rows = _table()
    assert sorted(rows) == sorted(config.STAGES)
    experts = resolved["experts"]["top_k"]
    for stage, (models, per_model, steps, images) in rows.items():
        batch = resolved[stage]["batch_size"] or resolved["batch_size"]
        assert per_model == resolved[stage]["steps"], stage
        assert models == (experts if stage in ("full", "adapter") else 1), stage
        assert steps == models * per_model, stage
        assert f"{steps * batch:.2e}" == f"{images:.2e}", stage
    total = sum(r[2] for r in rows.values())
    assert f"total                         {total:,}" in imagenet21k.__doc__
    bit_m = config.resolve_config(imagenet21k.get_config("bit_m"))
    assert bit_m["baseline"]["steps"] == 0 and bit_m["init_from"] == "BiT-M-R50x1.npz"
    assert f"bit_m: {total - rows['baseline'][2]:,} steps" in imagenet21k.__doc__
