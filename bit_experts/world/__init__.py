"""The embedded offline world: a generated glyph dataset with an is-a hierarchy; downstream tasks.

Nothing is downloaded: glyphs come from the fonts inside matplotlib and the real-image task from
scikit-learn's bundled digits. See docs/world.md.
"""

from bit_experts.world.downstream import (
    BANK,
    DEMO_TASKS,
    KNOBS,
    TASKS,
    Task,
    build_task,
    write_downstream_tasks,
)
from bit_experts.world.summary import describe
from bit_experts.world.upstream import UpstreamWorld, generate_upstream

__all__ = [
    "BANK",
    "DEMO_TASKS",
    "KNOBS",
    "TASKS",
    "Task",
    "UpstreamWorld",
    "build_task",
    "describe",
    "generate_upstream",
    "write_downstream_tasks",
]
