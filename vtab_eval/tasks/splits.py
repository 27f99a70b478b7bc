"""The three ways VTAB carves its splits out of a TFDS dataset, as pure functions.

In every case train800 is the first 800 examples of the training split and val200 is the
first 200 examples of the validation split, so the 1000 VTAB-1k examples are fixed for a
given dataset version. What differs is where "validation" and "test" come from:

* the dataset ships a validation split             -> `official_val`
* validation is the tail of the TFDS train split   -> `val_from_train`
* validation and test are both cut from TFDS train -> `val_and_test_from_train`

Indices are absolute, computed from the dataset's TFDS split sizes exactly as the
google-research/task_adaptation data classes compute them, so the strings below are the
ones VTAB passes to TFDS.
"""

from __future__ import annotations


def _vtab_1k(train: str, val: str, test: str) -> dict[str, str]:
    return {
        "train800": f"{train}[:800]",
        "val200": f"{val}[:200]",
        "train800val200": f"{train}[:800]+{val}[:200]",
        "test": test,
    }


def official_val(train: str = "train", val: str = "validation", test: str = "test") -> dict:
    """Splits for a dataset with its own train, validation and test splits."""
    return {
        **_vtab_1k(train, val, test),
        "train": train,
        "val": val,
        "trainval": f"{train}+{val}",
    }


def val_from_train(first_val: int, test: str = "test", source: str = "train") -> dict:
    """Splits where validation is `source[first_val:]` and test is a separate TFDS split.

    Args:
      first_val: index of the first validation example, i.e. the size of VTAB's "train".
      test: the TFDS split used as test.
      source: the TFDS split that is divided into train and validation.
    """
    val200 = f"{source}[{first_val}:{first_val + 200}]"
    return {
        "train800": f"{source}[:800]",
        "val200": val200,
        "train800val200": f"{source}[:800]+{val200}",
        "test": test,
        "train": f"{source}[:{first_val}]",
        "val": f"{source}[{first_val}:]",
        "trainval": source,
    }


def val_and_test_from_train(num_train: int, num_val: int, source: str = "train") -> dict:
    """Splits where train, validation and test are consecutive ranges of one TFDS split."""
    first_test = num_train + num_val
    val200 = f"{source}[{num_train}:{num_train + 200}]"
    return {
        "train800": f"{source}[:800]",
        "val200": val200,
        "train800val200": f"{source}[:800]+{val200}",
        "test": f"{source}[{first_test}:]",
        "train": f"{source}[:{num_train}]",
        "val": f"{source}[{num_train}:{first_test}]",
        "trainval": f"{source}[:{first_test}]",
    }
