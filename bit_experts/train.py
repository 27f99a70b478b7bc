"""Upstream training entry point: `python -m bit_experts.train --config=... --workdir=...`.

Trains the baseline, the full experts, the adapter experts and the EPN of one config (docs/training.md).
This module only turns flags into arguments for `bit_experts.training.job.run_job`.
"""

from absl import app, flags, logging

from bit_experts import cli
from bit_experts.training.config import STAGES
from bit_experts.training.strategies import STRATEGIES

_CONFIG = flags.DEFINE_string(
    "config", None, "Config: a .py file or a bit_experts/configs name, optionally ':arg'."
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Work directory (outputs, checkpoints, logs).")
_STRATEGY = flags.DEFINE_enum("strategy", "default", STRATEGIES, "tf.distribute strategy.")
_TPU = flags.DEFINE_string("tpu", "", "TPUClusterResolver address for --strategy=tpu.")
_STAGES = flags.DEFINE_list("stages", list(STAGES), "Stages to run, in the order of STAGES.")
_SET = flags.DEFINE_multi_string("set", [], "Config override key.sub=value (repeatable).")
_CONTROL = flags.DEFINE_bool(
    "control_experts", None, "Train random control experts (sets experts.control)."
)
_SEED = flags.DEFINE_integer(
    "seed", None, "Seed of data order, augmentation and initialisation (sets config 'seed')."
)
_DETERMINISTIC = flags.DEFINE_bool(
    "deterministic",
    None,
    "Op determinism + seeded initialisation (config 'deterministic', on by default); "
    "--nodeterministic turns both off.",
)
_INIT_FROM = flags.DEFINE_string(
    "init_from",
    None,
    "Start B from a BiT .npz, an exported module folder or a models/<name> folder "
    "(sets config 'init_from').",
)
_CPU_DEVICES = flags.DEFINE_integer(
    "cpu_devices",
    0,
    "Split the CPU into this many logical devices (0: leave as is).",
    lower_bound=0,
)
_PREEMPTION = flags.DEFINE_bool(
    "preemption_handler",
    True,
    "Use PreemptionCheckpointHandler under the tpu and multi_worker strategies.",
)

flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)  # Progress lines are printed; INFO logs are noise.
    from bit_experts.config_schema import apply_overrides
    from bit_experts.locks import LockHeldError
    from bit_experts.training import strategies
    from bit_experts.training.config import check_stages, load_config, resolve_config
    from bit_experts.training.work_directory import DiskFullError, check_workdir

    with cli.one_line_errors("bit_experts.train", (ValueError, FileNotFoundError, LockHeldError)):
        # Every check on the inputs happens here, before TensorFlow is imported (seconds), any
        # model is built or anything is written.
        stages = check_stages(_STAGES.value)
        config = load_config(_CONFIG.value)
        overrides = list(_SET.value)
        if _CONTROL.value is not None:
            overrides.append(f"experts.control={_CONTROL.value}")
        if _SEED.value is not None:
            overrides.append(f"seed={_SEED.value}")
        if _DETERMINISTIC.value is not None:
            overrides.append(f"deterministic={_DETERMINISTIC.value}")
        config = apply_overrides(config, overrides)
        if _INIT_FROM.value is not None:
            config["init_from"] = _INIT_FROM.value
        config = resolve_config(config)
        check_workdir(_WORKDIR.value)
        from bit_experts.training.job import prepare_job  # TensorFlow, Keras and the data

        if _CPU_DEVICES.value:  # before TensorFlow starts its devices
            strategies.configure_cpu_devices(_CPU_DEVICES.value)
        strategy = strategies.make_strategy(_STRATEGY.value, tpu=_TPU.value)
        job = prepare_job(
            config,
            _WORKDIR.value,
            strategy,
            chief=strategies.is_chief(strategy),
            preemption_handler=_PREEMPTION.value and _STRATEGY.value in ("tpu", "multi_worker"),
            print_fn=lambda line: print(line, flush=True),
        )
    with cli.one_line_errors("bit_experts.train", DiskFullError, line=lambda e: e.strerror):
        job.run(stages)


if __name__ == "__main__":
    cli.quiet_logs()  # TF's INFO logs off unless --verbosity is given
    app.run(main)
