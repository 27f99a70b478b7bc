"""What an evaluation runs. A `Track` is one selector on one `Job` (a task with its protocol):
the expert of every selection (a probe policy's from its recorded probes, `choose_probed`), its
tuning specs (`plan_tuning`) and, from the recorded tuning, its retrain specs (`plan_retrains`). A
`Spec` is one fine-tune; equal keys are the same fine-tune, run once and shared by every track that
holds it. `cost`: what a pick spent, in forward passes, fine-tuning steps and fine-tunes.
"""

import dataclasses
import functools

from vtab_eval import identity, protocol, selectors, sweeps
from vtab_eval.selectors.base import candidates, entry_handle, entry_name

# A training image costs its forward pass and a backward pass of about twice that (`cost`).
TRAIN_PASSES = 3


@dataclasses.dataclass(frozen=True, eq=False)
class Spec:
    """One fine-tune of module `handle` (`module_id`: its identity; `name`: its display name) on
    `task` (`task_id`), trained on `train_split` and scored on `eval_split` with a sweep setting."""

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

    @functools.cached_property
    def key(self):
        """Hex SHA-256 of `identity.spec_identity`: equal keys mean the same fine-tune."""
        return identity.content_hash(identity.spec_identity(self))

    @property
    def is_final(self):
        """A fine-tune scored on the test split (its predictions are kept)."""
        return self.eval_split == "test"


def make_spec(entry, job, splits, setting, seed, deterministic=True):
    """A `Spec` for a pool entry on `job`'s task; `splits` = (train split, evaluation split)."""
    return Spec(
        entry_handle(entry),
        identity.module_identity(entry),
        entry_name(entry),
        job.task,
        job.task_id,
        *splits,
        dict(setting),
        int(seed),
        bool(deterministic),
    )


def unique(specs):
    """The specs with duplicate keys dropped, in first-seen order."""
    found = {}
    for spec in specs:
        found.setdefault(spec.key, spec)
    return list(found.values())


@dataclasses.dataclass
class Job:
    """One task of a run: its split scheme, search ("per_selection"/"once"), sweep, aggregate
    ("auto"/None: the suite's) and the sweep's preset (`sweep_preset`; None: not known). Raises
    ValueError: a bad sweep, or an aggregate the suite refuses."""

    task: object
    scheme: str
    search: str
    sweep: list
    task_id: dict = None
    aggregate: str = None
    preset: str = None

    def __post_init__(self):
        names = [s["name"] for s in self.sweep]
        if len(set(names)) != len(names):
            raise ValueError(f"sweep setting names must be unique, got {names}")
        if self.task_id is None:  # what identifies the task's examples
            self.task_id = {"fingerprint": self.task.fingerprint()}
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
    """One method on one job (or hindsight candidate): per selection, `entries` (pool entry,
    selection dict), `tuning` and `retrains` (lists of `Spec`) and `best` (a setting's name); a
    probe policy's track also has `finalists` (pool entries) and per selection their `probes`."""

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
    finalists: list = dataclasses.field(default_factory=list)
    probes: list = dataclasses.field(default_factory=list)


def make_track(config, job, method, entries, **extra):
    """A `Track` with the seed, determinism and retrain count of an evaluation config."""
    return Track(
        job,
        method,
        entries,
        seed=config["seed"],
        deterministic=config["deterministic"],
        num_retrains=config["protocol"]["num_retrains"],
        **extra,
    )


def hindsight_tracks(job, pool, config):
    """One `Track` per candidate (B included), each with the candidate in every selection, as if
    a selector had picked it (the `hindsight` selector: the best on test is reported)."""
    count = config["protocol"]["num_selections"]
    return [
        make_track(
            config, job, "hindsight", [(e, {"selected_name": e.name})] * count, candidate=e.name
        )
        for e in candidates(pool, include_baseline=True)
    ]


def probe_specs(policy, job, finalists, seed, selection=0, deterministic=True):
    """The probes of `finalists` (pool entries) by a probe policy (`selectors.policies`) in
    selection `selection` of a run with base seed `seed`: each on the tuning splits (train800 ->
    val200) at `policy.probe_setting(job.sweep)`, seeded by `protocol.probe_seed`."""
    splits = protocol.SPLIT_SCHEMES[job.scheme][:2]
    setting, seed = policy.probe_setting(job.sweep), protocol.probe_seed(seed, selection)
    return [make_spec(e, job, splits, setting, seed, deterministic) for e in finalists]


def probe_track(config, job, method, finalists, ranking=None):
    """The `Track` of probe policy `method` with its `finalists` and, per selection, their probe
    specs; its entries come from the recorded probes (`choose_probed`)."""
    policy, count = selectors.get(method), config["protocol"]["num_selections"]
    track = make_track(config, job, method, [], ranking=ranking, finalists=list(finalists))
    seed, deterministic = track.seed, track.deterministic
    track.probes = [
        probe_specs(policy, job, finalists, seed, i, deterministic) for i in range(count)
    ]
    return track


def choose_probed(track, memo):
    """Sets a probe policy's `track.entries`: per selection the finalist whose probe scored best
    (`policy.choose`), with every finalist's probe in its selection dict."""
    policy, track.entries = selectors.get(track.method), []
    for specs in track.probes:
        scores = {s.handle: memo.get(s)["score"] for s in specs}
        chosen = policy.choose(scores)
        entry = next(e for e in track.finalists if entry_handle(e) == chosen.selected)
        probes = [{"name": s.name, "score": scores[s.handle], "key": s.key} for s in specs]
        extra = {"selected_name": entry_name(entry), "seed": specs[0].seed}
        extra.update(score=scores[chosen.selected], tie_note=chosen.tie_note, probes=probes)
        track.entries.append((entry, extra))


