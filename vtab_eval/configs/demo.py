"""The offline demo's evaluation: every selector on the four demo tasks (`python -m vtab_eval.demo`).

Command (the demo sets the collection, tasks and output folder under its work directory):
  python -m vtab_eval.demo --workdir=runs/demo            # variant :quick with --quick

What runs: the selectors baseline, random, label_matching, domain_prediction and knn, and
hindsight (every candidate fine-tuned, the best reported), ranking B with the 12 experts at 32 px;
one setting (`--sweep=demo`: lr 0.03, 50 steps of 32 images, cosine; `:quick`: 20 steps), so each
choice trains once on train800val200 and is tested: one outcome per cell (n = 1).

Expected runtime and result: README.md's demo section and docs/results/, measured by the demo
itself with the machine and load recorded.
"""

_SELECTORS = ("baseline", "random", "label_matching", "domain_prediction", "knn", "hindsight")


def get_config(arg=None):
    if arg not in (None, "", "quick"):
        raise ValueError(f"demo: unknown variant {arg!r}; expected none or 'quick'")
    return {
        "selection": {"selectors": list(_SELECTORS), "resolution": 32},
        "finetune": {"sweep": "demo_quick" if arg == "quick" else "demo"},
    }
