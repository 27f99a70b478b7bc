"""The VTAB-1k fine-tuning protocol with repeated trials, resumable after a kill.

For each *selection* i (seeded by i): choose an expert (a callable the caller provides, so the
selector may be seeded too), then for every setting of the sweep fine-tune on `train800` and
score on `val200`, and keep the best setting (first in sweep order on ties). Then for each
*retrain* j fine-tune the chosen setting on `train800val200` and score on `test`. Every
(selection, retrain) pair is one outcome; the paper uses 10 selections x 3 retrains = 30. The
summary is the median outcome with a bootstrapped 95% confidence interval.

A sweep of a single setting skips tuning. The `full` split scheme (train -> val, trainval ->
test) serves the paper's table-3 full-data transfer. `state` holds every finished fine-tune and is
handed to `save` after each one, so a re-run with the saved state skips finished work.
"""

import numpy as np

from vtab_eval import finetune

SPLIT_SCHEMES = {
    "vtab1k": ("train800", "val200", "train800val200", "test"),
    "full": ("train", "val", "trainval", "test"),
}


def median_ci(values, confidence=0.95, num_resamples=2000, seed=0):
    """Median of `values` and a percentile-bootstrap confidence interval of the median.

    Returns:
      {"median", "ci_low", "ci_high", "num_outcomes"}; the interval collapses to the value for a
      single outcome.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"median_ci needs a non-empty list of outcomes, got shape {values.shape}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    rng = np.random.default_rng(seed)
    samples = rng.choice(values, size=(num_resamples, values.size), replace=True)
    medians = np.median(samples, axis=1)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(medians, [tail, 100 - tail])
    return {
        "median": float(np.median(values)),
        "ci_low": float(low),
        "ci_high": float(high),
        "num_outcomes": int(values.size),
    }


def _selection_state(state, index):
    selections = state.setdefault("selections", [])
    for item in selections:
        if item["index"] == index:
            return item
    item = {"index": index, "seed": index, "handle": None, "tuning": [], "retrains": []}
    selections.append(item)
    return item


def run_protocol(
    select,
    task,
    sweep,
    *,
    num_selections=1,
    num_retrains=1,
    scheme="vtab1k",
    data_dir=None,
    strategy=None,
    state=None,
    save=None,
    log=None,
    finetune_fn=None,
):
    """Runs (or resumes) the protocol for one task and returns the updated state dict.

    Args:
      select: callable(selection_index) -> (handle, extra dict) choosing the expert to tune.
      task: a `vtab_eval.tasks.Task`.
      sweep: list of settings (vtab_eval.sweeps).
      num_selections, num_retrains: trial counts (outcomes = their product).
      scheme: "vtab1k" or "full" (see SPLIT_SCHEMES).
      data_dir: TFDS data directory.
      strategy: tf.distribute strategy for fine-tuning.
      state: a previous return value (or saved JSON) to resume from; None starts afresh.
      save: callable(state) called after every finished fine-tune (write it atomically).
      log: callable(str) for progress lines.
      finetune_fn: replaces `vtab_eval.finetune.finetune_and_evaluate` (tests).

    Returns:
      The state: {"selections": [{"index", "seed", "handle", "selection", "tuning": [...],
      "best_setting", "retrains": [...]}], "outcomes": [...], "summary": median_ci(...) or None,
      "complete": bool}.
    """
    if scheme not in SPLIT_SCHEMES:
        raise ValueError(f"unknown split scheme {scheme!r}; expected one of {list(SPLIT_SCHEMES)}")
    if not sweep:
        raise ValueError("the sweep is empty; give at least one setting")
    if num_selections < 1 or num_retrains < 1:
        raise ValueError(
            f"num_selections and num_retrains must be >= 1, got {num_selections}, {num_retrains}"
        )
    names = [s["name"] for s in sweep]
    if len(set(names)) != len(names):
        raise ValueError(f"sweep setting names must be unique, got {names}")
    tune_split, val_split, final_split, test_split = SPLIT_SCHEMES[scheme]
    finetune_fn = finetune_fn or finetune.finetune_and_evaluate
    state = state if state is not None else {}
    log = log or (lambda message: None)
    save = save or (lambda s: None)
    by_name = {s["name"]: s for s in sweep}

    def run(handle, setting, train_split, eval_split, seed, what):
        log(f"{task.name}: {what} setting {setting['name']} seed {seed}")
        return finetune_fn(
            handle,
            task,
            train_split,
            eval_split,
            setting,
            data_dir=data_dir,
            strategy=strategy,
            seed=seed,
            log=log,
        )

    for i in range(num_selections):
        item = _selection_state(state, i)
        if item["handle"] is None:
            handle, extra = select(i)
            item["handle"], item["selection"] = handle, extra
            save(state)
        handle = item["handle"]
        if len(sweep) == 1:
            item["best_setting"] = sweep[0]["name"]
        else:
            done = {t["setting"] for t in item["tuning"]}
            for setting in sweep:
                if setting["name"] in done:
                    continue
                seed = 1000 * i + len(item["tuning"])
                item["tuning"].append(
                    run(handle, setting, tune_split, val_split, seed, f"selection {i} tuning")
                )
                save(state)
            val = {t["setting"]: t["score"] for t in item["tuning"]}
            item["best_setting"] = max(names, key=lambda n: (val[n], -names.index(n)))
        for j in range(len(item["retrains"]), num_retrains):
            setting = by_name[item["best_setting"]]
            seed = 1000 * i + 100 + j
            item["retrains"].append(
                run(handle, setting, final_split, test_split, seed, f"selection {i} retrain {j}")
            )
            save(state)
    outcomes = [
        r["score"]
        for item in state["selections"][:num_selections]
        for r in item["retrains"][:num_retrains]
    ]
    state["outcomes"] = outcomes
    state["summary"] = median_ci(outcomes) if outcomes else None
    state["complete"] = len(outcomes) == num_selections * num_retrains
    save(state)
    return state
