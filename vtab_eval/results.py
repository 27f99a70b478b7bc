"""Result files, OUT/results/<task slug>/<method>.json, rebuilt from the memo alone (never
trains): per selection the expert, its tuning, best setting and retrains, then the outcomes, their
summary, `complete`, the spec keys, what the pick cost and the content identity
(docs/evaluation.md, "Result JSON").
"""

import os

from vtab_eval import files, identity, plan, protocol

HINDSIGHT = "hindsight"


def result_path(output_dir, task_name, method):
    """OUT/results/<task slug>/<method>.json."""
    return os.path.join(output_dir, "results", files.task_slug(task_name), f"{method}.json")


def _track_result(track, memo):
    """One planned track's part of a result, from the memo."""
    selections, outcomes, complete = [], [], True
    for i, (entry, extra) in enumerate(track.entries):
        retrains = [r for r in map(memo.get, track.retrains[i]) if r is not None]
        complete = complete and len(retrains) == len(track.retrains[i])
        outcomes += [r["score"] for r in retrains]
        selections.append(
            {
                "index": i,
                "seed": extra.get("seed"),
                "handle": getattr(entry, "handle", entry),
                "selection": extra,
                "tuning": [r for r in map(memo.get, track.tuning[i]) if r is not None],
                "best_setting": track.best[i],
                "retrains": retrains,
            }
        )
    keys = [s.key for specs in track.probes + track.tuning + track.retrains for s in specs]
    return {
        "selections": selections,
        "outcomes": outcomes,
        "summary": protocol.aggregate(outcomes, track.job.aggregate) if outcomes else None,
        "complete": complete,
        "spec_keys": list(dict.fromkeys(keys)),
    }


def run_settings(config):
    """What every track of a run shares, as recorded in each result ("config" key)."""
    proto, selection = config["protocol"], config["selection"]
    settings = {
        "num_selections": proto["num_selections"],
        "num_retrains": proto["num_retrains"],
        "seed": config["seed"],
        "deterministic": config["deterministic"],
        "include_baseline": selection["include_baseline"],
        "selection_resolution": selection["resolution"] or None,
        "collection": config["collection"] or "",
    }
    if selection["fallback"] != "none":  # absent without one: results kept before keep their ids
        policy = {"policy": selection["fallback"]}
        settings["fallback"] = policy | {"confidence": selection["fallback_confidence"]}
    return settings


def write_result(tracks, memo, settings, pool, output_dir, log):
    """Writes and returns the result of one task and method's tracks: before every final
    fine-tune is recorded, the outcomes so far with `complete: false` (hindsight: the best so far)."""
    first = tracks[0]
    job, method = first.job, first.method
    content = {
        "config": settings,
        "method": method,
        "task": job.task_id,
        "aggregate": job.aggregate,
        "scheme": job.scheme,
        "search": job.search,
        "sweep": job.sweep,
        "modules": [{"module": identity.module_identity(e)} for e in pool],
    }
    result_id = identity.content_hash(content, 16)  # What the result depends on.
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
        "sweep_preset": job.preset,
        "config": settings,
        "seed": settings["seed"],
        "deterministic": settings["deterministic"],
        "aggregate": job.aggregate,
        "identity": result_id,
        "cost": plan.pick_cost(tracks),
        **({"ranking": first.ranking} if first.ranking else {}),
        **body,
    }
    path = result_path(output_dir, job.task.name, method)
    previous = files.read_json(path, "result file")
    if previous is not None and previous.get("identity") != result_id:
        log(
            f"{path}: was identity {previous.get('identity')}, now {result_id} (settings, task "
            "or collection changed): rewritten from this run's fine-tunes"
        )
    files.write_json(path, result)
    return result
