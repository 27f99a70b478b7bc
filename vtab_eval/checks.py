"""Checks before any work, each problem one line naming the input; and the plan of `--dry_run`.

Output folders (writable, not under a regular file, free space), every split the protocol will use
(non-empty; a training split with two classes or more), the pool and the results layout. `check_*`
return problems, `raise_problems` raises them together; the path checks raise at once. The config's
own values are checked by `vtab_eval.config.resolve`, each sweep setting by `sweeps.make_setting`.
"""

import errno
import os
import shutil
import tempfile
import time

from bit_experts import atomic_files
from hub_export import collection
from vtab_eval import files, plan, protocol, selectors, tasks
from vtab_eval.selectors import base as pool_lib

# Less free space than this on the disk of an output or cache directory is refused up front
# (one expert's cached features for 1000 images of 2048-d floats take 8 MiB).
MIN_FREE_BYTES = 64 << 20


def raise_problems(problems):
    """Raises ValueError listing every problem (one per line), if there is any."""
    if problems:
        raise ValueError(
            f"{len(problems)} problem(s) found before training; nothing was run:\n  "
            + "\n  ".join(problems)
        )


def checked_path(flag, path):
    """`path` with `file://` made local; ValueError naming `flag` for a URL scheme without a
    `tf.io.gfile` filesystem (`atomic_files.check_url`)."""
    try:
        return atomic_files.check_url(path)
    except ValueError as err:
        raise ValueError(f"{flag}: {err}") from None


def writable_dir(flag, path, min_free_bytes=MIN_FREE_BYTES):
    """Checks that directory `path` exists or can be created, is writable and has free space;
    returns it absolute (a URL as given, `file://` as its local path), else ValueError naming `flag`.
    Creates nothing: the deepest existing ancestor is probed with a temporary file (which catches
    read-only file systems os.access misses); a URL is only checked for not naming a file."""
    path = checked_path(flag, path)
    if atomic_files.is_url(path):
        if atomic_files.exists(path) and not atomic_files.isdir(path):
            raise ValueError(f"{flag}: {path!r} is a regular file; expected a directory")
        return path
    path = existing = os.path.abspath(os.path.expanduser(path))
    while not os.path.exists(existing) and os.path.dirname(existing) != existing:
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        where = "is" if existing == path else f"is under {existing!r}, which is"
        raise ValueError(f"{flag}: {path!r} {where} a regular file; expected a directory")
    try:
        handle, probe = tempfile.mkstemp(prefix=".write_probe_", dir=existing)
    except OSError as err:
        reason = "read-only" if err.errno == errno.EROFS else "not writable"
        raise ValueError(
            f"{flag}: {existing!r} is {reason} ({err.strerror}); expected a writable directory"
        ) from None
    os.close(handle)
    os.remove(probe)
    free = shutil.disk_usage(existing).free
    if free < min_free_bytes:
        raise ValueError(
            f"{flag}: the disk holding {existing!r} has {free / 2**20:.1f} MiB free; at least "
            f"{min_free_bytes / 2**20:.0f} MiB expected"
        )
    return path


def output_file(flag, path, min_free_bytes=MIN_FREE_BYTES):
    """Checks that file `path` can be written: not a directory, its folder writable; returns the
    absolute path (a URL as given)."""
    if not path:
        raise ValueError(f"{flag} must be a file path; got {path!r}")
    path = checked_path(flag, path)
    if atomic_files.is_url(path):
        if atomic_files.isdir(path):
            raise ValueError(f"{flag}: {path!r} is a directory; expected a file path")
        return path
    path = os.path.abspath(os.path.expanduser(path))
    if os.path.isdir(path):
        raise ValueError(f"{flag}: {path!r} is a directory; expected a file path")
    writable_dir(flag, os.path.dirname(path), min_free_bytes)
    return path


def cache_dir(flag, path, read_only=False):
    """The feature cache folder, checked: writable, or (`read_only`, for --cache_only) existing."""
    if not read_only:
        path = writable_dir(flag, path)
        atomic_files.refuse_links_out(path, flag)
        return path
    path = checked_path(flag, path)
    if not atomic_files.isdir(path):
        raise ValueError(f"{flag}: {path!r} is not a directory (--cache_only reads it)")
    return path


