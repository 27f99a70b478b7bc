"""The paper's VTAB-1k protocol (Puigcerver et al., ICLR 2021, tables 1 and 2).

Command:
  python -m vtab_eval.run --config=vtab1k --collection=C --output_dir=OUT

What runs: the 19 VTAB-1k tasks; kNN, random and the baseline B side by side; per task and
selector 10 selections, each tuned over the 4 settings of `vtab_lightweight` (train800 -> val200)
and retrained 3 times with the best (train800val200 -> test): 30 outcomes, reported as their
median with a bootstrap interval. Identical fine-tunes run once (kNN's 10 selections pick the same
expert, so they share their tuning). Variant `:quick`: one task, the quick sweep, 2 selections of
1 retrain (a smoke test of the configuration, not of accuracy).

Expected runtime: up to 19 tasks x 3 selectors x (40 tuning + 30 final) fine-tunes at 224 px,
fewer after sharing; at about half an hour per fine-tune (issue 23's estimate), days on one GPU.
`--dry_run` prints the plan with a time measured on this machine.

Expected result: the paper reports kNN-selected experts ahead of B and of random selection on the
VTAB-1k mean; this package has not run the full protocol (no GPU in its CI): no number is claimed.
"""


def get_config(arg=None):
    config = {
        "tasks": ["vtab1k"],
        "selection": {"selectors": ["knn", "random", "baseline"]},
        "finetune": {"sweep": "vtab_lightweight"},
        "protocol": {"num_selections": 10, "num_retrains": 3, "search": "per_selection"},
    }
    if arg == "quick":
        config["tasks"] = ["cifar100"]
        config["finetune"]["sweep"] = "quick"
        config["protocol"].update(num_selections=2, num_retrains=1)
    elif arg:
        raise ValueError(f"vtab1k: unknown variant {arg!r}; expected none or 'quick'")
    return config
