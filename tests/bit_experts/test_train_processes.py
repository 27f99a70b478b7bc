"""Training in real processes: SIGKILL and resume, MirroredStrategy == one device, two workers."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from PIL import Image

GROUPS = {"red": (200, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 200)}
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _toy_folder(tmp_path, per_class=4, size=16):
    """A folder dataset (2 classes per colour group) and its is-a hierarchy file."""
    rng = np.random.default_rng(0)
    images = tmp_path / "images"
    edges = []
    for group, colour in GROUPS.items():
        edges.append(f"root {group}")
        for k in range(2):
            name = f"{group}{k}"
            edges.append(f"{group} {name}")
            (images / name).mkdir(parents=True)
            for i in range(per_class):
                noise = rng.normal(0, 25, (size, size, 3))
                pixels = np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(images / name / f"{i}.png")
    hierarchy = tmp_path / "is_a.txt"
    hierarchy.write_text("\n".join(edges) + "\n")
    return images, hierarchy


def _config_file(tmp_path, steps, checkpoint_every=1):
    images, hierarchy = _toy_folder(tmp_path)
    config = {
        "upstream": {"source": f"folder:{images}"},
        "hierarchy": {"source": f"is_a:{hierarchy}"},
        "experts": {"top_k": 3},
        "model": {"preset": "r14_micro", "image_size": 16},
        "batch_size": 4,
        "checkpoint_every": checkpoint_every,
        "log_every": 1,
        **{s: {"steps": n, "warmup_steps": 1, "base_lr": 0.5} for s, n in steps.items()},
    }
    path = tmp_path / "toy_config.py"
    path.write_text(f"def get_config(arg=None):\n    return {config!r}\n")
    return str(path)


def _env(**extra):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="", **extra)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _train_cmd(config, workdir, *flags):
    return [
        sys.executable,
        "-m",
        "bit_experts.train",
        f"--config={config}",
        f"--workdir={workdir}",
        *flags,
    ]


def _run_until(cmd, condition, timeout=120):
    """Starts cmd; SIGKILLs it as soon as condition() holds. Returns its output."""
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    deadline = time.time() + timeout
    while proc.poll() is None and time.time() < deadline and not condition():
        time.sleep(0.02)
    killed = proc.poll() is None
    if killed:
        proc.send_signal(signal.SIGKILL)
    out = proc.communicate()[0]
    assert killed, f"the process ended before it could be killed:\n{out[-3000:]}"
    return out


def _checkpoints(path):
    return [n for n in os.listdir(path) if n.startswith("step_")] if os.path.isdir(path) else []


def test_sigkill_anywhere_then_rerun_finishes_the_job(tmp_path):
    config = _config_file(tmp_path, {"baseline": 40, "adapter": 40})
    workdir = tmp_path / "work"
    cmd = _train_cmd(config, workdir, "--stages=baseline,adapter")
    ckpts = workdir / "checkpoints"
    # Killed during the baseline, right after its first checkpoint...
    _run_until(cmd, lambda: len(_checkpoints(ckpts / "baseline")) > 0)
    assert not (workdir / "models" / "baseline").exists()
    # ...then during the second adapter expert.
    second = _run_until(
        cmd, lambda: any(_checkpoints(ckpts / "adapters" / d) for d in _adapter_dirs(ckpts)[1:2])
    )
    assert "[baseline] resuming at step" in second
    assert (workdir / "models" / "baseline" / "info.json").exists()
    assert not (workdir / "models" / "adapters").exists()

    last = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert last.returncode == 0, last.stdout[-3000:] + last.stderr[-3000:]
    out = last.stdout
    assert "[baseline] step" not in out  # Finished models are never retrained.
    assert "resuming at step" in out
    # The domains the job chose (the hierarchy's root competes like any node, issue 10).
    domains = [d["name"] for d in json.loads((workdir / "expert_domains.json").read_text())]
    assert len(domains) == 3
    for domain in domains:
        assert f"[adapter_{domain}] finished at step 40" in out
    info = json.loads((workdir / "models" / "adapters" / "info.json").read_text())
    assert info["steps"] == 40 and len(info["experts"]) == 3
    baseline = json.loads((workdir / "models" / "baseline" / "info.json").read_text())
    assert baseline["steps"] == 40
    assert max(int(n[5:]) for n in _checkpoints(ckpts / "baseline")) == 40
    assert sorted(os.listdir(workdir / "models")) == ["adapters", "baseline"]
    # The adapter experts resumed in a new process sit on B's backbone and head, every weight of
    # them (they are frozen, so only a checkpoint of every variable brings them back: issue 24).
    from bit_experts.training import outputs

    adapters = outputs.load_model(str(workdir), "adapters")
    baseline = outputs.load_model(str(workdir), "baseline")
    frozen = [*adapters.backbone_layers(), adapters.head]
    differ = [
        w.path
        for layer, b in zip(frozen, [*baseline.backbone_layers(), baseline.head])
        for w, v in zip(layer.weights, b.weights)
        if not np.array_equal(w.numpy(), v.numpy())
    ]
    assert not differ, f"{len(differ)} of the adapters' frozen weights are not B's: {differ[:3]}"


def _fingerprints(out):
    """{unit name: weights fingerprint} from a training run's "finished" lines."""
    found = re.findall(r"^\[(\S+)\] finished at step \d+ \(weights fingerprint (\w+)\)", out, re.M)
    return dict(found)


