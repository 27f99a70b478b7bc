"""The examples of docs/api.md run: every ```python block, in order, as one session (issue 14).

They create their own tiny data (a random r14_micro BiT checkpoint and a 3-class colour folder) in a
temporary folder, so they run offline; each block's own asserts check what the doc claims. They run
in a fresh interpreter with the repository first on the path, as a user's script would: under
pytest, `tests/hub_export/` (no `__init__.py`) would shadow the package's `__init__` and with it the
re-exports the examples use.
"""

import ast
import os
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
API = ROOT / "docs" / "api.md"
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def python_blocks(text):
    """The code of every ```python block of a markdown text, in order."""
    return [m.group(1) for m in _BLOCK.finditer(text)]


def public_names(package):
    """The names a package's `__init__` re-exports (the keys of its `_API` table), read statically."""
    tree = ast.parse((ROOT / package / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "_API" for t in node.targets
        ):
            return sorted(ast.literal_eval(node.value))
    raise AssertionError(f"{package}/__init__.py has no _API table")


def test_every_public_name_is_documented_with_an_example():
    text = API.read_text()
    code = "\n".join(python_blocks(text))
    names = [(p, n) for p in ("hub_export", "vtab_eval") for n in public_names(p)]
    assert ("vtab_eval", "rank_command") in names and ("hub_export", "import_checkpoint") in names
    assert {
        ("vtab_eval", n) for n in ("make_config", "evaluate", "rank_experts", "write_report")
    } <= set(names)
    for package, name in names + [("bit_experts", "load_expert")]:
        assert f"`{package}.{name}`" in text, f"docs/api.md does not document {package}.{name}"
        if not name[0].isupper():  # the errors are shown inside other examples
            assert f"{package}.{name}(" in code, f"docs/api.md has no example of {name}"


def test_api_examples_run(tmp_path):
    blocks = python_blocks(API.read_text())
    assert len(blocks) >= 8
    script = tmp_path / "api_examples.py"
    parts = ["import tempfile", f"tempfile.tempdir = {str(tmp_path)!r}  # mkdtemp lands here"]
    for i, code in enumerate(blocks):
        parts.append(f"print('--- docs/api.md block {i}', flush=True)\n{code}")
    script.write_text("\n".join(parts))
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    )
    proc = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-5000:])
    assert f"--- docs/api.md block {len(blocks) - 1}" in proc.stdout
    assert "no_such_collection' does not exist" in proc.stdout  # the CollectionError example
