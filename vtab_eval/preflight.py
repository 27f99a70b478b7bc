"""Checks an evaluation run before anything trains, and prints its plan for `--dry_run`.

Every check returns a list of problems, one line each naming the input and what was expected;
`raise_problems` turns them into one ValueError. What is checked: numeric flags, output folders
(writable, not under a regular file), every split the protocol will use (non-empty, through the
task's own `validate_splits` message; the training split with at least two classes and labels in
range, from the file lists of folder tasks; the split's cardinality otherwise), every sweep
setting (`vtab_eval.sweeps.validate_setting`), the pool (at least one feature-vector module to
fine-tune) and the results layout.
"""

import os
import re
import time

from bit_experts import atomic_files
from vtab_eval import protocol, ranking, report, sweeps


def raise_problems(problems):
    """Raises ValueError listing every problem (one per line), if there is any."""
    if problems:
        raise ValueError(
            f"{len(problems)} problem(s) found before training; nothing was run:\n  "
            + "\n  ".join(problems)
        )


def check_numbers(**values):
    """Problems with count-like flags: batch_size and counts must be >= 1, sides >= 0."""
    problems = []
    for name, value in values.items():
        low = 0 if name.endswith("resolution") else 1
        if not isinstance(value, int) or value < low:
            problems.append(f"--{name}={value!r}: expected an integer >= {low}")
    return problems


def check_output_dir(path, flag):
    """Problems with a folder the run will write: under a regular file, or not writable.

    A URL of a `tf.io.gfile` filesystem (`gs://...`) is checked only for being a file: whether it
    can be written shows at the first write."""
    try:
        path = atomic_files.check_url(path)  # file:// -> its local path
    except ValueError as err:
        return [f"{flag}: {err}"]
    if atomic_files.is_url(path):
        if atomic_files.exists(path) and not atomic_files.isdir(path):
            return [f"{flag}={path}: is a regular file; expected a folder (or a new path)"]
        return []
    path = os.path.abspath(path)
    probe = path
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if os.path.exists(probe) and not os.path.isdir(probe):
        return [f"{flag}={path}: {probe} is a regular file; expected a folder (or a new path)"]
    if not os.access(probe, os.W_OK | os.X_OK):
        return [f"{flag}={path}: {probe} is not writable; expected a folder you can write"]
    return []


def used_splits(job):
    """(training split, evaluation split) pairs the protocol uses for this job."""
    tune, val, final, test = protocol.SPLIT_SCHEMES[job.scheme]
    return ([(tune, val)] if len(job.sweep) > 1 else []) + [(final, test)]


def _split_facts(task, split, data_dir):
    """(number of images or None, set of labels or None) of one split, cheaply."""
    files = getattr(task, "files", None)
    labels = set(files[split][1]) if files is not None and split in files else None
    size = task.split_size(split) if hasattr(task, "split_size") else None
    if size is None and labels is None:
        count = int(task.load(split, data_dir=data_dir).cardinality())
        size = count if count >= 0 else None
    elif size is None:
        size = len(files[split][0])
    return size, labels


def _too_small(task, split, train, evaluation):
    try:
        task.validate_splits([split])  # the task's own message names the folder and sizes
        message = f"task {task.name}: split {split} is empty ({task.splits.get(split, split)})"
    except (ValueError, AttributeError) as err:
        message = str(err) if isinstance(err, ValueError) else f"task {task.name}: {split} empty"
    return (
        f"{message}; the protocol fine-tunes {train} -> {evaluation} (a single-setting sweep "
        "needs no tuning split)"
    )


def _check_labels(task, split, labels, is_train):
    problems = []
    bad = sorted(x for x in labels if not 0 <= x < task.num_classes)
    if bad:
        problems.append(
            f"task {task.name}: split {split} has labels {bad} outside [0, {task.num_classes})"
        )
    if is_train and len(labels) < 2:
        problems.append(
            f"task {task.name}: training split {split} has {len(labels)} class(es); "
            "expected at least 2"
        )
    return problems