def test_sigkilled_and_resumed_job_ends_with_the_uninterrupted_fingerprint(tmp_path):
    # 30 steps so the kill lands mid-run; the resumed run must pick up the data stream (epoch,
    # shuffle, augmentation counter) exactly where the killed one stopped, not reseed it.
    config = _config_file(tmp_path, {"baseline": 30})
    whole = subprocess.run(
        _train_cmd(config, tmp_path / "whole", "--stages=baseline"),
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert whole.returncode == 0, whole.stdout[-3000:] + whole.stderr[-3000:]
    for attempt in range(3):  # A stalled poller on a loaded machine can kill too late: retry.
        workdir = tmp_path / f"killed{attempt}"
        cmd = _train_cmd(config, workdir, "--stages=baseline")
        ckpts = workdir / "checkpoints" / "baseline"
        _run_until(cmd, lambda c=ckpts: len(_checkpoints(c)) > 0)
        if max(int(n[5:]) for n in _checkpoints(ckpts)) < 30:
            break
    assert max(int(n[5:]) for n in _checkpoints(ckpts)) < 30, "never killed mid-run"
    resumed = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "[baseline] resuming at step" in resumed.stdout
    expected = _fingerprints(whole.stdout)
    assert set(expected) == {"baseline"}
    assert _fingerprints(resumed.stdout) == expected


def _adapter_dirs(ckpts):
    path = ckpts / "adapters"
    return sorted(os.listdir(path)) if path.is_dir() else []


_EQUIVALENCE = textwrap.dedent(
    """
    import json, re, sys, tempfile
    from bit_experts.training import strategies
    strategies.configure_cpu_devices(2)
    import numpy as np
    from bit_experts import data, determinism, presets
    from bit_experts.training.loop import UnitPlan, train_unit
    determinism.configure(0)  # The same initialisation in every run (it used to be unseeded).
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (64, 16, 16, 3)).astype(np.uint8)
    labels = rng.integers(0, 5, 64)
    source = data.array_source("rand", images, labels, list("abcde"))
    init = None
    out = {}
    for name in ("one_device", "mirrored"):
        strategy = strategies.make_strategy(name)
        with strategy.scope():
            model = presets.create_model("r14_micro", num_classes=5)
        if init is None:
            init = [np.asarray(w) + 0.01 * rng.normal(size=w.shape) for w in model.get_weights()]
        model.set_weights([w.astype(np.float32) for w in init])
        plan = UnitPlan("u", steps=4, batch_size=8, peak_lr=0.1, warmup_steps=1,
                        weight_decay=1e-3)
        make = lambda ctx, start: data.training_dataset(
            source, batch_size=8, image_size=16, seed=0, start_step=start, input_context=ctx)
        lines = []
        train_unit(plan, model, make, strategy, tempfile.mkdtemp(), log_every=1,
                   print_fn=lines.append)
        out[name] = {"replicas": strategy.num_replicas_in_sync,
                     "losses": [float(x) for x in re.findall(r" loss (\\S+)", "\\n".join(lines))],
                     "weights": [w.tolist() for w in model.get_weights()]}
    a, b = out["one_device"], out["mirrored"]
    print(json.dumps({
        "replicas": [a["replicas"], b["replicas"]],
        "losses": [a["losses"], b["losses"]],
        "max_diff": max(float(np.max(np.abs(np.array(x) - np.array(y))))
                        for x, y in zip(a["weights"], b["weights"])),
        "moved": max(float(np.max(np.abs(np.array(x) - y))) for x, y in zip(a["weights"], init)),
    }))
    """
)


def test_mirrored_strategy_on_two_cpus_matches_one_device():
    # Back in the default run (it had been marked slow after failing inside two full CI runs,
    # never alone; which bound failed was not recorded). Leftover processes cannot reach it (its
    # own subprocess, fresh workdir) and the environment it inherits is only conftest's. What
    # differed between runs was the start: the initialisation was unseeded, so every run trained
    # from another random point, and for some points (found earlier: max_diff 2e-3 of 0.24 moved)
    # a pre-activation lies within rounding distance of zero. The two runs sum the batch in another
    # order (one sum of 8 vs two sums of 4, all-reduced), float32 rounding (~6e-8 relative per
    # addition) flips that ReLU in one run only, and the flip changes its example's gradient
    # outright - the loss gap then easily exceeded the old bound of 1e-4 relative, which had not
    # been widened with the weight bound. Now the start is seeded (determinism.configure), so each
    # machine checks one fixed start every time (measured here: max_diff 5.7e-6 of 0.36 moved;
    # unseeded starts 3.0e-6..4.3e-6 of 0.21..0.30, loss gaps ~2e-6 relative). Rounding still
    # differs between CPUs, so both bounds are relative to what a real aggregation bug does:
    # gradients averaged twice halve every update and a lost replica changes it by about half,
    # i.e. tens of percent of the weight movement and of the loss decrease. 2% of each is 10x
    # below such a bug and far above rounding, and leaves room for an occasional ReLU flip.
    run = subprocess.run(
        [sys.executable, "-c", _EQUIVALENCE],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["replicas"] == [1, 2]
    one, mirrored = result["losses"]
    assert len(one) == len(mirrored) == 4
    assert result["moved"] > 1e-3  # Training really changed the weights...
    decrease = abs(one[0] - one[-1])
    assert decrease > 1e-3  # ...and the loss...
    # ...and the same way on one device and on two replicas.
    assert result["max_diff"] < 0.02 * result["moved"]
    assert abs(one[-1] - mirrored[-1]) < 0.02 * decrease


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.slow
def test_two_workers_on_localhost_train_in_lockstep(tmp_path):
    config = _config_file(tmp_path, {"baseline": 4}, checkpoint_every=2)
    workdir = tmp_path / "work"
    cluster = {"worker": [f"localhost:{p}" for p in _free_ports(2)]}
    procs = []
    for index in range(2):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        procs.append(
            subprocess.Popen(
                _train_cmd(config, workdir, "--strategy=multi_worker", "--stages=baseline"),
                cwd=ROOT,
                env=_env(TF_CONFIG=tf_config),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    outs = []
    for proc in procs:
        try:
            outs.append(proc.communicate(timeout=240)[0])
        finally:
            proc.kill()
    for proc, out in zip(procs, outs):
        assert proc.returncode == 0, out[-4000:]
    finished = [
        [ln for ln in out.splitlines() if "[baseline] finished at step 4" in ln] for out in outs
    ]
    assert all(len(f) == 1 for f in finished), outs
    assert finished[0] == finished[1]  # Same weights fingerprint on both workers.
    info = json.loads((workdir / "models" / "baseline" / "info.json").read_text())
    assert info["steps"] == 4
