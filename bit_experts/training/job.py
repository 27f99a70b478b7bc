"""One upstream training job: baseline -> full experts -> adapter experts -> EPN.

Each stage is skipped when its models/<name>/ folder is complete (its info.json, written last, is
there), and each model resumes from its newest checkpoint, so re-running the same command after a
crash finishes the job. Which stages run is decided once at the start (so every worker of a
multi-worker job agrees). Output layout: docs/workdir.md. The work directory may be a local path or
a URL of any `tf.io.gfile` filesystem (`gs://...`): every file of it goes through
`bit_experts.atomic_files`, which commits without renaming there (docs/workdir.md, commit protocol).
"""

from __future__ import annotations

import errno
import math
import os
from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf

from bit_experts import atomic_files, determinism, presets
from bit_experts.data import UpstreamSource, training_dataset
from bit_experts.training import init_source, outputs, work_directory
from bit_experts.training.config import STAGES, check_stages, resolve_config
from bit_experts.training.epn import build_epn, epn_targets, upstream_log_p
from bit_experts.training.loop import UnitPlan, UnitResult, train_unit, weights_fingerprint
from bit_experts.training.schedules import scaled_learning_rate
from bit_experts.training.transfer import copy_backbone
from bit_experts.training.upstream import Upstream, open_source, prepare_upstream
from bit_experts.training.work_directory import DiskFullError, check_workdir

BASELINE = "baseline"
ADAPTERS = "adapters"
EPN = "epn"


def full_expert_name(domain_name: str) -> str:
    """The model name of the full expert for a domain, e.g. `expert_latin`."""
    return f"expert_{outputs.safe_name(domain_name)}"


def _is_disk_full(error: BaseException) -> bool:
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        return True
    return isinstance(error, tf.errors.OpError) and "No space left on device" in str(error)