def disk_error_line(err, flag_of_dir):
    """One line for an OSError met while writing (a disk that filled up during the work), naming
    the file and the flag of `flag_of_dir` ({folder: flag}) whose folder holds it (the longest)."""

    def absolute(path):
        try:
            return atomic_files.abspath(path)
        except ValueError:
            return path

    filename = err.filename or ""
    held = [d for d in flag_of_dir if d and absolute(filename).startswith(absolute(d))]
    where = f" ({flag_of_dir[max(held, key=len)]})" if held else ""
    reason = "disk full" if err.errno == errno.ENOSPC else (err.strerror or str(err))
    return f"writing {filename or 'output'}{where} failed: {reason}"


def _split_facts(task, split, data_dir):
    """(number of images or None, set of labels or None) of one split: from the file lists of a
    folder task, else the dataset's cardinality."""
    size = task.split_size(split)
    found = getattr(task, "files", None)
    if found is not None and split in found:
        return size, set(found[split][1])
    if size is None:
        count = int(task.load(split, data_dir=data_dir).cardinality())
        size = count if count >= 0 else None
    return size, None


def _empty(task, split, train, evaluation):
    try:
        task.validate_splits([split])  # the task's own message names the folder and sizes
        message = f"task {task.name}: split {split} is empty ({task.splits.get(split, split)})"
    except ValueError as err:
        message = str(err)
    return (
        f"{message}; the protocol fine-tunes {train} -> {evaluation} (a single-setting sweep "
        "needs no tuning split unless a probe policy probes on it)"
    )


def check_jobs(jobs, data_dir=None, probe=False):
    """({task: {split: size}}, problems) for the splits of every job, the tuning splits too with
    `probe` (a probe policy runs); its settings were checked when `make_jobs` made them
    (`sweeps.make_setting`)."""
    sizes, problems = {}, []
    for job in jobs:
        task = job.task
        facts = sizes.setdefault(task.name, {})
        tuning = [tuple(protocol.SPLIT_SCHEMES[job.scheme][:2])] if probe else []
        for train, evaluation in dict.fromkeys(tuning + job.splits()):
            for split in (train, evaluation):
                if split in facts:
                    continue
                try:
                    facts[split], labels = _split_facts(task, split, data_dir)
                except Exception as err:  # noqa: BLE001 - any loading failure is reported per split
                    problems.append(f"task {task.name}: split {split} cannot be read: {err}")
                    facts[split] = None
                    continue
                if facts[split] == 0:
                    problems.append(_empty(task, split, train, evaluation))
                elif labels is not None and split == train and len(labels) < 2:
                    problems.append(
                        f"task {task.name}: training split {split} has {len(labels)} class(es); "
                        "expected at least 2"
                    )
    return sizes, problems


def check_old_layout(output_dir):
    """Problems: result folders of an older layout: without the name hash, or of a folder task
    named by its path (before tasks were named by their folder; docs/evaluation.md)."""
    root, problems = os.path.join(output_dir, "results"), []
    for name in sorted(atomic_files.listdir(root)) if atomic_files.isdir(root) else []:
        folder = os.path.join(root, name)
        if not atomic_files.isdir(folder):
            continue
        found = sorted(f for f in atomic_files.listdir(folder) if f.endswith(".json"))
        result = files.read_json(os.path.join(folder, found[0]), "result file") if found else None
        task = (result or {}).get("task") or ""
        if task.startswith(tasks.folder.PREFIX) or (task and name != files.task_slug(task)):
            problems.append(
                f"--output_dir={output_dir}: {folder} holds results of {task} in an older layout "
                "(named by its path, or without a name hash); move that folder away (the "
                "fine-tunes recorded in the memo are reused, nothing is trained again)"
            )
    return problems


def _probe_steps(method, job, pool, count):
    """The steps of each probe a probe policy runs on `job` (as if its proxy tied every expert)."""
    policy, baseline = selectors.get(method), pool_lib.find_baseline(pool)
    handles = {plan.entry_handle(e): 0.0 for e in pool_lib.candidates(pool)}
    finalists = policy.finalists(handles, baseline and plan.entry_handle(baseline))
    return [policy.probe_setting(job.sweep)["steps"]] * (count * len(finalists))


