"""The VTAB-1k fine-tuning protocol: its pure logic and the fine-tunes each stage needs.

For each *selection* i: an expert is chosen; when the sweep has more than one setting, every
setting is fine-tuned on `train800` and scored on `val200` (the *tuning* stage), and the best
setting is kept (first in sweep order on ties, `best_setting`); then each *retrain* j fine-tunes
that setting on `train800val200` and scores on `test`. Every (selection, retrain) pair is one
outcome; the paper's VTAB-1k tables use 10 selections x 3 retrains = 30 and report their median,
its table 3 their mean (`summarize`, `vtab_eval.report.aggregate`). With `search="once"` (the
paper's table 3: one random search, then 30 retrains) only selection 0 tunes, and every selection
retrains its best setting.

The protocol is dynamic (the tuning results choose the retrained setting), so callers build it in
stages: `tuning_specs` for every selection, run them (`vtab_eval.executor`), then
`retrain_specs` with the chosen setting. Seeds derive from one base seed (`tuning_seed`,
`retrain_seed`). The `full` split scheme (train -> val, trainval -> test) serves table 3.
`run_protocol` runs all of it in-process for one task (benchmarks, tests).
"""

from vtab_eval import finetune, plan, report

SPLIT_SCHEMES = {
    "vtab1k": ("train800", "val200", "train800val200", "test"),
    "full": ("train", "val", "trainval", "test"),
}
SEARCHES = ("per_selection", "once")


def check_sweep(sweep):
    """Raises ValueError if the sweep is empty or its setting names repeat."""
    if not sweep:
        raise ValueError("the sweep is empty; give at least one setting")
    names = [s["name"] for s in sweep]
    if len(set(names)) != len(names):
        raise ValueError(f"sweep setting names must be unique, got {names}")


def best_setting(sweep, val_scores):
    """The name of the setting with the best validation score; the first in sweep order on ties.

    Args:
      sweep: list of settings.
      val_scores: setting name -> validation score (higher is better) for every setting.
    """
    names = [s["name"] for s in sweep]
    if len(names) == 1:
        return names[0]
    missing = [n for n in names if n not in val_scores]
    if missing:
        raise ValueError(f"no validation score for settings {missing}")
    return max(names, key=lambda n: (val_scores[n], -names.index(n)))


def tuning_seed(base_seed, selection, setting_index):
    """The seed of tuning fine-tune (selection, setting index), derived from the base seed."""
    return plan.derive_seed(base_seed, "tune", selection, setting_index)


def retrain_seed(base_seed, selection, retrain):
    """The seed of retrain j of selection i, derived from the base seed."""
    return plan.derive_seed(base_seed, "retrain", selection, retrain)


def tuning_specs(
    entry, task, sweep, *, selection, scheme="vtab1k", seed=0, deterministic=True, task_id=None
):
    """The tuning fine-tunes of one selection (none for a single-setting sweep)."""
    check_sweep(sweep)
    if len(sweep) == 1:
        return []
    train, val, _, _ = SPLIT_SCHEMES[scheme]
    return [
        plan.make_spec(
            entry,
            task,
            train,
            val,
            setting,
            tuning_seed(seed, selection, k),
            deterministic,
            task_id,
        )
        for k, setting in enumerate(sweep)
    ]


def retrain_specs(
    entry,
    task,
    setting,
    *,
    selection,
    num_retrains,
    scheme="vtab1k",
    seed=0,
    deterministic=True,
    task_id=None,
):
    """The final fine-tunes of one selection with its chosen setting (scored on test)."""
    _, _, train, test = SPLIT_SCHEMES[scheme]
    return [
        plan.make_spec(
            entry,
            task,
            train,
            test,
            setting,
            retrain_seed(seed, selection, j),
            deterministic,
            task_id,
        )
        for j in range(num_retrains)
    ]


