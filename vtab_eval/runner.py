"""Where fine-tunes run, over one content-keyed memo, and `run_tracks`, the one driver of a plan.

`Memo`: one JSON file per finished fine-tune, written as it ends, so a run killed and started again
redoes none. An executor is what the driver needs from "where it runs": `memo`, `log`, `run(specs,
later, on_result)`, `embed(items, cache_dir)`, `close()`. `Executor` runs its items in this process,
or, given a backend (`ray_executor.RayBackend`, docs/scale.md), as Ray tasks. Paths may be URLs.
"""

import dataclasses
import os
import sys
import time

from tqdm.auto import tqdm

from bit_experts import atomic_files, determinism
from bit_experts.training import strategies
from vtab_eval import files, finetune, identity, plan

MEMO_FORMAT = 1


def spec_dir_name(spec):
    """`<task slug>/<module>-<key[:12]>`: where a spec's TensorBoard logs, predictions and model go."""
    name = files.name_slug(spec.name) or "module"
    return os.path.join(files.task_slug(spec.task.name), f"{name}-{spec.key[:12]}")


class Memo:
    """Content-keyed fine-tune results under `directory` (one atomic JSON file per spec)."""

    def __init__(self, directory, log=print):
        self.directory, self.log = atomic_files.abspath(directory), log or (lambda line: None)

    def get(self, spec):
        """The memoised result of `spec`, or None (missing, unreadable, or another identity); an
        unreadable record is named in one line and its fine-tune runs again."""
        try:
            record = files.read_json(os.path.join(self.directory, f"{spec.key}.json"), "record")
        except (OSError, ValueError) as err:
            self.log(f"{err}; the fine-tune runs again")
            return None
        if not isinstance(record, dict) or record.get("key") != spec.key:
            return None
        result = record.get("result")
        return result if isinstance(result, dict) and "score" in result else None

    def put(self, spec, result):
        spec_id = identity.spec_identity(spec)
        record = {"format": MEMO_FORMAT, "key": spec.key, "identity": spec_id, "result": result}
        files.write_json(os.path.join(self.directory, f"{spec.key}.json"), record)

    def earlier_formats(self):
        """How many records were written under another spec format (never reused)."""
        records = load_records(self.directory, whole=True).values()
        return sum((r.get("identity") or {}).get("format") != identity.SPEC_FORMAT for r in records)


@dataclasses.dataclass
class Executor:
    """Runs specs over one `Memo`, with one progress bar for the run; writes `tensorboard/`,
    `predictions/` and (`save_models`) `models/` under `output_dir`, if given. `finetune_fn`
    replaces `finetune.finetune_and_evaluate`; `ran`: keys trained here. `backend`: None runs each
    item in this process, in order; a `ray_executor.RayBackend` runs them as Ray tasks (then
    `strategy` is (name, tpu), which each worker builds). `threads`: the size of TensorFlow's
    thread pools each item runs with (recorded with its result; in process, set by
    `make_executor` before TensorFlow starts)."""

    memo: Memo
    _: dataclasses.KW_ONLY
    output_dir: str = None
    save_models: bool = False
    finetune_fn: object = None
    data_dir: str = None
    strategy: object = None
    log: object = print
    progress: bool = True
    backend: object = None
    threads: int = 0

    def __post_init__(self):
        self.log = self.log or (lambda message: None)
        self.ran, self._bar, self._done, self._total = [], None, 0, 0  # _done: trained so far

    def _outputs(self, spec):
        root, name = self.output_dir, spec_dir_name(spec)
        if root is None:
            return {}
        outputs = {"summary_dir": os.path.join(root, "tensorboard", name)}
        if spec.is_final:
            outputs["predictions_path"] = os.path.join(root, "predictions", name + ".npz")
        if spec.is_final and self.save_models:
            outputs["save_model_dir"] = os.path.join(root, "models", name)
        return outputs

    def run(self, specs, later=0, on_result=None):
        """Runs, in order, every spec the memo lacks, once per key; returns {key: result} of all.
        `later`: fine-tunes later stages will add (counted in the bar). `on_result(spec, result)`:
        called as each fine-tune this call trains is recorded; it must not train."""
        results, todo = self._start(specs, later)
        fn = self.finetune_fn or finetune.finetune_and_evaluate
        where = (self.data_dir, self.strategy, self.output_dir, self.memo, self.threads)
        if self.backend is not None:  # as they finish
            items = [(spec, self._outputs(spec)) for spec in todo]
            for spec, result in self.backend.finetune(run_item, fn, items, *where):
                self._recorded(spec, result, results, on_result)
            return results
        for spec in todo:
            result = run_item(fn, spec, self._outputs(spec), *where)
            self._recorded(spec, result, results, on_result)
        return results

    def _start(self, specs, later):
        """({key: memoised result or None} of `specs`, the specs to run); opens or grows the bar."""
        specs = plan.unique(specs)
        results = {spec.key: self.memo.get(spec) for spec in specs}
        todo = [spec for spec in specs if results[spec.key] is None]
        if len(todo) < len(specs):
            recorded = len(specs) - len(todo)
            self.log(f"{recorded} fine-tunes already recorded in {self.memo.directory}: reused")
        if not todo:
            return results, todo
        self._total = self._done + len(todo) + int(later)
        if self._bar is None:
            style = dict(desc="fine-tunes", unit="fine-tune", file=sys.stderr, dynamic_ncols=True)
            self._bar = tqdm(total=0, disable=not self.progress, **style)
        self._bar.total = self._total
        self._bar.refresh()
        return results, todo

    def _recorded(self, spec, result, results, on_result):
        """Counts, logs and reports one fine-tune that `run_item` recorded."""
        self.ran.append(spec.key)
        results[spec.key] = result
        self._bar.update(1)
        self._done += 1
        what = "test" if spec.is_final else "validation"
        self.log(
            f"[{self._done}/{self._total}] {spec.task.name} / {spec.name}: {spec.train_split} -> "
            f"{spec.eval_split}, setting {spec.setting['name']}, seed {spec.seed}: {what} "
            f"score {result['score']:.4f} ({result['seconds']:.0f}s)"
        )
        if on_result is not None:
            on_result(spec, result)

    def embed(self, items, cache_dir, data_dir=None):
        """With a backend, computes into `cache_dir` the features of each (entry, task, ranking
        options) of `items` that it lacks, in parallel; in process nothing (ranking computes what
        it lacks as it goes). Returns {handle: why its features failed}."""
        return {} if self.backend is None else self.backend.embed(items, cache_dir, data_dir)

    def close(self):
        if self.backend is not None:
            self.backend.close()
        if self._bar is not None:
            self._bar.close()
        self._bar, self._done = None, 0


