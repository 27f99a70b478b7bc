"""The 7 natural VTAB-1k tasks.

Each definition follows the matching google-research/task_adaptation file
(task_adaptation/data/<file>.py, cited per task); split sizes are the TFDS ones for the
pinned versions.
"""

from vtab_eval.tasks import splits
from vtab_eval.tasks.base import FLIP_AND_CROP, Augmentation, TfdsTask

# A mirrored digit is not that digit (a flipped 3 is no 3); a crop of the centred digit keeps it.
DIGIT_AUGMENTATION = Augmentation(flip=False, reason="digits: a mirrored digit is not that digit")


def _natural(name, tfds_name, num_classes, task_splits, augmentation=FLIP_AND_CROP, *, version):
    return TfdsTask(
        name=name,
        version=version,
        tfds_name=tfds_name,
        num_classes=num_classes,
        group="natural",
        suite="vtab1k",
        splits=task_splits,
        augmentation=augmentation,
    )


TASKS = (
    # caltech.py: TFDS train (3060) is split 90% train / 10% val; TFDS test is test.
    _natural(
        "caltech101",
        "caltech101:3.*.*",
        102,
        splits.val_from_train(3060 * 90 // 100),
        version="1.0.0",
    ),
    # cifar.py (num_classes=100): TFDS train (50000) split 90/10; TFDS test is test.
    _natural(
        "cifar100", "cifar100:3.*.*", 100, splits.val_from_train(50000 * 90 // 100), version="1.0.0"
    ),
    # dtd.py: the official train/validation/test splits (fold 1).
    _natural("dtd", "dtd:3.*.*", 47, splits.official_val(), version="1.0.0"),
    # oxford_flowers102.py: the official train/validation/test splits.
    _natural(
        "oxford_flowers102", "oxford_flowers102:2.*.*", 102, splits.official_val(), version="1.0.0"
    ),
    # oxford_iiit_pet.py: TFDS train (3680) split 80/20; TFDS test is test. VTAB pinned 3.*.*,
    # which TFDS 4.9 can no longer build; 4.0.0 has the same 3680/3669 split sizes.
    _natural(
        "oxford_iiit_pet",
        "oxford_iiit_pet:4.*.*",
        37,
        splits.val_from_train(3680 * 80 // 100),
        version="1.0.0",
    ),
    # svhn.py: svhn_cropped, TFDS train (73257) split 90/10 ("extra" unused); TFDS test is test.
    _natural(
        "svhn",
        "svhn_cropped:3.*.*",
        10,
        splits.val_from_train(73257 * 90 // 100),
        DIGIT_AUGMENTATION,
        version="1.0.0",
    ),
    # sun397.py (config "tfds"): the official train/validation/test splits of sun397/tfds.
    _natural("sun397", "sun397/tfds:4.*.*", 397, splits.official_val(), version="1.0.0"),
)
