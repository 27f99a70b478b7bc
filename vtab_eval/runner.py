"""Where fine-tunes run, over one content-keyed memo, and the one driver of a plan's tracks.

* `Memo`: one JSON file per finished fine-tune, `MEMO_DIR/<spec key>.json`, written atomically as
  soon as the fine-tune ends, holding the spec's identity and its result. A run killed at any moment
  and started again finds every finished fine-tune there and redoes none; a record that cannot be
  read, lacks a score or has another identity is recomputed. Records of an earlier spec format are
  not reused, and the run says so in one line.
* `LocalExecutor`: runs specs in this process, once per key, with one progress bar (tqdm) over the
  whole run and one line per finished fine-tune. An executor is what `run_tracks` and
  `vtab_eval.engine` need from "where it runs": `memo`, `run(specs, later, on_result)`, `close()`.
* `run_tracks`: the protocol's stages over any executor: every track's tuning fine-tunes, then the
  best setting of each tuning, then the retrains, reporting each recorded result.
* Per fine-tune files under `output_dir` (named `<task slug>/<module>-<key[:12]>`): TensorBoard
  scalars of every fine-tune (`tensorboard/`), test-set predictions of every final fine-tune
  (`predictions/`, .npz), and with `save_models` the classifier (`models/`, a SavedModel).
  The memo and `output_dir` may be local or a `tf.io.gfile` URL (`gs://...`, docs/workdir.md).
"""

import os
import sys
import time

from bit_experts import atomic_files
from vtab_eval import files, identity, plan

MEMO_FORMAT = 1


def spec_dir_name(spec):
    """`<task slug>/<module>-<key[:12]>`: where a spec's TensorBoard logs, predictions and model go."""
    name = files.name_slug(spec.name) or "module"
    return os.path.join(files.task_slug(spec.task.name), f"{name}-{spec.key[:12]}")


class Memo:
    """Content-keyed fine-tune results under `directory` (one atomic JSON file per spec)."""

    def __init__(self, directory):
        self.directory = atomic_files.abspath(directory)

    def path(self, key):
        return os.path.join(self.directory, f"{key}.json")

    def get(self, spec):
        """The memoised result of `spec`, or None (missing, unreadable, or another identity)."""
        try:
            record = files.read_json(self.path(spec.key), "fine-tune record")
        except (OSError, ValueError):
            return None
        if not isinstance(record, dict) or record.get("key") != spec.key:
            return None
        result = record.get("result")
        return result if isinstance(result, dict) and "score" in result else None

    def put(self, spec, result):
        files.write_json(
            self.path(spec.key),
            {"format": MEMO_FORMAT, "key": spec.key, "identity": spec.identity(), "result": result},
        )

    def earlier_formats(self):
        """How many records were written under another spec format (never reused)."""
        count = 0
        for record in load_records(self.directory, whole=True).values():
            found = (record.get("identity") or {}).get("format")
            count += found != identity.SPEC_FORMAT
        return count


