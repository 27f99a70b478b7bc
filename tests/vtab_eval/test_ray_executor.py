"""`--executor=ray` on a local Ray instance (one per module, `ray.init(num_cpus=2)`): the same
records as in process for real fine-tunes and rankings, a killed worker retried, an item that raises
reported once. A cluster of two nodes: test_ray_cluster.py."""

import json
import os
import signal
import sys
import types

import pytest
import vtab_eval_toys as toys

from vtab_eval import config, engine, files, plan, ray_executor, runner, sweeps

ray = pytest.importorskip("ray")
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ray")
    pool = toys.save_toy_pool(str(root))
    tasks = [
        "folder:" + toys.make_colour_folder(str(root / f"data{i}"), per_class=8, seed=i)
        for i in range(2)
    ]
    return pool, tasks


def _config(pool, tasks, out, executor="local"):
    return config.make(
        collection=pool,
        tasks=tasks,
        output_dir=str(out),
        selection={"selectors": ["knn", "baseline"], "resolution": 16},
        finetune={"sweep": "quick", "resolution": 16},
        executor={"name": executor},
    )


def _records(memo_dir):
    """key -> the recorded result less what differs between runs (wall time, output paths)."""
    found = runner.load_records(str(memo_dir))
    drop = ("seconds", "outputs")
    return {k: {f: v for f, v in r.items() if f not in drop} for k, r in found.items()}


# What differs between two runs of one plan without measuring anything: which features were
# computed or read from the cache, wall times, and output paths (under each run's own folder).
_RUN_KEYS = {"cache", "seconds", "outputs"}


def _without_cache(found):
    """`found` less every `_RUN_KEYS` entry, at any depth."""
    if isinstance(found, dict):
        return {k: _without_cache(v) for k, v in found.items() if k not in _RUN_KEYS}
    if isinstance(found, list):
        return [_without_cache(v) for v in found]
    return found


def _rankings(out):
    found = {}
    for top, _, names in os.walk(os.path.join(out, "rankings")):
        for name in names:
            found[os.path.relpath(os.path.join(top, name), out)] = files.read_json(
                os.path.join(top, name)
            )
    return found


def test_ray_records_equal_the_local_executors(cluster, inputs, tmp_path):
    pool, tasks = inputs
    found = {}
    for name in ("local", "ray"):
        out = tmp_path / name
        cfg = _config(pool, tasks, out, executor=name)
        lines = []
        executor = runner.make_executor(cfg, lines.append, progress=False)
        assert (executor.backend is not None) == (name == "ray")
        results = engine.evaluate(cfg, executor=executor, log=lines.append)
        found[name] = (_records(out / "finetunes"), _rankings(str(out)), results, lines)
    local, on_ray = found["local"], found["ray"]
    assert len(local[0]) == 4 and local[0] == on_ray[0]  # 2 tasks x (knn, baseline): same scores
    # The kNN rankings are the same but for where the features came from: on Ray, workers
    # computed them into the cache, from which the ranking read them.
    assert len(local[1]) == 4 and local[1].keys() == on_ray[1].keys()  # knn and baseline
    for path, ranking in local[1].items():
        cache = ranking.pop("cache", None), on_ray[1][path].pop("cache", None)
        assert (cache[0] is not None) == ("/knn-" in path)
        assert cache[0] is None or (cache[0]["cached"] == [] and cache[1]["computed"] == [])
        assert ranking == on_ray[1][path]
    ranked = [len(r["experts"]) for p, r in local[1].items() if "/knn-" in p]
    assert f"embedding {sum(ranked)} (expert, task) pairs on Ray" in on_ray[3]
    for method in ("knn", "baseline"):
        for task in ("data0", "data1"):  # the tasks' names: their folders'
            a, b = _without_cache(local[2][method][task]), _without_cache(on_ray[2][method][task])
            assert a == b, [(k, a[k], b[k]) for k in a if a[k] != b[k]]


