"""The packed adapter module: one backbone with every adapter expert, callable per expert.

Loading it once puts all adapter experts in memory for the price of one backbone (paper section 4.1).
There is no plain `__call__`, since a forward pass needs an expert; instead (see docs/hub_modules.md):

  module.experts[name](images, training=False)      one tf.function per expert, by expert name
  module.call_expert(images, expert_id, training=False)
                                                    expert_id: an int32 scalar
  module.get_expert_names()                         string tensor [E], expert id -> name
  signatures["serving_default"](images, expert_id)  {"feature_vector": [N, feature_dim]}
"""

import tensorflow as tf

from hub_export.module import IMAGE_SPEC, _tf_variable, _Trackable, _Untracked

_EXPERT_ID = tf.TensorSpec([], tf.int32, name="expert_id")
# `training` is a bool tensor, so each function is traced once (BiT's forward pass ignores it: no
# batch norm, no dropout); Python bools passed by callers are converted.
_TRAINING = tf.TensorSpec([], tf.bool, name="training")


class PackedAdapterModule(_Trackable):
    """Wraps a head-less `BiTResNetV2` with `len(expert_names)` adapter experts.

    Args:
      model: the Keras model; its adapter expert i is `expert_names[i]`.
      expert_names: unique expert names, in expert-id order.
    """

    def __init__(self, model, expert_names):
        super().__init__()
        expert_names = [str(n) for n in expert_names]
        if model.num_experts != len(expert_names) or len(set(expert_names)) != len(expert_names):
            raise ValueError(
                f"expected {model.num_experts} unique expert names, got {expert_names!r}"
            )
        self._held = _Untracked(model)
        self._expert_names = expert_names
        self.variables = [_tf_variable(v) for v in model.weights]
        self.trainable_variables = [_tf_variable(v) for v in model.trainable_weights]
        self.regularization_losses = []
        self.call_expert = tf.function(
            self._call_expert, input_signature=[IMAGE_SPEC, _EXPERT_ID, _TRAINING]
        )
        self.experts = {name: self._expert_function(i) for i, name in enumerate(expert_names)}
        self.get_expert_names = tf.function(lambda: tf.constant(expert_names), input_signature=[])
        self.serving_default = tf.function(
            lambda images, expert_id: {"feature_vector": self._call_expert(images, expert_id)},
            input_signature=[IMAGE_SPEC, _EXPERT_ID],
        )

    @property
    def _model(self):
        return self._held.model

    def _call_expert(self, images, expert_id, training=False):
        # The gather inside the adapters fails on an out-of-range id; say which range is valid first.
        num = len(self._expert_names)
        check = tf.debugging.assert_less(expert_id, num, message=f"expert_id must be in [0, {num})")
        with tf.control_dependencies([check, tf.debugging.assert_non_negative(expert_id)]):
            expert_id = tf.identity(expert_id)
        return self._model.features(images, expert_ids=expert_id)

    def _expert_function(self, expert_id):
        def forward(images, training=False):
            return self._model.features(images, expert_ids=tf.constant(expert_id, tf.int32))

        return tf.function(forward, input_signature=[IMAGE_SPEC, _TRAINING])
