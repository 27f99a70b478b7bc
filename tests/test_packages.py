"""The tests import the real packages, not the tests/<package> folders that mirror their layout.

Those folders have no __init__.py, so with only "tests" on the path they became namespace packages
named bit_experts / hub_export / vtab_eval, hid the packages' __init__.py and made their public
re-exports (docs/api.md) unreachable in tests. pyproject.toml puts the repository root first.
"""

import importlib
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "package, public_name",
    [
        ("bit_experts", "load_expert"),
        ("hub_export", "publish_collection"),
        ("vtab_eval", "make_config"),
        ("vtab_eval", "evaluate"),
        ("vtab_eval", "run_command"),  # the old spelling, kept for one release
    ],
)
def test_packages_resolve_to_the_source_tree_with_their_public_names(package, public_name):
    module = importlib.import_module(package)
    assert module.__file__ is not None, f"{package} imported as a namespace package"
    assert pathlib.Path(module.__file__) == ROOT / package / "__init__.py"
    assert callable(getattr(module, public_name))