def test_probe_policies_probe_on_ray_as_in_process(cluster, tmp_path_factory, tmp_path):
    """A probe policy's probes are items like any fine-tune: on Ray the same records and pick."""
    root = tmp_path_factory.mktemp("ray_probe")
    pool = toys.save_toy_pool(str(root))
    task = "folder:" + toys.make_colour_folder(str(root / "data"), per_class=350)  # val200: 40
    found = {}
    for name in ("local", "ray"):
        cfg = _config(pool, [task], tmp_path / name, executor=name)
        cfg = config.set_key(cfg, "selection.selectors", ["knn_probe"])
        executor = runner.make_executor(cfg, None, progress=False)
        result = engine.evaluate(cfg, executor=executor, log=lambda line: None)["knn_probe"]["data"]
        found[name] = _records(tmp_path / name / "finetunes"), result["selections"][0]
    local, on_ray = found["local"], found["ray"]
    probes = [r for r in local[0].values() if r["eval_split"] == "val200"]
    assert len(probes) == 3 and len(local[0]) == 4 and local[0] == on_ray[0]
    assert local[1]["selection"] == on_ray[1]["selection"]


class DiesOnce:
    """A fine-tune whose first attempt at `victim` kills its own worker process (as a lost node or
    the OOM killer would); every attempt leaves a marker file."""

    def __init__(self, marker_dir, victim_seed):
        self.marker_dir, self.victim_seed = marker_dir, victim_seed

    def __call__(self, handle, task, train_split, eval_split, setting, **kwargs):
        where = os.path.join(self.marker_dir, str(kwargs["seed"]))
        os.makedirs(where, exist_ok=True)
        attempt = len(os.listdir(where))
        open(os.path.join(where, f"{attempt}-{os.getpid()}"), "w").close()
        if kwargs["seed"] == self.victim_seed and attempt == 0:
            os.kill(os.getpid(), signal.SIGKILL)
        return {"score": kwargs["seed"] / 100}


class RaisesFor:
    """A fine-tune that raises (as a bad image or a NaN loss would) for one seed."""

    def __init__(self, marker_dir, bad_seed):
        self.marker_dir, self.bad_seed = marker_dir, bad_seed

    def __call__(self, handle, task, train_split, eval_split, setting, **kwargs):
        where = os.path.join(self.marker_dir, str(kwargs["seed"]))
        os.makedirs(where, exist_ok=True)
        open(os.path.join(where, str(len(os.listdir(where)))), "w").close()
        if kwargs["seed"] == self.bad_seed:
            raise FloatingPointError("loss is NaN at step 3\nsecond line")
        return {"score": 0.5}


def _specs(n):
    """n fine-tune specs of a toy task that differ by seed (0..n-1)."""
    task = types.SimpleNamespace(name="toy", num_classes=3, metric="accuracy", suite="folder")
    setting = sweeps.make_setting(0.1, 5, 8, resolution=16)
    job = plan.Job(task, "vtab1k", "per_selection", [setting], task_id={"name": "toy"})
    return [plan.make_spec("e", job, ("train800val200", "test"), setting, s) for s in range(n)]


def test_a_killed_worker_is_retried_and_recorded_once(cluster, tmp_path):
    specs = _specs(3)
    markers = str(tmp_path / "markers")
    executor = runner.Executor(
        runner.Memo(str(tmp_path / "memo")),
        finetune_fn=DiesOnce(markers, victim_seed=1),
        log=None,
        progress=False,
        backend=ray_executor.RayBackend(max_retries=2, log=None),
    )
    found = executor.run(specs)
    executor.close()
    attempts = [len(os.listdir(os.path.join(markers, str(s)))) for s in range(3)]
    assert attempts == [1, 2, 1]  # seed 1's worker was killed once, then retried
    records = sorted(os.listdir(tmp_path / "memo"))
    assert records == sorted(f"{s.key}.json" for s in specs)  # one record per spec
    assert {k: r["score"] for k, r in found.items()} == {s.key: s.seed / 100 for s in specs}
    assert ray.is_initialized()  # the module's instance: not the executor's to shut down


