"""Runs fine-tune specs (`vtab_eval.plan.Spec`) once each, over a content-keyed on-disk memo.

* Memo: one JSON file per finished fine-tune, `MEMO_DIR/<spec key>.json`, written atomically
  (`bit_experts.atomic_files`) as soon as the fine-tune ends, holding the spec's identity and its
  result. A run killed at any moment and started again finds every finished fine-tune there and
  redoes none of them; a file that cannot be read or whose identity differs is recomputed.
* Sharing: specs with the same key (three selectors that picked the same expert, hindsight's
  candidate that a selector also picked) run once.
* Output: a progress bar with an ETA over every fine-tune the run still has to do (tqdm), and one
  line per finished fine-tune with its score on the evaluation split (validation or test).
* Per fine-tune files under `output_dir` (named `<task slug>/<module>-<key[:12]>`): TensorBoard
  scalars of every fine-tune in `tensorboard/` (core TF writes them; no TensorBoard install is
  needed), test-set predictions of every final fine-tune in `predictions/`
  (.npz), and with `save_models` the fine-tuned classifier in `models/` (a SavedModel).
* Where: the memo folder and `output_dir` may be local or a URL of any `tf.io.gfile` filesystem
  (`gs://...`, docs/workdir.md "commit protocol"): each memo file and prediction file is one write
  there (no rename), so a memo file exists whole or not at all; `save_models` needs a local
  `output_dir` (`vtab_eval.finetune` refuses a URL before training).
"""

import json
import os
import re
import sys
import time

from bit_experts import atomic_files
from vtab_eval import report

MEMO_FORMAT = 1


def _name_slug(text):
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(text)).strip("_") or "module"


def spec_dir_name(spec):
    """`<task slug>/<module>-<key[:12]>`: where a spec's TensorBoard logs, predictions and model go."""
    return os.path.join(
        report.task_slug(spec.task.name), f"{_name_slug(spec.name)}-{spec.key[:12]}"
    )


class Memo:
    """Content-keyed fine-tune results under `directory` (one atomic JSON file per spec)."""

    def __init__(self, directory):
        self.directory = atomic_files.abspath(directory)

    def path(self, key):
        return os.path.join(self.directory, f"{key}.json")

    def get(self, spec):
        """The memoised result of `spec`, or None (missing, unreadable, or another identity)."""
        path = self.path(spec.key)
        try:
            record = report.read_json(path)
        except (OSError, ValueError):
            return None
        if not isinstance(record, dict) or record.get("key") != spec.key:
            return None
        return record.get("result")

    def put(self, spec, result):
        report.write_json(
            self.path(spec.key),
            {"format": MEMO_FORMAT, "key": spec.key, "identity": spec.identity(), "result": result},
        )


class Executor:
    """Runs lists of specs over one memo, with one progress bar for the whole run.

    Args:
      memo_dir: the memo folder (e.g. OUT/finetunes).
      output_dir: root of the per fine-tune files (TensorBoard, predictions, models); None: none.
      save_models: also export every final fine-tune's classifier as a SavedModel.
      finetune_fn: replaces `vtab_eval.finetune.finetune_and_evaluate` (tests); called with the
        same arguments, so it accepts its keywords (e.g. with **kwargs).
      data_dir, strategy: passed to every fine-tune.
      log: callable(str) for one line per finished fine-tune.
      progress: show the tqdm bar (on stderr).
    """

    def __init__(
        self,
        memo_dir,
        *,
        output_dir=None,
        save_models=False,
        finetune_fn=None,
        data_dir=None,
        strategy=None,
        log=print,
        progress=True,
    ):
        self.memo = Memo(memo_dir)
        self.output_dir = output_dir
        self.save_models = save_models
        self.finetune_fn = finetune_fn
        self.data_dir = data_dir
        self.strategy = strategy
        self.log = log or (lambda message: None)
        self.progress = progress
        self.ran = []  # keys of the fine-tunes this executor trained (not memo hits)
        self._bar = None
        self._done = 0  # fine-tunes trained by this executor (the bar's count, kept even when
        # the bar is disabled, for the log lines)

    def missing(self, specs):
        """The specs (deduplicated) that the memo does not hold yet."""
        from vtab_eval import plan

        return [s for s in plan.unique(specs) if self.memo.get(s) is None]

    def _ensure_bar(self):
        if self._bar is None:
            from tqdm.auto import tqdm

            self._bar = tqdm(
                total=0,
                desc="fine-tunes",
                unit="fine-tune",
                file=sys.stderr,
                disable=not self.progress,
                dynamic_ncols=True,
            )
        return self._bar

    def _outputs(self, spec):
        if self.output_dir is None:
            return {}
        name = spec_dir_name(spec)
        # Scalars are written with core TF (`tf.summary.write`, vtab_eval.finetune): no
        # TensorBoard install is needed to write them, only to view them.
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
        for the ETA. `on_result`: callable(spec, result) called after each fine-tune this call
        trains has been recorded in the memo (e.g. to rewrite a finished task's report); it must
        not train.
        """
        from vtab_eval import finetune

        specs = list(specs)
        results, todo = {}, []
        for spec in specs:
            if spec.key in results:
                continue
            found = self.memo.get(spec)
            if found is None:
                results[spec.key] = None
                todo.append(spec)
            else:
                results[spec.key] = found
        recorded = len(results) - len(todo)
        if recorded:
            self.log(f"{recorded} fine-tunes already recorded in {self.memo.directory}: reused")
        total = self._done + len(todo) + int(later)
        if not todo:
            return results  # nothing to train: no progress bar to draw
        bar = self._ensure_bar()
        bar.total = total
        bar.refresh()
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
            if outputs and self.output_dir:
                result["outputs"] = {
                    k: os.path.relpath(v, self.output_dir) for k, v in outputs.items()
                }
            self.memo.put(spec, result)
            self.ran.append(spec.key)
            results[spec.key] = result
            bar.update(1)
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
        self._done = 0  # fine-tunes trained by this executor (the bar's count, kept even when
        # the bar is disabled, for the log lines)


def load_records(memo_dir):
    """{key: result} of every readable memo file (for reports and inspection)."""
    found = {}
    if not atomic_files.isdir(memo_dir):
        return found
    for name in sorted(atomic_files.listdir(memo_dir)):
        if not name.endswith(".json") or name.startswith("."):
            continue
        try:
            record = json.loads(atomic_files.read_bytes(os.path.join(memo_dir, name)))
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and "key" in record:
            found[record["key"]] = record.get("result")
    return found
