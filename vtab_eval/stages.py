"""The stages of an evaluation run, as plans over one `vtab_eval.executor.Executor`.

1. *select*: per task and method, the expert of every selection (rankings are kept in
   OUT/rankings/, keyed by their content). `hindsight` selects nothing: it is one track per
   candidate (the baseline B included), each fine-tuned like a selector that picked it.
2. *tune*: the tuning fine-tunes of every track (all tasks and methods), run over the memo.
3. *retrain*: with the best setting of each tuning (chosen on validation), the final fine-tunes.
4. *results*: per task and method, OUT/results/<task slug>/<method>.json is rebuilt from the memo;
   it lists the spec keys it used and carries the identity of its configuration. Writing it never
   trains, so it is cheap to do whenever a fine-tune ends: `vtab_eval.run` writes every result
   when stage 3 starts (`complete: false` with the outcomes recorded so far) and again as each
   task's final fine-tunes finish.

A `Job` is one task with its split scheme, search, sweep, content identity and the aggregate of
its outcomes (median for VTAB-1k, mean for table 3: `vtab_eval.report.suite_aggregate`).
"""

import dataclasses
import os

from bit_experts import atomic_files
from vtab_eval import plan, protocol, ranking, report

HINDSIGHT = "hindsight"
METHODS = (*ranking.METHODS, HINDSIGHT)


@dataclasses.dataclass
class Job:
    """One task of a run: the task, its split scheme, search ("per_selection"/"once"), sweep.

    `aggregate`: None (the suite's) or a user's choice ("median"/"mean", folder tasks only); after
    construction it holds the kind `report.aggregate` uses for the task's outcomes. Raises
    ValueError (from `report.suite_aggregate`) for a choice the task's suite does not allow.
    """

    task: object
    scheme: str
    search: str
    sweep: list
    task_id: dict = None
    aggregate: str = None

    def __post_init__(self):
        if self.task_id is None:
            self.task_id = plan.task_identity(self.task)
        try:
            self.aggregate = report.suite_aggregate(self.task.suite, self.aggregate)
        except ValueError as err:
            raise ValueError(f"--aggregate: task {self.task.name}: {err}") from None


@dataclasses.dataclass
class Config:
    """What every track of a run shares (see `vtab_eval.run.run_command` for the meaning)."""

    num_selections: int = 1
    num_retrains: int = 1
    seed: int = 0
    deterministic: bool = True
    include_baseline: bool = True
    selection_resolution: int | None = None  # None: each module at its own recommended side
    collection: str = ""

    def as_dict(self):
        return dataclasses.asdict(self)


@dataclasses.dataclass
class Track:
    """One method on one task (or one hindsight candidate): an entry per selection."""

    job: Job
    method: str
    entries: list  # per selection: (pool entry, selection dict)
    ranking: dict = None
    candidate: str = None
    tuning: list = dataclasses.field(default_factory=list)  # per selection: [Spec]
    retrains: list = dataclasses.field(default_factory=list)  # per selection: [Spec]
    best: list = dataclasses.field(default_factory=list)  # per selection: setting name


def result_path(output_dir, task_name, method):
    """OUT/results/<task slug>/<method>.json."""
    return os.path.join(output_dir, "results", report.task_slug(task_name), f"{method}.json")


def _ranking(job, method, pool, selection_seed, ctx):
    identity = plan.content_hash(
        {
            "modules": [plan.module_identity(e) for e in pool],
            "task": job.task_id,
            "method": method,
            "seed": selection_seed if method == "random" else None,
            "resolution": ctx["config"].selection_resolution,
            "include_baseline": ctx["config"].include_baseline,
        },
        16,
    )
    path = os.path.join(
        ctx["output_dir"], "rankings", report.task_slug(job.task.name), f"{method}-{identity}.json"
    )
    found = report.read_json(path)
    if found is not None and found.get("identity") == identity:
        return found
    found = ranking.rank(
        pool,
        job.task,
        method,
        resolution=ctx["config"].selection_resolution,
        cache_dir=ctx["cache_dir"],
        data_dir=ctx["data_dir"],
        seed=selection_seed,
        include_baseline=ctx["config"].include_baseline,
        label_priors=ctx["label_priors"],
        log=ctx["log"],
    )
    found["identity"] = identity
    report.write_json(path, found)
    if method != "baseline":
        plot = os.path.join(
            ctx["output_dir"], "plots", f"{report.task_slug(job.task.name)}__{method}.png"
        )
        report.plot_scores(found, plot)
    return found


def selection_seed(base_seed, method, index):
    """The seed of selection `index`: derived per selection for `random`, the base seed else."""
    return plan.derive_seed(base_seed, "select", index) if method == "random" else int(base_seed)


def select(job, method, pool, ctx):
    """The tracks of one method on one task (stage 1). Raises ranking.SelectorUnavailable."""
    config = ctx["config"]
    if method == HINDSIGHT:
        return [
            Track(
                job,
                method,
                [(e, {"selected_name": e.name}) for _ in range(config.num_selections)],
                candidate=e.name,
            )
            for e in ranking.candidates(pool, include_baseline=True)
        ]
    by_handle = {getattr(e, "handle", e): e for e in pool}
    entries, first = [], None
    for i in range(config.num_selections):
        seed = selection_seed(config.seed, method, i)
        found = _ranking(job, method, pool, seed, ctx)
        first = first or found
        chosen = found["selected"]
        score = next(e["score"] for e in found["experts"] if e["handle"] == chosen)
        entries.append(
            (
                by_handle.get(chosen, chosen),
                {"selected_name": found["selected_name"], "seed": seed, "score": score},
            )
        )
    ctx["log"](f"{job.task.name} / {method}: selected {first['selected_name']}")
    return [Track(job, method, entries, ranking=first)]