def cost(forward_passes, settings, unit):
    """What a choice spent: `forward_passes` (images x modules embedded), the `finetune_steps`
    and `finetune_images` (steps x batch) of fine-tunes at `settings` (a setting dict each), and
    all of it in `fine_tunes` of the setting `unit`, a training image counted as TRAIN_PASSES
    forward passes."""
    steps = sum(int(s["steps"]) for s in settings)
    images = sum(int(s["steps"]) * int(s["batch_size"]) for s in settings)
    one = TRAIN_PASSES * int(unit["steps"]) * int(unit["batch_size"])
    spent = int(forward_passes) + TRAIN_PASSES * images
    return {
        "forward_passes": int(forward_passes),
        "finetune_steps": steps,
        "finetune_images": images,
        "fine_tunes": spent / one,
    }


def pick_cost(tracks):
    """`cost` of one selection of a method's tracks on a job, in fine-tunes of its sweep's first
    setting: its ranking's forward passes, and the fine-tunes the choice needs besides the pick's
    own (a probe policy's probes; hindsight: every candidate's tuning and first retrain)."""
    first = tracks[0]
    forward = (first.ranking or {}).get("forward_passes", 0)
    specs = first.probes[0] if first.probes else []
    if selectors.get(first.method).kind == "every":
        specs = [s for t in tracks for s in t.tuning[0] + (t.retrains[0][:1] if t.retrains else [])]
    return cost(forward, [s.setting for s in specs], first.job.sweep[0])


def plan_tuning(track):
    """Fills `track.tuning`: per selection, every setting on the tuning splits (none for one
    setting; with search "once" every selection shares selection 0's)."""
    job, seed = track.job, track.seed
    track.tuning = []
    for i, (entry, _) in enumerate(track.entries):
        if len(job.sweep) == 1:
            specs = []
        elif job.search == "once" and i > 0:
            specs = track.tuning[0]
        else:
            splits = job.splits()[0]
            specs = [
                make_spec(
                    entry, job, splits, s, protocol.tuning_seed(seed, i, k), track.deterministic
                )
                for k, s in enumerate(job.sweep)
            ]
        track.tuning.append(specs)


def retrain_placeholders(track):
    """Identities of the retrains `track` will need, before tuning picks the setting (for ETAs)."""
    job, found = track.job, set()
    for i, (entry, _) in enumerate(track.entries):
        source = tuple(s.key for s in track.tuning[i]) or (job.sweep[0]["name"],)
        module = {"module": identity.module_identity(entry)}
        for j in range(track.num_retrains):
            seed = protocol.retrain_seed(track.seed, i, j)
            found.add(identity.content_hash([module, job.task_id, job.scheme, source, seed]))
    return found


def plan_retrains(track, memo):
    """Fills `track.best` and `track.retrains` from the tuning results recorded in `memo`."""
    job = track.job
    by_name = {s["name"]: s for s in job.sweep}
    track.best, track.retrains = [], []
    for i, (entry, _) in enumerate(track.entries):
        scores = {s.setting["name"]: memo.get(s)["score"] for s in track.tuning[i]}
        best = by_name[protocol.best_setting(job.sweep, scores)]
        seeds = [protocol.retrain_seed(track.seed, i, j) for j in range(track.num_retrains)]
        splits = job.splits()[-1]
        track.best.append(best["name"])
        track.retrains.append(
            [make_spec(entry, job, splits, best, seed, track.deterministic) for seed in seeds]
        )


def sweep_preset(task, finetune):
    """The preset the config's "finetune" section gives `task`: "flags" for a sweep given by
    learning rates and steps, the task's suite's for "auto" (`protocol.default_sweep`), else its."""
    if finetune["learning_rates"] or finetune["steps"]:
        return "flags"
    return protocol.default_sweep(task) if finetune["sweep"] == "auto" else finetune["sweep"]


def training_images(task, scheme):
    """Images in the smaller training split of `scheme`: counted for folder tasks, VTAB-1k's 800
    (train800) for registered tasks, None (not known without reading) for their full splits."""
    tune, _, final, _ = protocol.SPLIT_SCHEMES[scheme]
    sizes = [task.split_size(tune), task.split_size(final)]
    if None not in sizes:
        return min(sizes)
    return 800 if scheme == "vtab1k" else None


def task_sweep(task, scheme, finetune, seed, data_dir=None, log=None, module_side=224):
    """The sweep of one task from the config's "finetune" section: its learning rates x steps when
    given (at its resolution, else `module_side`, the modules' (`checks.module_side`); at its batch
    size, else `sweeps.fitting_batch`), else its preset (`sweep_preset`; BiT-HyperRule's from the
    whole final training split's image count and median image side), with the task's augmentation
    policy applied (`sweeps.for_task`)."""
    preset = sweep_preset(task, finetune)
    if preset == "flags":
        side = finetune["resolution"] or module_side
        batch = finetune["batch_size"] or sweeps.fitting_batch(side, training_images(task, scheme))
        settings = sweeps.from_values(finetune["learning_rates"], finetune["steps"], batch, side)
        return sweeps.for_task(settings, task)
    stats = {"num_images": 1000, "image_side": 224}
    if preset == "bit_hyperrule":
        final = protocol.SPLIT_SCHEMES[scheme][2]
        stats = sweeps.split_statistics(task, final, data_dir, log)
    settings = sweeps.get_sweep(
        preset,
        dataset_size=stats["num_images"],
        image_size=stats["image_side"],
        resolution=finetune["resolution"] or None,
        num_settings=finetune["random_search_size"],
        seed=seed,
    )
    return sweeps.for_task(settings, task)
