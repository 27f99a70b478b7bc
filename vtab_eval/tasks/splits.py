"""The ways VTAB carves its splits out of a TFDS dataset, as pure functions of TFDS split strings.

train800 is the first 800 examples of the training source and val200 the first 200 of the
validation source; what differs is where validation and test come from. Indices are absolute,
computed from the TFDS split sizes as the google-research/task_adaptation data classes compute
them, so the strings are the ones VTAB passes to TFDS.
"""

from __future__ import annotations


def vtab_splits(train: str, val: str, val200: str, test: str, trainval: str) -> dict[str, str]:
    """Every split name of `base.SPLIT_NAMES`, given the full-data ones and val200."""
    return {
        "train800": "train[:800]",
        "val200": val200,
        "train800val200": f"train[:800]+{val200}",
        "test": test,
        "train": train,
        "val": val,
        "trainval": trainval,
    }


def official_val() -> dict:
    """The dataset's own train, validation and test splits."""
    return vtab_splits("train", "validation", "validation[:200]", "test", "train+validation")


def val_from_train(first_val: int, test: str = "test") -> dict:
    """Validation is `train[first_val:]` (`first_val`: VTAB's train size); test a TFDS split."""
    val200 = f"train[{first_val}:{first_val + 200}]"
    return vtab_splits(f"train[:{first_val}]", f"train[{first_val}:]", val200, test, "train")


def val_and_test_from_train(num_train: int, num_val: int) -> dict:
    """Train, validation and test are consecutive ranges of TFDS train."""
    first_test = num_train + num_val
    return vtab_splits(
        f"train[:{num_train}]",
        f"train[{num_train}:{first_test}]",
        f"train[{num_train}:{num_train + 200}]",
        f"train[{first_test}:]",
        f"train[:{first_test}]",
    )