def _planned(jobs, pool, config, memo):
    """(tuning specs, retrain placeholders, retrain specs known now, steps of every probe), each
    key once, before any ranking (picks are stand-ins; a module's retrains are known once its
    tuning is in `memo`; probes are counted, not keyed: their finalists are not known yet)."""
    baseline, count = pool_lib.find_baseline(pool), config["protocol"]["num_selections"]
    tracks, probes = [], []
    for job in jobs:
        for method in config["selection"]["selectors"]:
            if method == "hindsight":
                tracks += plan.hindsight_tracks(job, pool, config)
                continue
            if selectors.get(method).kind == "probe":
                probes += _probe_steps(method, job, pool, count)
            pick = f"<{method}'s pick>"
            if method == "baseline" and baseline is not None:
                pick = baseline
            entries = [(f"{pick}#{i}" if method == "random" else pick, {}) for i in range(count)]
            tracks.append(plan.make_track(config, job, method, entries))
    tuning, placeholders, known = [], set(), []
    for track in tracks:
        plan.plan_tuning(track)
        specs = [s for specs in track.tuning for s in specs]
        tuning += specs
        placeholders |= plan.retrain_placeholders(track)
        stand_in = any(isinstance(entry, str) for entry, _ in track.entries)
        if not stand_in and all(memo.get(s) is not None for s in specs):
            plan.plan_retrains(track, memo)
            known += [s for specs in track.retrains for s in specs]
    return plan.unique(tuning), placeholders, plan.unique(known), probes


PROBE_STEPS = (1, 1, 11)  # a warm-up (the process's first tracing, not counted), then two probes


def measure(job, entry, executor):
    """(seconds of setup, seconds per step, setting) of the job's first setting on `entry`: from
    fine-tunes of `PROBE_STEPS` run by `executor`'s fine-tuning function after one warm-up (none is
    recorded): per step = (t(11) - t(1)) / 10, setup = t(1) - per step."""
    from vtab_eval import finetune  # here: it imports TensorFlow, which parsing need not wait for

    train, evaluation = job.splits()[-1]
    fn, times = executor.finetune_fn or finetune.finetune_and_evaluate, []
    where = dict(data_dir=executor.data_dir, strategy=executor.strategy, seed=0)
    for steps in PROBE_STEPS:
        short = dict(job.sweep[0], steps=steps, warmup_steps=0, name=f"probe{steps}")
        start = time.time()
        fn(plan.entry_handle(entry), job.task, train, evaluation, short, **where)
        times.append(time.time() - start)
    one, many = times[1], times[2]
    per_step = max(0.0, (many - one) / (PROBE_STEPS[2] - PROBE_STEPS[1]))
    return max(0.0, one - per_step), per_step, job.sweep[0]


def print_plan(jobs, sizes, pool, config, executor, log):
    """Logs the plan of a run (tasks, pool, settings, fine-tune count, time estimate); the
    estimate leaves out the fine-tunes `executor.memo` already holds.

    Returns {"fine_tunes": count after sharing, "recorded": count already in the memo,
    "seconds": estimated training time of the fine-tunes still to run}.
    """
    proto = config["protocol"]
    log("Plan (dry run: nothing is trained)")
    modules = ", ".join(f"{plan.entry_name(e)} ({getattr(e, 'kind', 'third_party')})" for e in pool)
    log(f"  pool: {len(pool)} modules: {modules}")
    log(
        f"  methods: {', '.join(config['selection']['selectors'])}; selections "
        f"{proto['num_selections']} x retrains {proto['num_retrains']}; seed {config['seed']}; "
        f"deterministic {config['deterministic']}"
    )
    for job in jobs:
        split_text = ", ".join(
            f"{s} {n if n is not None else '?'} images" for s, n in sizes[job.task.name].items()
        )
        log(
            f"  task {job.task.name} ({job.task.num_classes} classes, scheme {job.scheme}, "
            f"search {job.search}, sweep {job.preset}, aggregate {job.aggregate}): {split_text}"
        )
        for s in job.sweep:
            log(
                f"    setting {s['name']}: lr {s['learning_rate']}, {s['steps']} steps, batch "
                f"{s['batch_size']}, resolution {s['resolution']}"
            )
    tuning, retrains, known, probes = _planned(jobs, pool, config, executor.memo)
    total = len(tuning) + len(retrains) + len(probes)
    # Tuning specs have their final identity; a retrain's depends on the setting tuning picks.
    recorded = sum(executor.memo.get(s) is not None for s in tuning + known)
    log(
        f"  fine-tunes: {total} after sharing identical ones ({len(tuning)} tuning, "
        + (f"{len(probes)} short probes, " if probes else "")
        + f"{len(retrains)} final); selectors not ranked yet count as distinct picks; "
        f"{recorded} already recorded, {total - recorded} to run"
    )
    entry = pool_lib.find_baseline(pool) or pool_lib.candidates(pool, include_baseline=True)[0]
    setup, per_step, probe = measure(jobs[0], entry, executor)
    steps = [s["steps"] for job in jobs for s in job.sweep]
    mean_steps = sum(steps) / len(steps)
    seconds = (total - len(probes) - recorded) * (setup + mean_steps * per_step)
    seconds += sum(setup + s * per_step for s in probes)  # counted as still to run
    log(
        f"  time: about {seconds / 60:.1f} min ({setup:.1f}s setup + {per_step:.3f}s per step at "
        f"batch {probe['batch_size']}, resolution {probe['resolution']}, measured on "
        f"{plan.entry_name(entry)} / {jobs[0].task.name}; {mean_steps:.0f} steps per "
        "fine-tune on average)"
    )
    return {"fine_tunes": total, "recorded": recorded, "seconds": seconds}


