"""The 7 natural VTAB-1k tasks, each following google-research/task_adaptation's
task_adaptation/data/<file>.py (cited per task); split sizes are TFDS's for the pinned versions."""

import functools

from vtab_eval.tasks import splits
from vtab_eval.tasks.base import Augmentation, registered

# A mirrored digit is not that digit (a flipped 3 is no 3); a crop of the centred digit keeps it.
DIGIT_AUGMENTATION = Augmentation(flip=False, reason="digits: a mirrored digit is not that digit")
_natural = functools.partial(registered, "natural", "vtab1k")

TASKS = (
    # caltech.py: TFDS train (3060) is split 90% train / 10% val; TFDS test is test.
    _natural("caltech101", "caltech101:3.*.*", 102, splits.val_from_train(2754), version="1.0.0"),
    # cifar.py (num_classes=100): TFDS train (50000) split 90/10; TFDS test is test.
    _natural("cifar100", "cifar100:3.*.*", 100, splits.val_from_train(45000), version="1.0.0"),
    # dtd.py: the official train/validation/test splits (fold 1).
    _natural("dtd", "dtd:3.*.*", 47, splits.official_val(), version="1.0.0"),
    # oxford_flowers102.py: the official train/validation/test splits.
    _natural(
        "oxford_flowers102", "oxford_flowers102:2.*.*", 102, splits.official_val(), version="1.0.0"
    ),
    # oxford_iiit_pet.py: TFDS train (3680) split 80/20; TFDS test is test. VTAB pinned 3.*.*,
    # which TFDS 4.9 can no longer build; 4.0.0 has the same splits in the same order
    # (docs/tasks.md, "Pets: TFDS 4.x instead of VTAB's 3.x").
    _natural(
        "oxford_iiit_pet", "oxford_iiit_pet:4.*.*", 37, splits.val_from_train(2944), version="1.0.0"
    ),
    # svhn.py: svhn_cropped, TFDS train (73257) split 90/10 ("extra" unused); TFDS test is test.
    _natural(
        "svhn",
        "svhn_cropped:3.*.*",
        10,
        splits.val_from_train(65931),
        augmentation=DIGIT_AUGMENTATION,
        version="1.0.0",
    ),
    # sun397.py (config "tfds"): the official train/validation/test splits of sun397/tfds.
    _natural("sun397", "sun397/tfds:4.*.*", 397, splits.official_val(), version="1.0.0"),
)
