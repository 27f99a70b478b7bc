"""The 4 specialized VTAB-1k tasks (remote sensing and medical images), each following
google-research/task_adaptation's task_adaptation/data/<file>.py (cited per task)."""

import functools

from vtab_eval.tasks import splits
from vtab_eval.tasks.base import registered

_specialized = functools.partial(registered, "specialized", "vtab1k")

TASKS = (
    # patch_camelyon.py: the official train/validation/test splits.
    _specialized(
        "patch_camelyon", "patch_camelyon:2.*.*", 2, splits.official_val(), version="1.0.0"
    ),
    # eurosat.py (subset "rgb"): TFDS has only train (27000): 60% train, 20% val, 20% test.
    _specialized(
        "eurosat",
        "eurosat/rgb:2.*.*",
        10,
        splits.val_and_test_from_train(16200, 5400),
        version="1.0.0",
    ),
    # resisc45.py: TFDS has only train (31500): 60% train, 20% val, 20% test.
    _specialized(
        "resisc45",
        "resisc45:3.*.*",
        45,
        splits.val_and_test_from_train(18900, 6300),
        version="1.0.0",
    ),
    # diabetic_retinopathy.py (config "btgraham-300"): official train/validation/test splits.
    _specialized(
        "diabetic_retinopathy",
        "diabetic_retinopathy_detection/btgraham-300:3.*.*",
        5,
        splits.official_val(),
        version="1.0.0",
    ),
)
