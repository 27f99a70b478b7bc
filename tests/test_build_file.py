"""Keeps the Bazel BUILD file in step with the tree: every module and test file belongs to a target."""

import pathlib
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("bit_experts", "hub_export", "vtab_eval")


def _read_build():
    """Evaluates BUILD (Starlark is Python-compatible here) with recording stand-ins for the rules."""
    targets = {}

    def rule(kind):
        def record(name, **attrs):
            assert name not in targets, f"BUILD defines target {name!r} twice"
            targets[name] = dict(attrs, kind=kind)

        return record

    namespace = {
        "load": lambda *args, **kwargs: None,
        "package": lambda **kwargs: None,
        "licenses": lambda *args: None,
        "exports_files": lambda *args, **kwargs: None,
        "glob": lambda patterns, **kwargs: sorted(
            str(p.relative_to(ROOT)) for pattern in patterns for p in ROOT.glob(pattern)
        ),
        "py_library": rule("py_library"),
        "py_test": rule("py_test"),
        "py_binary": rule("py_binary"),
    }
    exec(compile((ROOT / "BUILD").read_text(), "BUILD", "exec"), namespace)
    return targets


def _sources(targets, kind):
    owned = {}
    for name, target in targets.items():
        if target["kind"] == kind:
            for src in target.get("srcs", []):
                assert src not in owned, f"{src} is in both {owned[src]} and {name}"
                owned[src] = name
    return owned


def test_every_module_is_in_exactly_one_py_library():
    libraries = _sources(_read_build(), "py_library")
    modules = sorted(
        str(p.relative_to(ROOT)) for package in PACKAGES for p in (ROOT / package).rglob("*.py")
    )
    missing = [m for m in modules if m not in libraries]
    assert not missing, f"modules without a py_library target in BUILD: {missing}"


def test_every_test_file_has_a_py_test_and_helpers_a_testonly_library():
    targets = _read_build()
    tests = _sources(targets, "py_test")
    test_files = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").rglob("test_*.py"))
    missing = [t for t in test_files if t not in tests]
    assert not missing, f"test files without a py_test target in BUILD: {missing}"
    helpers = [
        str(p.relative_to(ROOT))
        for p in (ROOT / "tests").rglob("*.py")
        if not p.name.startswith("test_")
    ]
    libraries = _sources(targets, "py_library")
    for helper in helpers:
        assert helper in libraries, f"test helper {helper} has no py_library target"
        assert targets[libraries[helper]].get("testonly"), f"{libraries[helper]} must be testonly"


def test_every_dependency_names_a_defined_target():
    targets = _read_build()
    for name, target in targets.items():
        for dep in target.get("deps", []):
            assert dep.startswith(":"), f"{name}: dependency {dep!r} should be a local ':target'"
            assert dep[1:] in targets, f"{name}: dependency {dep!r} is not defined in BUILD"
        for src in target.get("srcs", []):
            assert (ROOT / src).is_file(), f"{name}: source {src} does not exist"


@pytest.mark.skipif(shutil.which("bazel") is None, reason="Bazel is not installed")
def test_bazel_query_accepts_the_build_file():
    result = subprocess.run(
        ["bazel", "query", "//..."], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-2000:]
