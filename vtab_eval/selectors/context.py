"""What a selector may read about a task and a pool, computed on first use (`Context`)."""

import numpy as np

from vtab_eval import embed
from vtab_eval.selectors import base


class Context:
    """Lazy access to the task as the experts, the EPN and the baseline classifier see it.

    `pool` is the collection, `experts` the entries to score (collection order), `options` the
    selection options (`ranking.DEFAULTS`; `seed` is theirs), `label_priors` expert name -> [L]
    prior or None, `where` the cache_dir, data_dir and log of `embed.embed_pool`, through which
    features and classifier outputs go (the feature cache). `record` keeps "num_images",
    "left_out", "cache" and "forward_passes" (images x modules embedded, from the cache or not)
    for the ranking dict.
    """

    def __init__(self, pool, task, experts, options, label_priors=None, **where):
        self.pool, self.task, self.experts, self.options = pool, task, experts, options
        self.seed, self.label_priors, self._where = options["seed"], label_priors, where
        self._features = None
        self.record = {}

    def handles(self):
        """The experts' handles, in collection order."""
        return [base.entry_handle(e) for e in self.experts]

    def embed(self, entries, precision="float32", cache_only=None):
        """`embed.embed_pool` of `entries` on the task with these options."""
        o = self.options
        found = embed.embed_pool(
            entries,
            self.task,
            o["split"],
            o["resolution"],
            batch_size=o["batch_size"],
            precision=precision,
            cache_only=o["cache_only"] if cache_only is None else cache_only,
            **self._where,
        )
        passes = 0 if found.labels is None else len(found.labels) * len(found.features)
        self.record["forward_passes"] = self.record.get("forward_passes", 0) + passes
        return found

    def features(self):
        """(handle -> float [N, d] features, int64 labels [N]) of the experts at
        `options["precision"]`, those that fail left out (recorded); SelectorUnavailable if all
        are, ValueError for bad labels (`base.validate_task_labels`)."""
        if self._features is None:
            found = self.embed(self.experts, self.options["precision"])
            self.record["left_out"] = [{"handle": h, "error": e} for h, e in found.failures.items()]
            self.record["cache"] = {"computed": found.computed, "cached": found.cached}
            if not found.features:
                raise base.SelectorUnavailable(
                    f"every expert was left out on task {self.task.name!r}: "
                    + "; ".join(found.failures.values())
                )
            labels = base.validate_task_labels(found.labels, self.task.num_classes)
            self.record["num_images"] = int(labels.size)
            self._features = found.features, labels
        return self._features

    def module(self, role):
        """The first entry of the pool with `role` ("epn", "classifier"), or None."""
        return next((e for e in self.pool if base.entry_field(e, "role") == role), None)

    def probabilities(self, entry, what):
        """float64 [N, K] outputs of a classifier module on the task, through its metadata
        "output_activation" ("softmax", else sigmoid); SelectorUnavailable naming `what` if the
        module fails."""
        found = self.embed([entry])
        if entry.handle in found.failures:
            message = found.failures[entry.handle]
            raise base.SelectorUnavailable(f"{what} {entry.handle!r} failed: {message}")
        logits = found.features[entry.handle].astype(np.float64)
        self.record["num_images"] = int(logits.shape[0])
        if (entry.metadata or {}).get("output_activation", "sigmoid") == "softmax":
            exp = np.exp(logits - logits.max(axis=1, keepdims=True))
            return exp / exp.sum(axis=1, keepdims=True)
        return 1.0 / (1.0 + np.exp(-logits))

    def image_counts(self):
        """handle -> metadata "image_count" (the images of its upstream slice) of each expert that
        has a positive integer one."""
        found = {}
        for e in self.experts:
            count = (base.entry_field(e, "metadata") or {}).get("image_count")
            if isinstance(count, int) and not isinstance(count, bool) and count > 0:
                found[base.entry_handle(e)] = count
        return found

    def by_alias(self, table):
        """handle -> table[alias] for each expert one of whose aliases (module name, metadata
        "expert", metadata "slice", first match wins) is a key of `table`."""
        found = {}
        for e in self.experts:
            metadata = base.entry_field(e, "metadata") or {}
            aliases = [base.entry_field(e, "name"), metadata.get("expert"), metadata.get("slice")]
            alias = next((a for a in aliases if a and a in table), None)
            if alias is not None:
                found[e.handle] = table[alias]
        return found