class Job:
    """Trains the stages of one config into one work directory (see `run_job`)."""

    def __init__(self, config, workdir, strategy, chief, preemption_handler, print_fn, source=None):
        self.config = config
        self._source = source
        self.workdir = workdir
        self.strategy = strategy
        self.chief = chief
        self.preemption_handler = preemption_handler
        self.print = print_fn
        self.upstream: Upstream | None = None
        self._baseline = None
        self._lock = None
        model = config["model"]
        self.preset = model["preset"]
        self.image_size = model["image_size"]
        self.dtype = None if model["precision"] == "float32" else model["precision"]
        self.done = self._finished_models()
        self.results: list[UnitResult] = []
        # Seeds and op determinism (issue 16); recorded in every info.json.
        self.seeds = determinism.configure(config["seed"], config["deterministic"])
        self.init_from = (
            None if config["init_from"] is None else init_source.describe(config["init_from"])
        )
        # B takes init_from's head too; with 0 steps B is init_from as it is.
        self.init_head = config["init_head"] or config["baseline"]["steps"] == 0

    # --- setup ---------------------------------------------------------------------------------

    def _finished_models(self) -> set[str]:
        root = outputs.models_dir(self.workdir)
        if not atomic_files.isdir(root):
            return set()
        return {n for n in atomic_files.listdir(root) if outputs.model_exists(self.workdir, n)}

    def prepare(self) -> None:
        """Takes the work directory's lock, checks its config, chooses the domains, writes the
        job's JSON files. A refused prepare leaves no trace: the lock is given back, and a work
        directory it created is removed."""
        created = self.chief and not atomic_files.exists(self.workdir)
        self._hold()
        try:
            self._prepare()
        except BaseException:
            self.release()
            if created:
                atomic_files.rmtree(self.workdir)
            raise

    def _hold(self) -> None:
        """Takes the work directory's lock (the chief only: the workers of one job share it)."""
        if self.chief and self._lock is None:
            self._lock = work_directory.take_lock(self.workdir, self.print)

    def release(self) -> None:
        """Gives the work directory's lock back (`run` does when it ends; a process that ends
        without either leaves a lock the next job takes over, since its pid is gone)."""
        lock, self._lock = self._lock, None
        if lock is not None:
            lock.__exit__(None, None, None)

    def _prepare(self) -> None:
        work_directory.check_config(self.workdir, self.config, self.print)
        source = self._source or open_source(self.config)
        if self.init_from is not None and BASELINE not in self.done:
            # Strict check of the source against model.preset before anything is written.
            classes = source.num_labels if self.init_head else 0
            init_source.load(
                self.init_from, presets.create_model(self.preset, classes), self.init_head
            )
        self.upstream = prepare_upstream(self.config, self.workdir, self.chief, self.print, source)
        later = [full_expert_name(d.name) for d in self.upstream.domains] + [ADAPTERS, EPN]
        if BASELINE in self.done and not self.done.issuperset(later):
            self.baseline()  # read back now: a corrupt file is refused before anything is written
        if self.chief:
            root = outputs.models_dir(self.workdir)
            if atomic_files.isdir(root):  # Leftovers of a local save that was killed midway.
                for name in atomic_files.listdir(root):
                    if name.startswith(".tmp-"):
                        atomic_files.rmtree(os.path.join(root, name))
            outputs.write_json(os.path.join(self.workdir, work_directory.CONFIG_FILE), self.config)
            outputs.write_json(
                os.path.join(self.workdir, "label_names.json"), self.upstream.source.label_names
            )

    # --- helpers -------------------------------------------------------------------------------

    def _plan(self, stage: str, name: str, expert_id=None) -> UnitPlan:
        s = self.config[stage]
        batch = s["batch_size"] or self.config["batch_size"]
        return UnitPlan(
            name=name,
            steps=s["steps"],
            batch_size=batch,
            peak_lr=scaled_learning_rate(s["base_lr"], batch),
            warmup_steps=s["warmup_steps"],
            decay=s["decay"],
            momentum=s["momentum"],
            weight_decay=s["weight_decay"],
            seed=self.seeds["data"],
            expert_id=expert_id,
        )

    def _dataset_fn(self, plan: UnitPlan, indices=None, expert_targets=None):
        source = self.upstream.source

        def make(ctx, start_step):
            return training_dataset(
                source,
                batch_size=plan.batch_size,
                image_size=self.image_size,
                seed=self.seeds["data"],
                augment_seed=self.seeds["augmentation"],
                start_step=start_step,
                indices=indices,
                expert_targets=expert_targets,
                input_context=ctx,
                shuffle_buffer=self.config["upstream"]["shuffle_buffer"],
                crop_min_area=self.config["upstream"]["crop_min_area"],
                flip=self.config["upstream"]["flip"],
            )

        return make

    def _train(self, plan, model, dataset_fn, checkpoint_name, init_fn=None) -> UnitResult:
        result = train_unit(
            plan,
            model,
            dataset_fn,
            self.strategy,
            os.path.join(self.workdir, "checkpoints", checkpoint_name),
            init_fn=init_fn,
            checkpoint_every=self.config["checkpoint_every"],
            log_every=self.config["log_every"],
            keep_checkpoints=self.config["keep_checkpoints"],
            chief=self.chief,
            summary_dir=os.path.join(self.workdir, "logs"),
            preemption_handler=self.preemption_handler,
            print_fn=self.print,
        )
        self.print(
            f"[{plan.name}] finished at step {result.steps} (weights fingerprint "
            f"{result.fingerprint})"
        )
        self.results.append(result)
        return result

    def _info(self, name, kind, num_classes, steps, slice_=None, image_count=None, experts=None):
        return {
            "name": name,
            "kind": kind,
            "preset": self.preset,
            "resolution": self.image_size,
            "upstream_dataset": self.upstream.source.name,
            "num_classes": num_classes,
            "steps": steps,
            "slice": slice_,
            "image_count": image_count,
            "experts": experts,
            "seeds": self.seeds,
            "init_from": self.init_from,
        }

    def _save(self, model, info) -> None:
        if self.chief:
            outputs.save_model(self.workdir, model, info)
        self.done.add(info["name"])

    def _create(self, name: str, **kwargs):
        # Each model's random initialisation depends only on the seed and its name, not on which
        # models this process built before it (a resumed job skips some).
        determinism.reseed(self.seeds, name)
        with self.strategy.scope():
            model = presets.create_model(self.preset, dtype=self.dtype, **kwargs)
        set_head_bias(model, self.config["model"]["head_bias_init"])
        return model

    def baseline(self):
        """The trained baseline (from this process, or loaded from models/baseline)."""
        if self._baseline is None:
            self._baseline = outputs.load_model(self.workdir, BASELINE)
        return self._baseline

    # --- stages --------------------------------------------------------------------------------

    def run(self, stages: Sequence[str] = STAGES) -> list[UnitResult]:
        """Trains `stages` (always in the order of STAGES); returns what each trained unit reported."""
        stages = check_stages(stages)
        runners = {
            "baseline": self.run_baseline,
            "full": self.run_full,
            "adapter": self.run_adapters,
            "epn": self.run_epn,
        }
        self._hold()
        try:
            self._check_disk(stages)
            for stage in STAGES:
                if stage in stages:
                    runners[stage]()
        except (OSError, tf.errors.OpError) as e:
            if _is_disk_full(e) and not isinstance(e, DiskFullError):
                raise DiskFullError(
                    errno.ENOSPC,
                    f"the disk of work directory {self.workdir!r} is full ({type(e).__name__}); "
                    "free space and rerun the same command: it resumes from the last checkpoint",
                ) from e
            raise
        finally:
            self.release()
        return self.results

    def _check_disk(self, stages) -> None:
        """DiskFullError, before anything is trained, when the work directory's disk has less free
        space than the stages to run may write (a URL is not checked: it has no free space).

        The estimate, in float32 bytes: every unit keeps `keep_checkpoints` checkpoints (weights
        and momentum of what it trains) and writes one more before dropping the oldest; every model
        is saved once; less what the checkpoint folders of those units already hold (a rerun).
        """
        domains, done = self.upstream.domains, self.done
        full = [full_expert_name(d.name) for d in domains] if "full" in stages else []
        todo = [BASELINE] * ("baseline" in stages) + full + [ADAPTERS] * ("adapter" in stages)
        todo = [n for n in todo + [EPN] * ("epn" in stages) if n not in done]
        if not todo or atomic_files.is_url(self.workdir):
            return  # nothing to write, or no free space to ask
        with tf.device("CPU:0"):  # weights only, to count them
            model = presets.create_model(self.preset, self.upstream.source.num_labels, len(domains))
            epn = self.config["epn"]["preset"] or self.preset
            e = presets.create_model(epn, len(domains)).count_params() if epn != self.preset else 0
        adapters = sum(int(np.prod(w.shape)) for a in model.adapters for w in a.weights)
        b = model.count_params() - adapters
        # name -> (the weights of each of its units' checkpoints, of its model), momentum included
        sizes = {
            ADAPTERS: ([b + 2 * adapters] * len(domains), b + adapters),
            EPN: ([2 * (e or b)], e or b),
        }
        per_unit = [c for n in todo for c in sizes.get(n, ([2 * b], b))[0]]
        models = [sizes.get(n, ([2 * b], b))[1] for n in todo]
        checkpoints = os.path.join(self.workdir, "checkpoints")
        there = sum(work_directory.tree_bytes(os.path.join(checkpoints, n)) for n in todo)
        keep = self.config["keep_checkpoints"]
        work_directory.check_free_space(
            self.workdir,
            4 * (keep * sum(per_unit) + max(per_unit) + sum(models)) - there,
            f"{len(per_unit)} units keeping {keep} checkpoints of up to "
            f"{4 * max(per_unit) / 2**20:.1f} MiB, {len(models)} models, less "
            f"{there / 2**20:.1f} MiB of checkpoints there",
        )

    def run_baseline(self) -> None:
        """B: all upstream images, multi-label sigmoid cross-entropy over every upstream label;
        or, with `baseline.steps=0`, init_from as it is (backbone and head, nothing trained)."""
        if BASELINE in self.done:
            return
        source = self.upstream.source
        model = self._create(BASELINE, num_classes=source.num_labels)
        plan = self._plan("baseline", BASELINE)
        init = None
        if self.init_from is not None:
            # B = the source's backbone + its head, or a new head for the upstream labels (zero
            # kernel, prior bias).
            init = lambda: init_source.load(self.init_from, model, self.init_head)
        if plan.steps == 0:
            init()
            fingerprint = weights_fingerprint(model)
            self.print(
                f"[{BASELINE}] taken whole from init_from, 0 steps (fingerprint {fingerprint})"
            )
            self.results.append(UnitResult(BASELINE, 0, 0, None, None, fingerprint))
        else:
            self._train(plan, model, self._dataset_fn(plan), BASELINE, init)
        self._save(
            model,
            self._info(
                BASELINE, "baseline", source.num_labels, plan.steps, None, source.num_images
            ),
        )
        self._baseline = model

    def run_full(self) -> None:
        """One full expert per domain: B fine-tuned on the slice, the same steps for every expert."""
        for domain in self.upstream.domains:
            name = full_expert_name(domain.name)
            if name in self.done:
                continue
            num_labels = self.upstream.source.num_labels
            model = self._create(name, num_classes=num_labels)
            baseline = self.baseline()
            plan = self._plan("full", name)
            self._train(
                plan,
                model,
                self._dataset_fn(plan, indices=domain.image_indices),
                name,
                init_fn=lambda m=model, b=baseline: m.set_weights(b.get_weights()),
            )
            self._save(
                model,
                self._info(name, "full", num_labels, plan.steps, domain.name, domain.image_count),
            )

    def run_adapters(self) -> None:
        """All adapter experts in one model: B's backbone and head frozen, one expert at a time."""
        if ADAPTERS in self.done:
            return
        domains = self.upstream.domains
        num_labels = self.upstream.source.num_labels
        model = self._create(ADAPTERS, num_classes=num_labels, num_experts=len(domains))
        model.train_adapters_only()
        experts = []
        for expert_id, domain in enumerate(domains):
            name = f"adapter_{outputs.safe_name(domain.name)}"
            checkpoint_name = os.path.join(
                ADAPTERS, f"{expert_id:03d}_{outputs.safe_name(domain.name)}"
            )
            # The first expert starts from B; each next one from the model as the one before left
            # it (trained here, or restored whole from its last checkpoint by train_unit).
            init = None
            if expert_id == 0:
                init = lambda: copy_backbone(model, self.baseline(), head=True)
            plan = self._plan("adapter", name, expert_id=expert_id)
            self._train(
                plan,
                model,
                self._dataset_fn(plan, indices=domain.image_indices),
                checkpoint_name,
                init,
            )
            experts.append(
                {
                    "name": name,
                    "expert_id": expert_id,
                    "slice": domain.name,
                    "image_count": domain.image_count,
                }
            )
        steps = self.config["adapter"]["steps"]
        self._save(model, self._info(ADAPTERS, "adapter", num_labels, steps, experts=experts))

    def run_epn(self) -> None:
        """The EPN: predicts which domain(s) an upstream image belongs to."""
        if EPN in self.done:
            return
        domains = self.upstream.domains
        source = self.upstream.source
        preset = self.config["epn"]["preset"] or self.preset
        determinism.reseed(self.seeds, EPN)
        with self.strategy.scope():
            model = build_epn(preset, len(domains), dtype=self.dtype)
        set_head_bias(model, self.config["model"]["head_bias_init"])
        init = None
        if self.config["epn"]["init"] == "baseline":
            init = lambda: copy_backbone(model, self.baseline(), head=False)
        plan = self._plan("epn", EPN)
        targets = epn_targets(domains, source.num_images)
        self._train(plan, model, self._dataset_fn(plan, expert_targets=targets), EPN, init)
        info = self._info(
            EPN, "epn", len(domains), plan.steps, None, source.num_images, [d.name for d in domains]
        )
        info["preset"] = preset
        info["upstream_log_p"] = upstream_log_p(model, source, self.image_size)
        self._save(model, info)