def summarize(outcomes, kind="median"):
    """The task's summary of its outcomes, or None without outcomes.

    Args:
      outcomes: test scores (floats), one per (selection, retrain).
      kind: "median" (VTAB-1k) or "mean" (table 3); `vtab_eval.report.suite_aggregate` gives a
        task's.

    Returns:
      `vtab_eval.report.aggregate(outcomes, kind)`: {"value", "ci_low", "ci_high", "n", "kind"}
      (a 95% percentile-bootstrap interval; None at both ends for a single outcome).
    """
    return report.aggregate(outcomes, kind) if len(outcomes) else None


def run_protocol(
    select,
    task,
    sweep,
    *,
    num_selections=1,
    num_retrains=1,
    scheme="vtab1k",
    search="per_selection",
    data_dir=None,
    strategy=None,
    seed=0,
    deterministic=True,
    log=None,
    finetune_fn=None,
    aggregate=None,
):
    """Runs the whole protocol for one task in-process (no memo) and returns the state dict.

    Args:
      select: callable(selection_index) -> (handle, extra dict) choosing the expert to tune.
      task: a `vtab_eval.tasks.Task`.
      sweep: list of settings (vtab_eval.sweeps).
      num_selections, num_retrains: trial counts (outcomes = their product).
      scheme: "vtab1k" or "full" (see SPLIT_SCHEMES); search: one of SEARCHES.
      data_dir, strategy: passed to fine-tuning.
      seed: base seed of every fine-tune's seed; deterministic: TF op determinism asked for.
      log: callable(str) for progress lines.
      finetune_fn: replaces `vtab_eval.finetune.finetune_and_evaluate` (tests).
      aggregate: None (the task suite's: `report.suite_aggregate(task.suite)`), or "median" /
        "mean" where the suite allows the choice.

    Returns:
      {"selections": [{"index", "handle", "selection", "tuning": [...], "best_setting",
      "retrains": [...]}], "outcomes": [...], "summary": summarize(outcomes, kind),
      "complete": True}.
    """
    if scheme not in SPLIT_SCHEMES:
        raise ValueError(f"unknown split scheme {scheme!r}; expected one of {list(SPLIT_SCHEMES)}")
    if search not in SEARCHES:
        raise ValueError(f"unknown search {search!r}; expected one of {SEARCHES}")
    check_sweep(sweep)
    kind = report.suite_aggregate(task.suite, aggregate)
    if num_selections < 1 or num_retrains < 1:
        raise ValueError(
            f"num_selections and num_retrains must be >= 1, got {num_selections}, {num_retrains}"
        )
    finetune_fn = finetune_fn or finetune.finetune_and_evaluate
    log = log or (lambda message: None)
    by_name = {s["name"]: s for s in sweep}

    def run(spec):
        log(spec.describe())
        return finetune_fn(
            spec.handle,
            task,
            spec.train_split,
            spec.eval_split,
            spec.setting,
            data_dir=data_dir,
            strategy=strategy,
            seed=spec.seed,
            log=log,
        )

    selections, chosen = [], None
    for i in range(num_selections):
        handle, extra = select(i)
        item = {"index": i, "handle": handle, "selection": extra, "tuning": []}
        if chosen is None or search == "per_selection":
            specs = tuning_specs(
                handle,
                task,
                sweep,
                selection=i,
                scheme=scheme,
                seed=seed,
                deterministic=deterministic,
                task_id={"name": task.name},
            )
            item["tuning"] = [run(s) for s in specs]
            chosen = best_setting(sweep, {t["setting"]: t["score"] for t in item["tuning"]})
        item["best_setting"] = chosen
        specs = retrain_specs(
            handle,
            task,
            by_name[chosen],
            selection=i,
            num_retrains=num_retrains,
            scheme=scheme,
            seed=seed,
            deterministic=deterministic,
            task_id={"name": task.name},
        )
        item["retrains"] = [run(s) for s in specs]
        selections.append(item)
    outcomes = [r["score"] for item in selections for r in item["retrains"]]
    return {
        "selections": selections,
        "outcomes": outcomes,
        "summary": summarize(outcomes, kind),
        "complete": True,
    }
