"""The CPU setting: small sweeps at 32 px for image folders and the offline world's tasks.

Command:
  python -m vtab_eval.run --config=local --collection=C --tasks=folder:PATH --output_dir=OUT

What runs: kNN, random and the baseline B; one selection, 3 retrains; the `local` sweep (learning
rates 0.03 and 0.01, 200 steps of 64 images, cosine decay, flips, 32 px) tuned on train800 ->
val200 and retrained on train800val200 -> test; the median of the 3 outcomes per task.

Expected runtime on 2 CPU cores: about 35-50 s per fine-tune of an r14_micro/r14_tiny module
(`vtab_eval.sweeps.local`), 2 tuning + 3 final fine-tunes per selected expert and task.

Expected result: depends on the collection and task; the demo (`--config=demo`) is the measured
instance.
"""


def get_config(arg=None):
    if arg:
        raise ValueError(f"local: unknown variant {arg!r}; it has none")
    return {
        "selection": {"selectors": ["knn", "random", "baseline"]},
        "finetune": {"sweep": "local"},
        "protocol": {"num_selections": 1, "num_retrains": 3},
    }
