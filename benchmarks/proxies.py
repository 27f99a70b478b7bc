"""Benchmark: time of every selection proxy on cached features, side by side with `knn`.

    taskset -c 0 python -m benchmarks.proxies                  # N = 1000, d = 2048, C = 10; ~1 min
    python -m benchmarks.proxies --n 1000 --dim 2048 --classes 10 --repeats 5

One expert's features of one task as the feature cache holds them: float32 [N, d], non-negative
(like pooled ReLU features) around C class centres. Each repeat runs every proxy once, in an order
rotated between repeats, in one process after one untimed warm-up call each (TensorFlow traces
`knn`'s search on its first call). The table gives the median wall time over repeats, its range and
the ratio to `knn`'s median. Rows:

  knn          selectors.get("knn").score_features     leave-one-out 1-NN hits (TensorFlow)
  logme        proxies.logme_score                      LogME
  linear_loo   proxies.linear_loo_correct               exact leave-one-out ridge, 19 penalties
  ncm          proxies.ncm_loo_correct                  leave-one-out nearest class mean
  gbc          proxies.gbc_score                        GBC on 64 principal components
  interval     confidence.accuracy_interval             BCa interval of one expert's hits (9999)
  paired       confidence.paired_win_probability        exact paired bootstrap, one pair

Run it pinned (`taskset -c 0`, or `-c 0,1`) so that TensorFlow's and numpy's thread pools get
the same cores; the machine line records the load average at the start.
"""

import argparse
import time

import numpy as np

from benchmarks import _common


def make_features(n, dim, num_classes, seed=0):
    """(features float32 [n, dim] >= 0, labels int64 [n]) drawn around class centres."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, size=n)
    centres = rng.standard_normal((num_classes, dim), dtype=np.float32)
    x = 0.25 * centres[labels] + rng.standard_normal((n, dim), dtype=np.float32)
    return np.maximum(x, 0.0), labels.astype(np.int64)


def proxy_calls(features, labels):
    """name -> zero-argument callable running that proxy once."""
    from vtab_eval import confidence, proxies, selectors

    knn = selectors.get("knn").score_features
    hits = knn({"x": features}, labels).correct["x"]
    other = np.roll(hits, 1)
    return {
        "knn": lambda: knn({"x": features}, labels),
        "logme": lambda: proxies.logme_score(features, labels),
        "linear_loo": lambda: proxies.linear_loo_correct(features, labels),
        "ncm": lambda: proxies.ncm_loo_correct(features, labels),
        "gbc": lambda: proxies.gbc_score(features, labels),
        "interval": lambda: confidence.accuracy_interval(hits),
        "paired": lambda: confidence.paired_win_probability(hits, other),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    machine = _common.machine_line()
    features, labels = make_features(args.n, args.dim, args.classes)
    calls = proxy_calls(features, labels)
    names = list(calls)
    for call in calls.values():
        call()  # warm-up: tracing, BLAS thread start-up
    times = {name: [] for name in names}
    for repeat in range(args.repeats):
        order = names[repeat % len(names) :] + names[: repeat % len(names)]
        for name in order:
            start = time.perf_counter()
            calls[name]()
            times[name].append(time.perf_counter() - start)
    knn_median = _common.median(times["knn"])
    rows = [
        [
            name,
            _common.median(times[name]),
            f"{min(times[name]):.3g}-{max(times[name]):.3g}",
            _common.median(times[name]) / knn_median,
        ]
        for name in names
    ]
    print(f"N = {args.n}, d = {args.dim}, C = {args.classes}, {args.repeats} repeats; {machine}\n")
    print(_common.format_table(["proxy", "median s", "range s", "x knn"], rows))


if __name__ == "__main__":
    main()