def test_an_item_that_raises_is_reported_once_and_not_retried(cluster, tmp_path):
    specs = _specs(3)
    markers, lines = str(tmp_path / "markers"), []
    executor = runner.Executor(
        runner.Memo(str(tmp_path / "memo")),
        finetune_fn=RaisesFor(markers, bad_seed=1),
        log=lines.append,
        progress=False,
        backend=ray_executor.RayBackend(max_retries=3, log=lines.append),
    )
    with pytest.raises(ray_executor.ItemFailedError) as err:
        executor.run(specs)
    executor.close()
    message = str(err.value)
    assert len(message.splitlines()) == 1 and "seed 1" in message
    assert "FloatingPointError: loss is NaN at step 3" in message and "second line" not in message
    assert len(os.listdir(os.path.join(markers, "1"))) == 1  # not retried
    # The others finished and are recorded; a rerun with a fixed fine-tune only runs the failed one.
    assert sorted(os.listdir(tmp_path / "memo")) == sorted(
        f"{s.key}.json" for s in specs if s.seed != 1
    )
    assert sum("FAILED" in line for line in lines) == 1
    again = runner.Executor(
        runner.Memo(str(tmp_path / "memo")),
        finetune_fn=RaisesFor(markers, bad_seed=None),
        log=None,
        progress=False,
        backend=ray_executor.RayBackend(log=None),
    )
    again.run(specs)
    assert again.ran == [specs[1].key]


def test_without_ray_the_executor_is_refused_in_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(
        ValueError, match=r'needs Ray, which is not installed: pip install -e "\.\[ray\]"'
    ):
        ray_executor.import_ray()


def test_a_record_written_by_a_worker_is_the_local_format(cluster, tmp_path):
    spec = _specs(1)[0]
    executor = runner.Executor(
        runner.Memo(str(tmp_path / "memo")),
        finetune_fn=RaisesFor(str(tmp_path / "m"), bad_seed=None),
        log=None,
        progress=False,
        backend=ray_executor.RayBackend(log=None),
    )
    executor.run([spec])
    record = json.loads((tmp_path / "memo" / f"{spec.key}.json").read_text())
    assert record["key"] == spec.key and record["format"] == runner.MEMO_FORMAT
    assert runner.Memo(str(tmp_path / "memo")).get(spec)["score"] == 0.5


def _pool_size(handle, task, train_split, eval_split, setting, **kwargs):
    """A fine-tune that reports the size of its process's TensorFlow intra-op pool as its score."""
    import tensorflow as tf

    tf.constant(1.0) + 1.0  # TensorFlow has started: the size is the one it runs with
    return {"score": tf.config.threading.get_intra_op_parallelism_threads() / 100}


def test_each_item_runs_on_pools_of_the_size_asked_for(cluster, tmp_path):
    # Scores depend on the intra-op pool's size; a worker's size would otherwise be what its
    # TensorFlow saw. Two sizes in one cluster: workers of one size never take items of the other.
    for threads in (1, 2, 1):
        memo = str(tmp_path / f"memo{threads}")
        executor = runner.Executor(
            runner.Memo(memo),
            finetune_fn=_pool_size,
            log=None,
            progress=False,
            backend=ray_executor.RayBackend(threads=threads, log=None),
            threads=threads,
        )
        found = executor.run(_specs(2))
        assert [r["score"] for r in found.values()] == [threads / 100] * 2
        assert [r["threads"] for r in runner.load_records(memo).values()] == [threads] * 2


def test_a_pool_size_after_tensorflow_started_is_refused_in_one_line():
    import tensorflow as tf

    from bit_experts import determinism

    tf.constant(1.0) + 1.0  # started here with its default pools
    determinism.fix_threads(determinism.cores_available())  # the size it runs with: accepted
    with pytest.raises(ValueError, match=r"^\d+ threads per item: TensorFlow already started"):
        determinism.fix_threads(determinism.cores_available() + 1)