def run_item(fn, spec, outputs, data_dir, strategy, output_dir, memo, threads):
    """Runs one fine-tune `spec` with `fn` (`finetune.finetune_and_evaluate`'s signature) on
    TensorFlow pools of `threads` threads, records its result in `memo` and returns it; the same
    wherever it runs (this process or a worker)."""
    determinism.fix_threads(threads)
    kwargs = dict(outputs, data_dir=data_dir, strategy=strategy)
    kwargs.update(seed=spec.seed, deterministic=spec.deterministic)
    start = time.time()
    result = fn(spec.handle, spec.task, spec.train_split, spec.eval_split, spec.setting, **kwargs)
    seconds = round(time.time() - start, 3)
    result = {
        "seed": spec.seed,
        "seconds": seconds,
        "threads": threads or determinism.cores_available(),
        **result,
        "key": spec.key,
    }
    if outputs:
        result["outputs"] = {k: os.path.relpath(v, output_dir) for k, v in outputs.items()}
    memo.put(spec, result)
    return result


def make_executor(config, log=print, progress=True, finetune_fn=None):
    """The `Executor` of an evaluation config over its memo, outputs and strategy; its "executor"
    section says where items run (in process, or on Ray)."""
    out, memo_dir, _ = files.output_paths(config)
    section = config["finetune"]
    common = dict(output_dir=out, save_models=section["save_models"], finetune_fn=finetune_fn)
    common.update(data_dir=config["data_dir"], log=log, progress=progress)
    strategy = (section["strategy"], section["tpu"])
    common["threads"] = config["executor"]["threads_per_item"] or determinism.cores_available()
    if config["executor"]["name"] == "ray":
        from vtab_eval import ray_executor  # Ray is optional: imported only when asked for

        backend = ray_executor.RayBackend(**ray_executor.settings(config), log=log)
        return Executor(Memo(memo_dir, log), strategy=strategy, backend=backend, **common)
    determinism.fix_threads(common["threads"])  # before the strategy starts TensorFlow
    return Executor(Memo(memo_dir, log), strategy=strategies.make_strategy(*strategy), **common)


def run_tracks(tracks, executor, before_retrains=None, on_result=None):
    """Runs every probe policy's probes and chooses its picks (`plan.choose_probed`), then every
    track's tuning, then plans and runs its retrains, through `executor`; calls
    `before_retrains()` in between and `on_result(spec, result)` after each retrain it trains.
    Every result is in `executor.memo`."""
    stale = executor.memo.earlier_formats()
    if stale:
        executor.log(
            f"{executor.memo.directory}: {stale} fine-tunes recorded by an earlier version (spec "
            f"format other than {identity.SPEC_FORMAT}) are not reused; they are run again"
        )
    probing = [t for t in tracks if t.probes]
    if probing:
        executor.run([s for t in probing for specs in t.probes for s in specs])
    for track in probing:
        plan.choose_probed(track, executor.memo)
        executor.log(
            f"{track.job.task.name} / {track.method}: selected "
            + ", ".join(extra["selected_name"] for _, extra in track.entries)
            + " (best probe on validation)"
        )
    for track in tracks:
        plan.plan_tuning(track)
    later = set().union(*(plan.retrain_placeholders(t) for t in tracks))
    executor.run([s for t in tracks for specs in t.tuning for s in specs], later=len(later))
    for track in tracks:
        plan.plan_retrains(track, executor.memo)
    if before_retrains is not None:
        before_retrains()
    executor.run([s for t in tracks for specs in t.retrains for s in specs], on_result=on_result)


def load_records(memo_dir, whole=False):
    """{key: result} (`whole`: {key: record}) of every readable memo file."""
    found = {}
    if not atomic_files.isdir(memo_dir):
        return found
    for name in sorted(atomic_files.listdir(memo_dir)):
        if not name.endswith(".json") or name.startswith("."):
            continue
        try:
            record = files.read_json(os.path.join(memo_dir, name))
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and "key" in record:
            found[record["key"]] = record if whole else record.get("result")
    return found