class LocalExecutor:
    """Runs lists of specs in this process over one memo, with one progress bar for the run.

    Args:
      memo: a `Memo`.
      output_dir: root of the per fine-tune files (TensorBoard, predictions, models); None: none.
      save_models: also export every final fine-tune's classifier as a SavedModel.
      finetune_fn: replaces `vtab_eval.finetune.finetune_and_evaluate` (tests); called with the
        same arguments, so it accepts its keywords.
      data_dir, strategy: passed to every fine-tune.
      log: callable(str) for one line per finished fine-tune. progress: show the tqdm bar.
    """

    def __init__(
        self,
        memo,
        *,
        output_dir=None,
        save_models=False,
        finetune_fn=None,
        data_dir=None,
        strategy=None,
        log=print,
        progress=True,
    ):
        self.memo = memo
        self.output_dir = output_dir
        self.save_models = save_models
        self.finetune_fn = finetune_fn
        self.data_dir = data_dir
        self.strategy = strategy
        self.log = log or (lambda message: None)
        self.progress = progress
        self.ran = []  # keys of the fine-tunes this executor trained (not memo hits)
        self._bar = None
        self._done = 0  # fine-tunes trained so far (the bar's count, also when it is hidden)

    def _outputs(self, spec):
        if self.output_dir is None:
            return {}
        name = spec_dir_name(spec)
        outputs = {"summary_dir": os.path.join(self.output_dir, "tensorboard", name)}
        if spec.is_final:
            outputs["predictions_path"] = os.path.join(
                self.output_dir, "predictions", name + ".npz"
            )
            if self.save_models:
                outputs["save_model_dir"] = os.path.join(self.output_dir, "models", name)
        return outputs

    def run(self, specs, later=0, on_result=None):
        """Runs every spec the memo lacks, once per key; returns {key: result} for all specs.

        Specs run in the order given (callers order them task by task, so that tasks finish one
        after another). `later`: fine-tunes that later stages will add, counted in the bar's total
        for the ETA. `on_result`: callable(spec, result) after each fine-tune this call trains is
        recorded in the memo; it must not train.
        """
        from tqdm.auto import tqdm

        from vtab_eval import finetune

        results, todo = {}, []
        for spec in specs:
            if spec.key not in results:
                results[spec.key] = self.memo.get(spec)
                if results[spec.key] is None:
                    todo.append(spec)
        recorded = len(results) - len(todo)
        if recorded:
            self.log(f"{recorded} fine-tunes already recorded in {self.memo.directory}: reused")
        if not todo:
            return results
        total = self._done + len(todo) + int(later)
        if self._bar is None:
            self._bar = tqdm(
                total=0,
                desc="fine-tunes",
                unit="fine-tune",
                file=sys.stderr,
                disable=not self.progress,
                dynamic_ncols=True,
            )
        self._bar.total = total
        self._bar.refresh()
        fn = self.finetune_fn or finetune.finetune_and_evaluate
        for spec in todo:
            outputs = self._outputs(spec)
            start = time.time()
            result = fn(
                spec.handle,
                spec.task,
                spec.train_split,
                spec.eval_split,
                spec.setting,
                data_dir=self.data_dir,
                strategy=self.strategy,
                seed=spec.seed,
                deterministic=spec.deterministic,
                **outputs,
            )
            result = dict(result, key=spec.key)
            result.setdefault("seed", spec.seed)
            result.setdefault("seconds", round(time.time() - start, 3))
            if outputs:
                result["outputs"] = {
                    k: os.path.relpath(v, self.output_dir) for k, v in outputs.items()
                }
            self.memo.put(spec, result)
            self.ran.append(spec.key)
            results[spec.key] = result
            self._bar.update(1)
            self._done += 1
            what = "test" if spec.is_final else "validation"
            self.log(
                f"[{self._done}/{total}] {spec.describe()}: {what} score {result['score']:.4f} "
                f"({result.get('seconds', 0):.0f}s)"
            )
            if on_result is not None:
                on_result(spec, result)
        return results

    def close(self):
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        self._done = 0


def make_executor(config, log=print, progress=True, finetune_fn=None):
    """The in-process executor of an evaluation config (its memo, outputs and strategy)."""
    from bit_experts.training import strategies

    out, memo_dir, _ = files.output_paths(config)
    finetune = config["finetune"]
    return LocalExecutor(
        Memo(memo_dir),
        output_dir=out,
        save_models=finetune["save_models"],
        finetune_fn=finetune_fn,
        data_dir=config["data_dir"],
        strategy=strategies.make_strategy(finetune["strategy"], finetune["tpu"]),
        log=log,
        progress=progress,
    )


def run_tracks(tracks, executor, before_retrains=None, on_result=None):
    """Runs the protocol's fine-tunes of every track through `executor` (stages 2 and 3).

    Plans every track's tuning specs (`plan.plan_tuning`) and runs them, the bar's total counting
    the retrains to come; then plans each track's retrains from the recorded tuning scores
    (`plan.plan_retrains`), calls `before_retrains()` (e.g. to write results marked incomplete),
    and runs the retrains in track order, calling `on_result(spec, result)` after each one this
    run trains. Returns nothing: every result is in `executor.memo`.
    """
    stale = executor.memo.earlier_formats()
    if stale:
        executor.log(
            f"{executor.memo.directory}: {stale} fine-tunes recorded by an earlier version (spec "
            f"format other than {identity.SPEC_FORMAT}) are not reused; they are run again"
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
    """{key: result} (`whole`: {key: record}) of every readable memo file, for reports."""
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
