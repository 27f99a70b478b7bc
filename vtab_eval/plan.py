"""What an evaluation runs: jobs (a task with its protocol), tracks and fine-tune specs.

* A `Job` is one task with its split scheme, search, sweep, identity and aggregate (`make_jobs`
  builds them from the evaluation config).
* A `Track` is one selector on one job (or one hindsight candidate): the expert of every selection,
  then its tuning specs (`plan_tuning`) and, once tuning is recorded, its retrain specs
  (`plan_retrains`). The protocol is dynamic (tuning chooses the retrained setting), so a plan is
  built in these two steps; `vtab_eval.runner.run_tracks` drives them.
* A `Spec` is one fine-tune. Its `key` is the SHA-256 of everything that determines the result
  (`vtab_eval.identity.spec_identity`): the module's and the task's identities, the two splits, the
  full setting, the seed and the determinism flag. Equal keys are the same fine-tune: it runs once
  and every track that holds it shares the result.
"""

import dataclasses

from vtab_eval import identity, protocol, sweeps
from vtab_eval.selectors.base import candidates


@dataclasses.dataclass(frozen=True, eq=False)
class Spec:
    """One fine-tune. `task` and `handle` say how to run it; `key` says what it is.

    Attributes:
      handle: what `hub.load` takes. module_id: `identity.module_identity` of it.
      name: the module's display name (not part of the identity).
      task: a `vtab_eval.tasks.Task`; task_id: `identity.task_identity(task)`.
      train_split, eval_split: split names, e.g. "train800" and "val200".
      setting: a `vtab_eval.sweeps` setting dict. seed: the fine-tune's seed.
      deterministic: whether TF op determinism is asked for.
    """

    handle: str
    module_id: str
    name: str
    task: object
    task_id: dict
    train_split: str
    eval_split: str
    setting: dict
    seed: int
    deterministic: bool = True

    def identity(self):
        """Everything that determines the result, as a JSON-able dict."""
        return identity.spec_identity(
            self.module_id,
            self.task_id,
            self.train_split,
            self.eval_split,
            self.setting,
            self.seed,
            self.deterministic,
        )

    @property
    def key(self):
        """Hex SHA-256 of `identity()`: equal keys mean the same fine-tune."""
        cached = self.__dict__.get("_key")
        if cached is None:
            cached = identity.content_hash(self.identity())
            object.__setattr__(self, "_key", cached)
        return cached

    @property
    def is_final(self):
        """A fine-tune scored on the test split (its predictions are kept)."""
        return self.eval_split == "test"

    def describe(self):
        """One line for logs: task, module, splits, setting, seed."""
        return (
            f"{self.task.name} / {self.name}: {self.train_split} -> {self.eval_split}, "
            f"setting {self.setting['name']}, seed {self.seed}"
        )


def entry_handle(entry):
    """The handle of a pool entry (a `ModuleEntry` or a handle string)."""
    return entry if isinstance(entry, str) else entry.handle


def entry_name(entry):
    """The display name of a pool entry: its collection name, or a handle's last part."""
    return entry.rstrip("/").split("/")[-1] if isinstance(entry, str) else entry.name


def hindsight_tracks(job, pool, config):
    """One `Track` per candidate (B included), each with the candidate in every selection, as if
    a selector had picked it (the `hindsight` selector: the best on test is reported)."""
    count = config["protocol"]["num_selections"]
    return [
        Track(
            job,
            "hindsight",
            [(e, {"selected_name": e.name})] * count,
            candidate=e.name,
            seed=config["seed"],
            deterministic=config["deterministic"],
            num_retrains=config["protocol"]["num_retrains"],
        )
        for e in candidates(pool, include_baseline=True)
    ]


def make_spec(entry, job, splits, setting, seed, deterministic=True):
    """A `Spec` for a pool entry on `job`'s task; `splits` = (train split, evaluation split)."""
    return Spec(
        handle=entry_handle(entry),
        module_id=identity.module_identity(entry),
        name=entry_name(entry),
        task=job.task,
        task_id=job.task_id,
        train_split=splits[0],
        eval_split=splits[1],
        setting=dict(setting),
        seed=int(seed),
        deterministic=bool(deterministic),
    )


def unique(specs):
    """The specs with duplicate keys dropped, in first-seen order."""
    found = {}
    for spec in specs:
        found.setdefault(spec.key, spec)
    return list(found.values())


@dataclasses.dataclass
class Job:
    """One task of a run: the task, its split scheme, search ("per_selection"/"once"), sweep.

    `aggregate`: "auto"/None (the suite's) or a user's choice ("median"/"mean", folder tasks only);
    after construction it holds the kind `protocol.aggregate` uses for the task's outcomes.

    Raises:
      ValueError: an aggregate the task's suite does not allow.
    """

    task: object
    scheme: str
    search: str
    sweep: list
    task_id: dict = None
    aggregate: str = None

    def __post_init__(self):
        if self.task_id is None:
            self.task_id = identity.task_identity(self.task)
        try:
            self.aggregate = protocol.suite_aggregate(self.task.suite, self.aggregate)
        except ValueError as err:
            raise ValueError(f"--aggregate: task {self.task.name}: {err}") from None

    def splits(self):
        """[(tuning train, val)] when the sweep tunes, then (final train, test)."""
        tune, val, final, test = protocol.SPLIT_SCHEMES[self.scheme]
        return ([(tune, val)] if len(self.sweep) > 1 else []) + [(final, test)]