def expand_tasks(names):
    """Task names with suites ("vtab1k", "table3", "all") expanded, duplicates dropped."""
    expanded = []
    for name in filter(None, (n.strip() for n in names)):
        expanded += tasks.list_tasks(name) if name in tasks.SUITES else [name]
    if not expanded:
        raise ValueError("no tasks given; pass --tasks=NAME[,NAME...] or a suite such as vtab1k")
    return list(dict.fromkeys(expanded))


def module_side(pool):
    """The image side a sweep given by flags fine-tunes at: the largest `resolution` the pool's
    candidates' metadata recommend (`embed.module_resolution`; 224 without one or without a pool)."""
    from vtab_eval import embed  # here: it loads tensorflow_hub, whose flags rank must not get

    found = [embed.module_resolution(e) for e in pool_lib.candidates(pool, include_baseline=True)]
    return max(found, default=embed.DEFAULT_RESOLUTION)


def make_jobs(config, log=None, pool=()):
    """One `Job` per task of `config["tasks"]` (suites expanded; names `tasks.distinct_names`),
    from the evaluation config and the `pool` it fine-tunes (`module_side`); ValueError or
    FileNotFoundError for an unknown task, a bad folder, sweep or aggregate."""
    proto, jobs, side = config["protocol"], [], module_side(pool)
    skip = config["skip_bad_images"]
    found = [tasks.get_task(name, skip_bad_images=skip) for name in expand_tasks(config["tasks"])]
    for task in tasks.distinct_names(found):
        scheme, search = protocol.default_protocol(task)
        scheme = proto["scheme"] if proto["scheme"] != "auto" else scheme
        search = proto["search"] if proto["search"] != "auto" else search
        sweep = plan.task_sweep(
            task, scheme, config["finetune"], config["seed"], config["data_dir"], log, side
        )
        preset = plan.sweep_preset(task, config["finetune"])
        job = plan.Job(
            task, scheme, search, list(sweep), aggregate=proto["aggregate"], preset=preset
        )
        jobs.append(job)
    return jobs


def prepare(config, log=print, extra_problems=(), probe=None):
    """Checks everything before any work; returns (pool, jobs, split sizes). Output folders, the
    collection, every task with its sweep (`make_jobs`), every split (`check_jobs`; the tuning
    splits too with `probe`, None: when a selector is a probe policy), the pool and the results
    layout: every problem, and a command's `extra_problems`, raised together as one ValueError
    with a line each (`raise_problems`)."""
    if probe is None:
        probe = any(selectors.get(m).kind == "probe" for m in config["selection"]["selectors"])
    out, memo_dir, cache = files.output_paths(config)
    problems = list(extra_problems)
    for flag, path in (("--output_dir", out), ("--memo_dir", memo_dir), ("--cache_dir", cache)):
        try:
            writable_dir(flag, path)
            # What the run writes there, and below, must not lead outside (docs/evaluation.md).
            atomic_files.refuse_links_out(
                path, flag, files.OUTPUTS if flag == "--output_dir" else None
            )
        except ValueError as err:
            problems.append(str(err))
    if config["finetune"]["save_models"] and atomic_files.is_url(out):
        problems.append(
            f"--save_models: --output_dir={out} is a URL; fine-tuned models are saved by a "
            "folder rename, which needs a local --output_dir (docs/workdir.md)"
        )
    try:
        pool = collection.resolve_pool(config["collection"], check_signatures=False)
        jobs = make_jobs(config, log, pool)
    except (ValueError, FileNotFoundError) as err:
        raise_problems(problems + [str(err)])
        raise
    sizes, found = check_jobs(jobs, config["data_dir"], probe)
    if not pool_lib.candidates(pool, include_baseline=True):
        found.append(
            "--collection: it has no feature-vector module to fine-tune; expected experts or B"
        )
    problems += found + check_old_layout(out)
    raise_problems(problems)
    return pool, jobs, sizes
