"""Runs an evaluation's fine-tunes and embeddings as Ray tasks: `--executor=ray` (docs/scale.md).

`RayBackend` is where a `runner.Executor` runs its items when the config says `executor.name=ray`:
each fine-tune spec is one Ray task that records its result in the content-keyed memo itself
(`runner.run_item`, the same code as in process), and each (expert, task) embedding is one task that
writes its features into the feature cache, from which ranking then reads them. Shared state is
only the memo and the cache, with their atomic commit protocol, so the driver killed and rerun
redoes nothing finished, and a result is recorded once whichever worker ran it. Each item fixes its
own seeds (the spec's); tests/vtab_eval/test_ray_executor.py shows the same records as in process.

Faults: a worker process that dies mid-item (killed, out of memory, a lost node) is retried by Ray
up to `max_retries` times; an item that raises (a bad image, a NaN loss) is not retried: the other
items finish and are recorded, then `ItemFailedError` names the first failed item in one line.
"""

import dataclasses

from bit_experts import determinism
from bit_experts.training import strategies
from vtab_eval import embed
from vtab_eval.selectors import base

_THREAD_VARS = ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")  # read when TF starts
INSTALL = 'pip install -e ".[ray]"'


class ItemFailedError(ValueError):
    """A fine-tune or embedding raised on a worker (not retried); the message is one line. A
    ValueError, so that the commands end with that line, as for bad input in process."""


def import_ray():
    """The `ray` module, or ValueError (one line) saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ValueError(f"--executor=ray needs Ray, which is not installed: {INSTALL}") from None
    return ray


def _first_line(err):
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"


def _setup_worker():
    """Every GPU a worker sees grows its memory as needed, so fractional items can share one."""
    import tensorflow as tf

    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # already initialised by an earlier item in this worker
            pass


def _finetune_item(run_item, fn, spec, outputs, data_dir, strategy, output_dir, memo, threads):
    determinism.fix_threads(threads)  # before the strategy starts TensorFlow
    _setup_worker()
    made = strategies.make_strategy(*strategy) if strategy else None  # None: TF's default
    memo_type, memo_dir = memo
    memo = memo_type(memo_dir, log=None)
    return run_item(fn, spec, outputs, data_dir, made, output_dir, memo, threads)


def _embed_item(entry, task, options, cache_dir, data_dir, threads):
    determinism.fix_threads(threads)
    _setup_worker()
    found = embed.embed_pool(
        [entry],
        task,
        options["split"],
        options["resolution"],
        batch_size=options["batch_size"],
        precision=options["precision"],
        cache_dir=cache_dir,
        data_dir=data_dir,
    )
    return found.failures.get(base.entry_handle(entry))


def settings(config):
    """The `RayBackend` keyword arguments of an evaluation config's "executor" section."""
    where = config["executor"]
    return dict(
        address=where["ray_address"],
        cpus_per_item=where["cpus_per_item"],
        gpus_per_item=where["gpus_per_item"],
        max_retries=where["max_retries"],
        threads=where["threads_per_item"] or determinism.cores_available(),
    )


