"""Upstream training: the custom tf.distribute loop, schedules, strategies, checkpoints and the job
that trains the baseline, the experts and the EPN. The entry point is `python -m bit_experts.train`."""