@dataclasses.dataclass
class Track:
    """One method on one job (or one hindsight candidate): an entry per selection.

    `entries`: per selection, (pool entry, selection dict); `seed`: the protocol's base seed;
    `tuning`, `retrains`: per selection, a list of `Spec`; `best`: per selection, the chosen
    setting's name.
    """

    job: Job
    method: str
    entries: list
    ranking: dict = None
    candidate: str = None
    seed: int = 0
    deterministic: bool = True
    num_retrains: int = 1
    tuning: list = dataclasses.field(default_factory=list)
    retrains: list = dataclasses.field(default_factory=list)
    best: list = dataclasses.field(default_factory=list)


def plan_tuning(track):
    """Fills `track.tuning`: per selection, every setting on the tuning splits (none for one
    setting; with search "once" every selection shares selection 0's)."""
    job, seed = track.job, track.seed
    protocol.check_sweep(job.sweep)
    track.tuning = []
    for i, (entry, _) in enumerate(track.entries):
        if len(job.sweep) == 1:
            track.tuning.append([])
        elif job.search == "once" and i > 0:
            track.tuning.append(track.tuning[0])
        else:
            splits = job.splits()[0]
            track.tuning.append(
                [
                    make_spec(
                        entry, job, splits, s, protocol.tuning_seed(seed, i, k), track.deterministic
                    )
                    for k, s in enumerate(job.sweep)
                ]
            )


def retrain_placeholders(track):
    """Identities of the retrains `track` will need, before tuning picks the setting (for ETAs)."""
    found = set()
    for i, (entry, _) in enumerate(track.entries):
        source = tuple(s.key for s in track.tuning[i]) or (track.job.sweep[0]["name"],)
        for j in range(track.num_retrains):
            found.add(
                identity.content_hash(
                    [
                        {"module": identity.module_identity(entry)},
                        track.job.task_id,
                        track.job.scheme,
                        source,
                        protocol.retrain_seed(track.seed, i, j),
                    ]
                )
            )
    return found


def plan_retrains(track, memo):
    """Fills `track.best` and `track.retrains` from the tuning results recorded in `memo`."""
    job = track.job
    by_name = {s["name"]: s for s in job.sweep}
    splits = job.splits()[-1]
    track.best, track.retrains = [], []
    for i, (entry, _) in enumerate(track.entries):
        scores = {s.setting["name"]: memo.get(s)["score"] for s in track.tuning[i]}
        best = protocol.best_setting(job.sweep, scores)
        track.best.append(best)
        track.retrains.append(
            [
                make_spec(
                    entry,
                    job,
                    splits,
                    by_name[best],
                    protocol.retrain_seed(track.seed, i, j),
                    track.deterministic,
                )
                for j in range(track.num_retrains)
            ]
        )


def _numbers(values, kind, flag):
    out = []
    for value in values or []:
        try:
            out.append(kind(value))
        except (TypeError, ValueError):
            what = "a number" if kind is float else "an integer"
            raise ValueError(f"{flag}: {value!r} is not {what}") from None
    return out


def task_sweep(task, scheme, finetune, seed, data_dir=None, log=None):
    """The sweep of one task from the config's "finetune" section, with the task's augmentation
    policy applied (`sweeps.for_task`), so spec keys describe what fine-tuning runs.

    Learning rates and steps, when given, make the sweep (at `batch_size` and `resolution`, 224 if
    0); else the preset `sweep`. BiT-HyperRule's schedule and resolution come from the whole final
    training split (its image count and the side of its median image area).
    """
    if finetune["learning_rates"] or finetune["steps"]:
        settings = sweeps.from_values(
            _numbers(finetune["learning_rates"], float, "--learning_rates"),
            _numbers(finetune["steps"], int, "--steps"),
            finetune["batch_size"],
            finetune["resolution"] or 224,
        )
        return sweeps.for_task(settings, task)
    dataset_size, image_size = 1000, 224
    if finetune["sweep"] == "bit_hyperrule":
        split = protocol.SPLIT_SCHEMES[scheme][2]
        stats = sweeps.split_statistics(task, split, data_dir, log)
        dataset_size, image_size = stats["num_images"], stats["image_side"]
    settings = sweeps.get_sweep(
        finetune["sweep"],
        dataset_size=dataset_size,
        image_size=image_size,
        resolution=finetune["resolution"] or None,
        num_settings=finetune["random_search_size"],
        seed=seed,
    )
    return sweeps.for_task(settings, task)