def set_head_bias(model, value=None) -> None:
    """Sets every head bias to `value`, or to -ln(num_classes) when None.

    With a zero head and sigmoid outputs over many classes, a zero bias predicts 0.5 for every label
    and the first hundreds of steps only learn that labels are rare; starting at the prior skips that.
    """
    if model.head is None:
        return
    value = -math.log(model.num_classes) if value is None else float(value)
    model.head.bias.assign(np.full(model.head.bias.shape, value, dtype="float32"))


def prepare_job(
    config: dict,
    workdir: str,
    strategy: tf.distribute.Strategy | None = None,
    *,
    chief: bool = True,
    preemption_handler: bool = False,
    print_fn: Callable[[str], None] = print,
    source: UpstreamSource | None = None,
) -> Job:
    """Validates `config` and prepares the data and expert domains; no model is built yet.

    Every input check happens here: a ValueError or FileNotFoundError means nothing was trained,
    and a config or work directory refused here leaves nothing on disk. Also seeds the process and
    sets op determinism (`determinism.configure(config["seed"], config["deterministic"])`).
    `source` replaces `config['upstream']` with data already in memory (`data.array_source`).
    """
    config = resolve_config(config)
    check_workdir(workdir)
    workdir = atomic_files.normalize(workdir)  # file:// -> its local path
    strategy = strategy or tf.distribute.get_strategy()
    job = Job(config, workdir, strategy, chief, preemption_handler, print_fn, source)
    job.prepare()
    return job


def run_job(
    config: dict,
    workdir: str,
    strategy: tf.distribute.Strategy | None = None,
    *,
    stages: Sequence[str] = STAGES,
    chief: bool = True,
    preemption_handler: bool = False,
    print_fn: Callable[[str], None] = print,
    source: UpstreamSource | None = None,
) -> list[UnitResult]:
    """`prepare_job(...)` then `Job.run(stages)`: the whole upstream job as one call."""
    check_stages(stages)
    job = prepare_job(
        config,
        workdir,
        strategy,
        chief=chief,
        preemption_handler=preemption_handler,
        print_fn=print_fn,
        source=source,
    )
    return job.run(stages)
