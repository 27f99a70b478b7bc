"""`--executor=ray` on a cluster of two nodes on loopback (`ray start --head` and `ray start
--address`, one CPU each, in this test's own folders and ports, stopped at the end): real fine-tunes
land on both nodes and record what the local executor records."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest
import vtab_eval_toys as toys

from vtab_eval import config, engine, finetune, runner

ray = pytest.importorskip("ray")
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray_start(*args, temp_dir):
    ray_cli = os.path.join(os.path.dirname(sys.executable), "ray")
    command = [ray_cli, "start", "--block", "--num-cpus=1", "--node-ip-address=127.0.0.1"]
    command += ["--disable-usage-stats", f"--temp-dir={temp_dir}", *args]
    log = open(os.path.join(temp_dir, "start.log"), "w")
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


@pytest.fixture(scope="module")
def two_nodes():
    # A short folder: Ray's socket paths must stay under 108 characters.
    temp_dir = tempfile.mkdtemp(prefix="rt", dir="/tmp")
    port = _free_port()
    # Loopback only, in this test's own folder: no token (Ray's default would need one shared
    # by the nodes and the driver through ~/.ray).
    auth = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"
    head = _ray_start("--head", f"--port={port}", "--include-dashboard=false", temp_dir=temp_dir)
    started = [head]
    try:
        address = f"127.0.0.1:{port}"
        deadline = time.time() + 120
        while True:  # the head accepts a second node once its GCS is up
            try:
                ray.init(address=address, logging_level="WARNING")
                break
            except (ConnectionError, RuntimeError):
                if time.time() > deadline or head.poll() is not None:
                    raise
                time.sleep(2)
        started.append(_ray_start(f"--address={address}", temp_dir=temp_dir))
        while len([n for n in ray.nodes() if n["Alive"]]) < 2:
            if time.time() > deadline or started[1].poll() is not None:
                raise RuntimeError(open(os.path.join(temp_dir, "start.log")).read()[-2000:])
            time.sleep(1)
        yield address
    finally:
        ray.shutdown()
        for process in reversed(started):
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
        shutil.rmtree(temp_dir, ignore_errors=True)
        if auth is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = auth


class OnNode:
    """The real fine-tune, leaving a marker named after the Ray node and process that ran it."""

    def __init__(self, marker_dir):
        self.marker_dir = marker_dir

    def __call__(self, *args, **kwargs):
        node = ray.get_runtime_context().get_node_id()
        os.makedirs(self.marker_dir, exist_ok=True)
        name = f"{node}-{os.getpid()}-{time.time_ns()}"
        open(os.path.join(self.marker_dir, name), "w").close()
        return finetune.finetune_and_evaluate(*args, **kwargs)


def _records(memo_dir):
    found = runner.load_records(str(memo_dir))
    return {
        k: {f: v for f, v in r.items() if f not in ("seconds", "outputs")} for k, r in found.items()
    }


def test_a_plan_runs_on_both_nodes_with_the_local_executors_records(two_nodes, tmp_path):
    root = tmp_path / "inputs"
    pool = toys.save_toy_pool(str(root))
    tasks = ["folder:" + toys.make_colour_folder(str(root / "data"), per_class=8, seed=0)]
    found = {}
    for name in ("local", "ray"):
        cfg = config.make(
            collection=pool,
            tasks=tasks,
            output_dir=str(tmp_path / name),
            selection={"selectors": ["knn", "baseline"], "resolution": 16},
            finetune={"sweep": "quick", "resolution": 16},
            protocol={"num_retrains": 2},
            executor={"name": name, "ray_address": two_nodes},
        )
        markers = str(tmp_path / f"markers-{name}")
        lines = []
        executor = runner.make_executor(cfg, lines.append, False, finetune_fn=OnNode(markers))
        engine.evaluate(cfg, executor=executor, log=lines.append)
        found[name] = _records(tmp_path / name / "finetunes"), sorted(os.listdir(markers))
    (local, local_markers), (on_ray, ray_markers) = found["local"], found["ray"]
    assert len(local) == 4 and local == on_ray  # (knn, baseline) x 2 retrains
    assert {m.split("-")[1] for m in local_markers} == {str(os.getpid())}  # in this process
    nodes = {m.split("-")[0] for m in ray_markers}
    assert len(ray_markers) == 4 and nodes == {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    assert len(nodes) == 2
