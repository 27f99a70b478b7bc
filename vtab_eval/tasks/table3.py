"""The natural full-data transfer datasets of the paper's Table 3 that TFDS provides.

Table 3 fine-tunes on the whole training set ("trainval") and reports test accuracy, with
Pets scored by mean per-class accuracy. FGVC Aircraft is not in TFDS and is left out.
The 1k splits are defined too, following the VTAB data class of each dataset
(google-research/task_adaptation, task_adaptation/data/<file>.py, cited per task).
"""

from vtab_eval.tasks import splits
from vtab_eval.tasks.base import TfdsTask


def _table3(name, tfds_name, num_classes, task_splits, metric="accuracy", *, version):
    return TfdsTask(
        name=name,
        version=version,
        tfds_name=tfds_name,
        num_classes=num_classes,
        group="natural",
        suite="table3",
        splits=task_splits,
        metric=metric,
    )


TASKS = (
    # cifar.py (num_classes=10): TFDS train (50000) split 90/10; TFDS test is test.
    _table3(
        "cifar10", "cifar10:3.*.*", 10, splits.val_from_train(50000 * 90 // 100), version="1.0.0"
    ),
    # food101.py: TFDS train (75750) split 90/10; TFDS "validation" is the test split.
    _table3(
        "food101",
        "food101:2.*.*",
        101,
        splits.val_from_train(75750 * 90 // 100, test="validation"),
        version="1.0.0",
    ),
    # cars.py: TFDS train (8144) split 80/20; TFDS test is test.
    _table3(
        "cars196", "cars196:2.*.*", 196, splits.val_from_train(8144 * 80 // 100), version="1.0.0"
    ),
    # cub.py: TFDS train (5994) split by "train[:90%]", which TFDS rounds to 5395. VTAB pinned
    # 0.1.1, which TFDS 4.9 no longer builds; 0.2.0 has the same 5994/5794 split sizes.
    _table3(
        "caltech_birds2011",
        "caltech_birds2011:0.2.*",
        200,
        splits.val_from_train(round(5994 * 90 / 100)),
        version="1.0.0",
    ),
    # oxford_iiit_pet.py, as the VTAB task, but scored by mean per-class accuracy.
    _table3(
        "oxford_iiit_pet_mean_per_class",
        "oxford_iiit_pet:4.*.*",
        37,
        splits.val_from_train(3680 * 80 // 100),
        metric="mean_per_class_accuracy",
        version="1.0.0",
    ),
)
