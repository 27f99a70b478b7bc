"""The paper's table 3 protocol (Puigcerver et al., ICLR 2021): full datasets, one random search.

Command:
  python -m vtab_eval.run --config=table3 --collection=C --output_dir=OUT

What runs: the table-3 tasks (`python -m vtab_eval.list_tasks --suite=table3`) on their full splits
(train -> val for the search, trainval -> test); kNN's pick; one random search over 36 settings
(`--sweep=random_search`: the space is this package's own, documented in `vtab_eval.sweeps`; the
paper gives only the count), the best on validation retrained 30 times; the mean of the 30 outcomes
with a bootstrap interval.

Expected runtime: per task 36 search + 30 final fine-tunes of 2,500-20,000 steps at batch 512 and
224 px: GPU-days per task. `--dry_run` prints the plan with a time measured on this machine.

Expected result: the paper's table 3 numbers are not reproduced by this package's CI (no GPU); no
number is claimed here. Its six tasks include FGVC Aircraft, read from the official archive the user
extracts into --data_dir (docs/tasks.md, "FGVC Aircraft").
"""


def get_config(arg=None):
    if arg:
        raise ValueError(f"table3: unknown variant {arg!r}; it has none")
    return {
        "tasks": ["table3"],
        "selection": {"selectors": ["knn"]},
        "finetune": {"sweep": "random_search", "random_search_size": 36},
        "protocol": {"num_selections": 1, "num_retrains": 30, "search": "once", "scheme": "full"},
    }
