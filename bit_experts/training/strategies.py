"""`--strategy` names -> tf.distribute strategies, and logical CPU devices for local tests."""

from __future__ import annotations

import json
import os

from bit_experts import lazy_api

tf = lazy_api.module("tensorflow")  # imported on first use: commands check flags first


STRATEGIES = ("default", "one_device", "mirrored", "multi_worker", "tpu")


def configure_cpu_devices(count: int) -> None:
    """Splits the CPU into `count` logical devices (for MirroredStrategy on a laptop or in tests).

    Must run before TensorFlow initialises its devices; raises RuntimeError otherwise.
    """
    if count < 1:
        raise ValueError(f"cpu_devices must be >= 1, got {count}")
    cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(
        cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(count)]
    )


def make_strategy(name: str, tpu: str = "") -> tf.distribute.Strategy:
    """Builds the strategy `name` (one of STRATEGIES).

    `tpu` is the TPUClusterResolver address (`""` for a TPU VM's local TPU). `multi_worker` reads the
    cluster from the TF_CONFIG environment variable.
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "one_device":
        gpus = tf.config.list_logical_devices("GPU")
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
        return tf.distribute.MirroredStrategy(devices)
    if name == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError("--strategy=multi_worker needs the TF_CONFIG environment variable")
        try:
            json.loads(os.environ["TF_CONFIG"])
        except json.JSONDecodeError as e:
            raise ValueError(f"TF_CONFIG is not valid JSON: {e}") from None
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    raise ValueError(f"unknown strategy {name!r}; expected one of {STRATEGIES}")


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """True unless this is a non-chief worker of a multi-worker job (which must not write outputs)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    if task_type in (None, "chief"):
        return True
    has_chief = "chief" in (resolver.cluster_spec().as_dict() or {})
    return task_type == "worker" and task_id == 0 and not has_chief
