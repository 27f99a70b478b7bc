r"""Same numbers before and after a change of the evaluation code (issue 22: "a refactor that
changes a number is a bug").

    python -m benchmarks.same_scores run --tree=/tmp/before --out=/tmp/same/before
    python -m benchmarks.same_scores run --tree=. --out=/tmp/same/after --inputs=/tmp/same/before
    python -m benchmarks.same_scores compare /tmp/same/before /tmp/same/after

`run` executes, with the code of `--tree` (a checkout of any commit) and op determinism on:

1. `python -m vtab_eval.demo --quick` (the whole main job, tiny sizes);
2. `python -m vtab_eval.run` on two bank tasks with every selector, two selections, two retrains
   and a two-setting sweep (so tuning, the best-setting rule and retrains all run);
3. `python -m vtab_eval.audit --quick` on the same two bank tasks;
4. `python -m vtab_eval.rank` with each proxy, the EPN and label matching, on one of them.

Every run works in one fixed folder (then moved to `--out`), so recorded paths are equal between
runs. Steps 2-4 read the demo's collection and the bank of `--inputs` (default: this run's own), so
two trees compared on the same inputs differ only by their evaluation code. `compare` walks every JSON
result the runs wrote (results, rankings, summaries, the audit) and prints each leaf that differs,
ignoring what names a run rather than measures it (content keys, paths, times, cache counts). It
exits 1 when a number differs. About 25 minutes per `run` on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys

BANK_TASKS = ("glyph_orientation", "digits_noisy")
WORK = "/tmp/same_scores_work"
# Keys whose values name or time a run rather than measure it.
IGNORED_KEYS = {
    "identity",
    "key",
    "spec_keys",
    "seconds",
    "wall_seconds",
    "outputs",
    "cache",
    "computed",
    "cached",
    "command",
    "memo_dir",
    "collection",
    "forward",
    "timing",
    "trained",
    "task_fingerprint",
    "sha256",
    "source_fingerprint",
}


def _python(tree, args, log):
    env = dict(os.environ, PYTHONPATH=os.path.abspath(tree))
    command = [sys.executable, "-m", *args]
    log.write("$ " + " ".join(command) + "\n")
    log.flush()
    subprocess.run(command, cwd=tree, env=env, check=True, stdout=log, stderr=subprocess.STDOUT)


def run(tree, out, inputs=None, work=WORK):
    """Runs the four commands with `tree`'s code, in `work`, then moves it to `out`.

    Every run works in the same folder (`work`), so that the paths recorded in results (task names
    of folder tasks, handles) are equal between runs. With `inputs` (an earlier run's `out`), its
    collection and bank replace this run's before steps 2-4, so that they read the same bytes.
    """
    if os.path.exists(out):
        raise SystemExit(f"{out} exists; give a new --out")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    env = dict(os.environ, PYTHONPATH=os.path.abspath(tree))
    with open(os.path.join(work, "log.txt"), "a", encoding="utf-8") as log:
        _python(tree, ["vtab_eval.demo", "--quick", f"--workdir={work}/demo"], log)
        bank, collection = os.path.join(work, "bank"), os.path.join(work, "demo", "collection")
        if inputs:
            shutil.rmtree(collection)
            shutil.copytree(os.path.join(inputs, "demo", "collection"), collection, symlinks=True)
            shutil.copytree(os.path.join(inputs, "bank"), bank, symlinks=True)
        else:
            code = (
                "from bit_experts import world; "
                f"world.write_downstream_tasks({bank!r}, seed=0, image_size=32, "
                f"tasks={list(BANK_TASKS)!r}, test_images=200)"
            )
            command = [sys.executable, "-c", code]
            subprocess.run(command, cwd=tree, env=env, check=True, stdout=log, stderr=log)
        tasks = ",".join(f"folder:{bank}/{t}" for t in BANK_TASKS)
        _python(
            tree,
            [
                "vtab_eval.run",
                f"--collection={collection}",
                f"--tasks={tasks}",
                f"--output_dir={work}/run",
                "--selectors=baseline,random,label_matching,domain_prediction,knn,logme,"
                "linear_loo,ncm,gbc,hindsight",
                "--learning_rates=0.01,0.03",
                "--steps=4",
                "--batch_size=16",
                "--resolution=32",
                "--num_selections=2",
                "--num_retrains=2",
                "--selection_resolution=32",
            ],
            log,
        )
        _python(
            tree,
            [
                "vtab_eval.audit",
                f"--collection={collection}",
                f"--tasks={tasks}",
                f"--output_dir={work}/audit",
                "--quick",
                "--seeds=0,1",
                "--selection_resolution=32",
            ],
            log,
        )
        first = f"folder:{bank}/{BANK_TASKS[0]}"
        for method in ("knn", "logme", "linear_loo", "ncm", "gbc", "random", "baseline"):
            extra = ["--fallback=baseline"] if method in ("knn", "ncm") else []
            _python(
                tree,
                [
                    "vtab_eval.rank",
                    f"--collection={collection}",
                    f"--dataset={first}",
                    f"--output_json={work}/rank/{method}.json",
                    f"--method={method}",
                    "--resolution=32",
                    *extra,
                ],
                log,
            )
    shutil.move(work, out)


def _json_files(root):
    found = {}
    for folder, _, names in os.walk(root):
        for name in names:
            if (
                name.endswith(".json")
                and "finetunes" not in folder
                and "feature_cache" not in folder
            ):
                path = os.path.join(folder, name)
                found[os.path.relpath(path, root)] = path
    return found


def _normalise(value, root):
    """`value` with the run's own folder (and the inputs' one, `ROOTS`) written as <OUT>."""
    if isinstance(value, str):
        for prefix in (root, *ROOTS):
            value = value.replace(prefix, "<OUT>")
    return value


def _diff(a, b, where, root_a, root_b, out):
    if isinstance(a, dict) and isinstance(b, dict):
        a = {_normalise(k, root_a): v for k, v in a.items()}
        b = {_normalise(k, root_b): v for k, v in b.items()}
        for key in sorted(set(a) | set(b)):
            if key in IGNORED_KEYS:
                continue
            if key not in a or key not in b:
                out.append(f"{where}.{key}: only in {'after' if key in b else 'before'}")
                continue
            _diff(a[key], b[key], f"{where}.{key}", root_a, root_b, out)
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            out.append(f"{where}: {len(a)} items before, {len(b)} after")
            return
        for i, (x, y) in enumerate(zip(a, b)):
            _diff(x, y, f"{where}[{i}]", root_a, root_b, out)
    elif a != b and _normalise(a, root_a) != _normalise(b, root_b):
        out.append(f"{where}: {a!r} before, {b!r} after")


ROOTS = []  # both runs' folders, set by `compare`


_RANKING = re.compile(r"(.*/rankings/.*/[a-z_0-9]+)-[0-9a-f]{16}\.json$")


def _paired(files):
    """`files` (name -> path) with each kept ranking, named `<method>-<identity>.json`, renamed
    `<method>#<i>.json` (i: its order by seed): an identity's definition may change between two
    trees while the ranking it names stays the same."""
    out, groups = {}, {}
    for name, path in files.items():
        found = _RANKING.match(name)
        if found is None:
            out[name] = path
        else:
            groups.setdefault(found[1], []).append(path)
    for stem, paths in groups.items():

        def seed(path):
            with open(path, encoding="utf-8") as f:
                return json.load(f).get("seed") or 0

        for i, path in enumerate(sorted(paths, key=seed)):
            out[f"{stem}#{i}.json"] = path
    return out


def compare(before, after):
    """Lines naming every differing leaf of the JSON files both runs wrote (empty: the same)."""
    before, after = os.path.abspath(before), os.path.abspath(after)
    ROOTS[:] = [before, after]
    files_a, files_b = _paired(_json_files(before)), _paired(_json_files(after))
    lines = [f"{name}: only before" for name in sorted(set(files_a) - set(files_b))]
    lines += [f"{name}: only after" for name in sorted(set(files_b) - set(files_a))]
    compared = 0
    for name in sorted(set(files_a) & set(files_b)):
        if name.startswith("demo/upstream") or name.endswith("timings.json"):
            continue
        with open(files_a[name], encoding="utf-8") as f:
            a = json.load(f)
        with open(files_b[name], encoding="utf-8") as f:
            b = json.load(f)
        found = []
        _diff(a, b, name, before, after, found)
        lines += found
        compared += 1
    return compared, lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    r = sub.add_parser("run")
    r.add_argument("--tree", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--inputs", default=None)
    r.add_argument("--work", default=WORK)
    c = sub.add_parser("compare")
    c.add_argument("before")
    c.add_argument("after")
    args = parser.parse_args(argv)
    if args.mode == "run":
        run(args.tree, args.out, args.inputs, args.work)
        return 0
    compared, lines = compare(args.before, args.after)
    print("\n".join(lines))
    print(f"headline: {compared} JSON files compared, {len(lines)} differences")
    return 1 if lines else 0


if __name__ == "__main__":
    sys.exit(main())
