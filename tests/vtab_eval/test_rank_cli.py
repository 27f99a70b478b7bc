"""`python -m vtab_eval.rank`: collections of any kind, bad modules, bad tasks, sharding."""

import json
import os
import subprocess
import sys

import pytest
import vtab_eval_toys as toys

from vtab_eval import config, engine

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("rank_cli")
    modules = {k: toys.save_toy_module(str(root / k), k) for k in ("noise", "colour", "nan")}
    handles = toys.write_handle_list(str(root / "pool.txt"), list(modules.values()))
    data = toys.make_colour_folder(str(root / "data"), per_class=8)
    return root, modules, handles, data


def _rank(collection, task, output_json, log=lambda m: None, **selection):
    """What `python -m vtab_eval.rank` does, in this process: its config, then `engine.rank`."""
    cache_dir = selection.pop("cache_dir", None)
    made = config.make(
        collection=collection,
        tasks=[task],
        output_json=output_json,
        cache_dir=cache_dir,
        selection=selection,
    )
    return engine.rank(made, log)


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO, env.get("PYTHONPATH")]))
    return env


def test_command_line_ranks_a_handle_list(setup):
    root, modules, handles, data = setup
    out = root / "cli" / "ranking.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "vtab_eval.rank",
            f"--collection={handles}",
            f"--dataset=folder:{data}",
            f"--output_json={out}",
            "--resolution=16",
            f"--plot_png={root / 'cli' / 'plot.png'}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        env=_env(),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["selected"] == modules["colour"]
    assert [e["handle"] for e in result["experts"]] == list(modules.values())
    assert all("score" in e for e in result["experts"])
    assert result["left_out"][0]["handle"] == modules["nan"]
    assert "non-finite" in result["left_out"][0]["error"]
    assert (root / "cli" / "plot.png").stat().st_size > 0
    # How sure the pick is, on screen: the top candidates with intervals, the win probability.
    lines = proc.stdout.splitlines()
    assert f"selected colour ({modules['colour']}) by knn" in lines
    top = "top candidates, score [95% interval]: colour 1.000 [1.000, 1.000] (selected); noise "
    assert sum(line.startswith(top) for line in lines) == 1
    win = result["pairwise"][0]
    assert f"P(colour beats noise, the runner-up) = {win['p_better']:.3f}" in lines
    assert os.listdir(root / "cli" / "feature_cache")  # Default cache beside the JSON.


def test_one_class_task_is_refused_clearly(setup):
    root, _, handles, _ = setup
    one_class = toys.make_colour_folder(str(root / "one"), per_class=4, num_classes=1)
    with pytest.raises(ValueError, match="class"):
        _rank(handles, f"folder:{one_class}", str(root / "one.json"), log=print)
    assert not (root / "one.json").exists()


def test_sharded_extraction_then_ranking_reads_the_merged_cache(setup):
    root, modules, handles, data = setup
    cache = str(root / "shared_cache")
    task = f"folder:{data}"
    extracted = []
    for index in range(2):
        shard = _rank(
            handles,
            task,
            str(root / f"shard{index}.json"),
            resolution=16,
            cache_dir=cache,
            num_shards=2,
            shard_index=index,
        )
        extracted += shard["experts"]
        assert json.loads((root / f"shard{index}.json").read_text())["shard_index"] == index
    assert sorted(extracted) == sorted(modules.values())  # Every expert in exactly one shard.
    final = _rank(
        handles, task, str(root / "final.json"), resolution=16, cache_dir=cache, cache_only=True
    )
    assert final["cache"]["computed"] == []
    assert sorted(final["cache"]["cached"]) == sorted([modules["noise"], modules["colour"]])
    assert final["selected"] == modules["colour"]