@dataclasses.dataclass
class RayBackend:
    """Runs items as Ray tasks. `address`: "" starts a local Ray instance (stopped by `close`),
    "auto" or "ray://host:port" joins a cluster; `cpus_per_item` / `gpus_per_item`: the Ray
    resources of each item (fractions allowed); `max_retries`: retries of an item whose worker died.
    """

    address: str = ""
    cpus_per_item: float = 1.0
    gpus_per_item: float = 0.0
    max_retries: int = 3
    threads: int = 0
    log: object = print

    def __post_init__(self):
        self.log = self.log or (lambda line: None)
        self._ray = import_ray()
        self._started = not self._ray.is_initialized()
        if self._started:
            where = self.address or None
            self._ray.init(address=where, include_dashboard=False, logging_level="WARNING")
        found = self._ray.cluster_resources()
        nodes = len([n for n in self._ray.nodes() if n.get("Alive")])
        self.log(
            f"Ray: {nodes} node(s), {found.get('CPU', 0):g} CPUs, {found.get('GPU', 0):g} GPUs; "
            f"each item takes {self.cpus_per_item:g} CPU and {self.gpus_per_item:g} GPU"
        )

    def _remote(self, fn):
        # TensorFlow's pools are fixed when it starts in a worker: a worker started for another
        # size would refuse this one, so the size is part of the workers' environment.
        size = {v: str(self.threads) for v in _THREAD_VARS} if self.threads else {}
        return self._ray.remote(fn).options(
            num_cpus=self.cpus_per_item,
            num_gpus=self.gpus_per_item,
            max_retries=self.max_retries,
            retry_exceptions=False,
            runtime_env={"env_vars": size} if size else None,
        )

    def _collect(self, pending):
        """Yields (what, value) for every object ref of `pending` (ref -> what it is) as it
        finishes; then ItemFailedError naming the first item that raised."""
        failed = []
        while pending:
            ready, _ = self._ray.wait(list(pending), num_returns=1)
            what = pending.pop(ready[0])
            try:
                value = self._ray.get(ready[0])
            except self._ray.exceptions.RayError as err:
                failed.append((what, _first_line(getattr(err, "cause", None) or err)))
                self.log(f"FAILED: {what}: {failed[-1][1]}")
                continue
            yield what, value
        if failed:
            more = f" (and {len(failed) - 1} more, logged above)" if len(failed) > 1 else ""
            raise ItemFailedError(f"{failed[0][0]} failed on a Ray worker: {failed[0][1]}{more}")

    def finetune(self, run_item, fn, items, data_dir, strategy, output_dir, memo, threads):
        """Yields (spec, result) of each (spec, outputs) of `items` as its Ray task finishes;
        `run_item(fn, spec, outputs, data_dir, strategy, output_dir, memo)` runs on the worker,
        which builds `strategy` ((name, tpu), or None for TF's default) itself, on `threads`
        threads (this backend's `threads` if 0)."""
        threads = threads or self.threads
        remote = self._remote(_finetune_item)
        pending, memo = {}, (type(memo), memo.directory)  # the worker opens it, without the log
        for spec, outputs in items:
            args = (run_item, fn, spec, outputs, data_dir, strategy, output_dir, memo, threads)
            pending[remote.remote(*args)] = _Item(spec)
        for item, result in self._collect(pending):
            yield item.spec, result

    def embed(self, items, cache_dir, data_dir=None):
        """Computes into `cache_dir` the features of each (entry, task, ranking options) of `items`
        that it lacks, one Ray task each; returns {handle: why it failed} (ranking then leaves those
        modules out, as it would in process)."""
        todo = []
        for entry, task, options in items:
            found = embed.embed_pool(
                [entry],
                task,
                options["split"],
                options["resolution"],
                batch_size=options["batch_size"],
                precision=options["precision"],
                cache_dir=cache_dir,
                data_dir=data_dir,
                cache_only=True,
            )
            if base.entry_handle(entry) in found.failures:
                todo.append((entry, task, options))
        if not todo:
            return {}
        self.log(f"embedding {len(todo)} (expert, task) pairs on Ray")
        remote = self._remote(_embed_item)
        pending = {
            remote.remote(entry, task, options, cache_dir, data_dir, self.threads): _Embedding(
                entry, task
            )
            for entry, task, options in todo
        }
        found = self._collect(pending)
        return {base.entry_handle(item.entry): why for item, why in found if why}

    def close(self):
        """Stops the Ray instance this backend started (not one it joined)."""
        if self._started and self._ray.is_initialized():
            self._ray.shutdown()
        self._started = False


@dataclasses.dataclass(frozen=True)
class _Item:
    spec: object

    def __str__(self):
        s = self.spec
        return (
            f"fine-tune {s.task.name} / {s.name}: {s.train_split} -> {s.eval_split}, setting "
            f"{s.setting['name']}, seed {s.seed}"
        )


@dataclasses.dataclass(frozen=True)
class _Embedding:
    entry: object
    task: object

    def __str__(self):
        return f"embedding of {self.task.name} by {base.entry_handle(self.entry)}"