def check_jobs(jobs, data_dir=None):
    """({task: {split: size}}, problems) for the splits and settings of every job."""
    sizes, problems = {}, []
    for job in jobs:
        task = job.task
        facts = sizes.setdefault(task.name, {})
        for train, evaluation in used_splits(job):
            for split in (train, evaluation):
                if split in facts:
                    continue
                try:
                    count, labels = _split_facts(task, split, data_dir)
                except Exception as err:  # noqa: BLE001 - any loading failure is reported per split
                    problems.append(f"task {task.name}: split {split} cannot be read: {err}")
                    facts[split] = None
                    continue
                facts[split] = count
                if count == 0:
                    problems.append(_too_small(task, split, train, evaluation))
                elif labels is not None:
                    problems += _check_labels(task, split, labels, split == train)
        for setting in job.sweep:
            try:
                sweeps.validate_setting(setting)
            except ValueError as err:
                problems.append(f"task {task.name}: setting {setting.get('name')!r}: {err}")
    return sizes, problems


def check_pool(pool):
    """Problems with the pool: nothing to fine-tune."""
    if not ranking.candidates(pool, include_baseline=True):
        return ["--collection: it has no feature-vector module to fine-tune; expected experts or B"]
    return []


def _old_slug(name):
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "task"


def check_old_layout(output_dir, jobs):
    """Problems: results of these tasks written in the layout before name hashes were added."""
    problems = []
    for job in jobs:
        old = os.path.join(output_dir, "results", _old_slug(job.task.name))
        new = os.path.join(output_dir, "results", report.task_slug(job.task.name))
        if old != new and atomic_files.isdir(old):
            problems.append(
                f"--output_dir={output_dir}: {old} holds results in an older layout (no name "
                "hash, no content identity); use another --output_dir or move that folder away"
            )
    return problems


def _planned(jobs, pool, methods, config):
    """(tuning specs, retrain placeholders) before ranking; a selector's pick is a stand-in."""
    from vtab_eval import stages

    baseline = ranking.find_baseline(pool)
    tracks = []
    for job in jobs:
        for method in methods:
            if method == stages.HINDSIGHT:
                picks = ranking.candidates(pool, include_baseline=True)
            elif method == "baseline" and baseline is not None:
                picks = [baseline]
            else:
                picks = [f"<{method}'s pick>"]
            for pick in picks:
                entries = [
                    (pick if method != "random" else f"{pick}#{i}", {})
                    for i in range(config.num_selections)
                ]
                tracks.append(stages.Track(job, method, entries))
    tuning, retrains = {}, set()
    for track in tracks:
        stages.plan_tuning(track, config)
        tuning.update((s.key, s) for specs in track.tuning for s in specs)
        retrains |= stages.retrain_placeholders(track, config)
    return list(tuning.values()), retrains, tracks


def _known_retrains(tracks, config, memo):
    """The retrain specs whose setting is known before the run: tracks of real modules (not a
    selector's stand-in pick) whose tuning is absent (one setting) or fully recorded in `memo`."""
    from vtab_eval import stages

    known = []
    for track in tracks:
        if any(isinstance(entry, str) for entry, _ in track.entries):
            continue  # a stand-in for a pick the selector has not made yet
        if all(memo.get(s) is not None for specs in track.tuning for s in specs):
            stages.plan_retrains(track, config, memo)
            known += [s for specs in track.retrains for s in specs]
    return known