def plan_tuning(track, config):
    """Fills `track.tuning` (stage 2's specs, per selection)."""
    job = track.job
    track.tuning = []
    for i, (entry, _) in enumerate(track.entries):
        if job.search == "once" and i > 0:
            track.tuning.append(track.tuning[0])
            continue
        track.tuning.append(
            protocol.tuning_specs(
                entry,
                job.task,
                job.sweep,
                selection=i,
                scheme=job.scheme,
                seed=config.seed,
                deterministic=config.deterministic,
                task_id=job.task_id,
            )
        )


def retrain_placeholders(track, config):
    """Identities of the retrains `track` will need, before tuning picks the setting (for ETAs)."""
    found = set()
    for i, (entry, _) in enumerate(track.entries):
        source = tuple(s.key for s in track.tuning[i]) or (track.job.sweep[0]["name"],)
        for j in range(config.num_retrains):
            found.add(
                plan.content_hash(
                    [
                        plan.module_identity(entry),
                        track.job.task_id,
                        track.job.scheme,
                        source,
                        protocol.retrain_seed(config.seed, i, j),
                    ]
                )
            )
    return found


def plan_retrains(track, config, memo):
    """Fills `track.best` and `track.retrains` (stage 3) from the tuning results in `memo`."""
    job = track.job
    by_name = {s["name"]: s for s in job.sweep}
    track.best, track.retrains = [], []
    for i, (entry, _) in enumerate(track.entries):
        scores = {s.setting["name"]: memo.get(s)["score"] for s in track.tuning[i]}
        best = protocol.best_setting(job.sweep, scores)
        track.best.append(best)
        track.retrains.append(
            protocol.retrain_specs(
                entry,
                job.task,
                by_name[best],
                selection=i,
                num_retrains=config.num_retrains,
                scheme=job.scheme,
                seed=config.seed,
                deterministic=config.deterministic,
                task_id=job.task_id,
            )
        )


def _track_result(track, memo):
    """One track's part of a result from the memo; `complete` is False while retrains are missing."""
    selections, outcomes, complete = [], [], True
    for i, (entry, extra) in enumerate(track.entries):
        found = [memo.get(s) for s in track.retrains[i]] if i < len(track.retrains) else []
        retrains = [r for r in found if r is not None]
        complete = complete and i < len(track.retrains) and len(retrains) == len(found)
        outcomes += [r["score"] for r in retrains]
        tuning = [memo.get(s) for s in track.tuning[i]] if i < len(track.tuning) else []
        selections.append(
            {
                "index": i,
                "seed": extra.get("seed"),
                "handle": getattr(entry, "handle", entry),
                "selection": extra,
                "tuning": [t for t in tuning if t is not None],
                "best_setting": track.best[i] if i < len(track.best) else None,
                "retrains": retrains,
            }
        )
    keys = [s.key for specs in track.tuning + track.retrains for s in specs]
    return {
        "selections": selections,
        "outcomes": outcomes,
        "summary": protocol.summarize(outcomes, track.job.aggregate),
        "complete": complete,
        "spec_keys": list(dict.fromkeys(keys)),
    }


def result_identity(job, method, config, pool):
    """The content identity of a result file: configuration, task and module identities."""
    return plan.content_hash(
        {
            "config": config.as_dict(),
            "method": method,
            "task": job.task_id,
            "aggregate": job.aggregate,
            "scheme": job.scheme,
            "search": job.search,
            "sweep": job.sweep,
            "modules": [plan.module_identity(e) for e in pool],
        },
        16,
    )


def write_result(tracks, memo, config, pool, output_dir, log):
    """Writes OUT/results/<task slug>/<method>.json for one task and method (stage 4); returns it.

    Reads only the memo (never trains). Before every final fine-tune has finished the file holds
    the outcomes recorded so far with `complete: false` (hindsight: the best candidate so far).
    """
    first = tracks[0]
    job, method = first.job, first.method
    identity = result_identity(job, method, config, pool)
    per_track = [_track_result(t, memo) for t in tracks]
    if method == HINDSIGHT:
        # The best candidate by its aggregate; the first in candidate order on ties.
        scored = [k for k in range(len(tracks)) if per_track[k]["summary"] is not None]
        best = max(scored, key=lambda k: per_track[k]["summary"]["value"]) if scored else 0
        body = dict(per_track[best])
        body["experts"] = {t.candidate: r["summary"] for t, r in zip(tracks, per_track)}
        body["spec_keys"] = list(dict.fromkeys(k for r in per_track for k in r["spec_keys"]))
        body["complete"] = all(r["complete"] for r in per_track)
    else:
        body = per_track[0]
    result = {
        "task": job.task.name,
        "group": job.task.group,
        "metric": job.task.metric,
        "method": method,
        "scheme": job.scheme,
        "search": job.search,
        "sweep": job.sweep,
        "config": config.as_dict(),
        "seed": config.seed,
        "deterministic": config.deterministic,
        "aggregate": job.aggregate,
        "identity": identity,
        **({"ranking": first.ranking} if first.ranking else {}),
        **body,
    }
    path = result_path(output_dir, job.task.name, method)
    previous = report.read_json(path) if atomic_files.exists(path) else None
    if previous is not None and previous.get("identity") != identity:
        log(
            f"{path}: was identity {previous.get('identity')}, now {identity} (settings, task "
            "or collection changed): rewritten from this run's fine-tunes"
        )
    report.write_json(path, result)
    return result
