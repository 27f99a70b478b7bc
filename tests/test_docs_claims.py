"""Numbers the docs state about the code, checked against the code."""

import pathlib
import re

from bit_experts.hierarchy import Hierarchy
from bit_experts.world import inventory

DOCS = pathlib.Path(__file__).resolve().parents[1] / "docs"


def test_world_doc_states_the_hierarchy_depth_the_code_returns():
    text = " ".join((DOCS / "world.md").read_text().split())
    stated = re.search(r"`Hierarchy\.depth` (\d+)", text)
    assert stated, "docs/world.md no longer states Hierarchy.depth"
    hierarchy = Hierarchy.from_edges(inventory.hierarchy_edges(inventory.glyphs()))
    assert hierarchy.depth == int(stated.group(1))


def test_import_bit_experts_is_enough_for_keras_load_model(tmp_path):
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    from bit_experts.presets import create_model  # noqa: PLC0415

    path = str(tmp_path / "m.keras")
    create_model("r14_micro", num_classes=2).save(path)
    # A fresh interpreter that imports only keras and the package, as docs/workdir.md says.
    script = f"import keras, bit_experts; print(type(keras.models.load_model({path!r})).__name__)"
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "BiTResNetV2"