def measure(job, entry, finetune_fn=None, strategy=None, data_dir=None):
    """(seconds of setup, seconds per step, setting), measured on the first setting.

    With the real fine-tuning, `vtab_eval.finetune.measure_step_seconds` (setup = the rest of its
    wall time); with a replacement `finetune_fn`, from a 1-step and a 3-step fine-tune.
    """
    from vtab_eval import finetune

    train, evaluation = used_splits(job)[-1]
    setting = job.sweep[0]
    handle = getattr(entry, "handle", entry)
    if finetune_fn is None:
        start = time.time()
        per_step = finetune.measure_step_seconds(
            handle, job.task, setting, data_dir=data_dir, strategy=strategy, steps=2, split=train
        )
        return max(0.0, time.time() - start - 3 * per_step), per_step, setting
    fn = finetune_fn or finetune.finetune_and_evaluate
    times = []
    for steps in (1, 3):
        short = dict(setting, steps=steps, warmup_steps=0, name=f"probe{steps}")
        start = time.time()
        fn(
            handle,
            job.task,
            train,
            evaluation,
            short,
            data_dir=data_dir,
            strategy=strategy,
            seed=0,
        )
        times.append(time.time() - start)
    per_step = max(0.0, (times[1] - times[0]) / 2)
    return max(0.0, times[0] - per_step), per_step, setting


def print_plan(
    jobs, sizes, pool, methods, config, strategy, data_dir, log, finetune_fn=None, memo=None
):
    """Logs the plan of a run (tasks, pool, settings, fine-tune count, time estimate).

    `memo` (an `executor.Memo`): fine-tunes it already holds are counted as recorded, and the
    estimate covers only the rest.

    Returns {"fine_tunes": count after sharing, "recorded": count already in the memo,
    "seconds": estimated training time of the fine-tunes still to run}.
    """
    log("Plan (dry run: nothing is trained)")
    modules = ", ".join(
        f"{getattr(e, 'name', e)} ({getattr(e, 'kind', 'third_party')})" for e in pool
    )
    log(f"  pool: {len(pool)} modules: {modules}")
    log(
        f"  methods: {', '.join(methods)}; selections {config.num_selections} x retrains "
        f"{config.num_retrains}; seed {config.seed}; deterministic {config.deterministic}"
    )
    for job in jobs:
        split_text = ", ".join(
            f"{s} {n if n is not None else '?'} images" for s, n in sizes[job.task.name].items()
        )
        log(
            f"  task {job.task.name} ({job.task.num_classes} classes, scheme {job.scheme}, "
            f"search {job.search}, aggregate {job.aggregate}): {split_text}"
        )
        for s in job.sweep:
            log(
                f"    setting {s['name']}: lr {s['learning_rate']}, {s['steps']} steps, batch "
                f"{s['batch_size']}, resolution {s['resolution']}"
            )
    tuning, retrains, tracks = _planned(jobs, pool, methods, config)
    total = len(tuning) + len(retrains)
    # Tuning specs have their final identity; a retrain's depends on the setting tuning picks, so
    # only retrains of sweeps without tuning (one setting) can be looked up before the run.
    recorded = 0
    if memo is not None:
        recorded = sum(memo.get(s) is not None for s in tuning)
        recorded += sum(memo.get(s) is not None for s in _known_retrains(tracks, config, memo))
    log(
        f"  fine-tunes: {total} after sharing identical ones ({len(tuning)} tuning, "
        f"{len(retrains)} final); selectors not ranked yet count as distinct picks; "
        f"{recorded} already recorded, {total - recorded} to run"
    )
    total -= recorded
    entry = ranking.find_baseline(pool) or ranking.candidates(pool, include_baseline=True)[0]
    setup, per_step, probe = measure(jobs[0], entry, finetune_fn, strategy, data_dir)
    steps = [s["steps"] for job in jobs for s in job.sweep]
    mean_steps = sum(steps) / len(steps)
    seconds = total * (setup + mean_steps * per_step)
    log(
        f"  time: about {seconds / 60:.1f} min ({setup:.1f}s setup + {per_step:.3f}s per step at "
        f"batch {probe['batch_size']}, resolution {probe['resolution']}, measured on "
        f"{getattr(entry, 'name', entry)} / {jobs[0].task.name}; {mean_steps:.0f} steps per "
        "fine-tune on average)"
    )
    return {"fine_tunes": total + recorded, "recorded": recorded, "seconds": seconds}
