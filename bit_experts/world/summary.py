"""A short text summary of the offline world, for --help texts and the docs."""

from __future__ import annotations

import collections

from bit_experts.world import downstream, fonts, inventory


def describe() -> str:
    """Scripts and groups with their class counts, upstream vs held-out fonts, downstream tasks."""
    classes = inventory.glyphs()
    per_group = collections.Counter(g.group for g in classes)
    lines = [
        f"Upstream: {len(classes)} character classes, hierarchy {inventory.ROOT} > script > "
        "group > character, plus cross-cutting parents:"
    ]
    for script, groups in inventory.SCRIPTS.items():
        parts = ", ".join(f"{group} ({per_group[group]})" for group, _ in groups)
        lines.append(f"  {script}: {parts}")
    for parent, spanned in inventory.CROSS_CUTTING.items():
        lines.append(f"  {parent} (cross-cutting): {', '.join(spanned)}")
    lines.append(f"Upstream fonts: {', '.join(fonts.UPSTREAM_FONTS)}")
    lines.append(f"Held-out fonts (downstream only): {', '.join(fonts.HELDOUT_FONTS)}")
    lines.append(f"Demo downstream tasks: {', '.join(downstream.DEMO_TASKS)}")
    lines.append(f"Task bank: {', '.join(downstream.BANK)}")
    other = [t for t in downstream.TASKS if t not in downstream.BANK + downstream.DEMO_TASKS]
    lines.append(f"Other downstream tasks: {', '.join(other) or 'none'}")
    return "\n".join(lines)
