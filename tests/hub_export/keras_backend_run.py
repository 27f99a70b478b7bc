"""Run by test_keras_artifact.py in a fresh process per Keras backend (KERAS_BACKEND set by the
caller): loads a published expert's Keras archive, computes its features, fine-tunes it below a
Dense head with `fit`, saves and reloads both the whole model and the expert, and writes what the
parent compares to OUT (an .npz).

    KERAS_BACKEND=jax python keras_backend_run.py MODULE_DIR IMAGES.npy OUT.npz
"""

import os
import sys

import keras
import numpy as np

import bit_experts


def main(module_dir, images_path, out_path):
    images = np.load(images_path)
    labels = np.arange(len(images)) % 2
    expert = bit_experts.load_expert(module_dir)
    features = expert.predict(images, batch_size=len(images), verbose=0)

    inputs = keras.Input(images.shape[1:])
    model = keras.Model(inputs, keras.layers.Dense(2)(expert(inputs)))
    # Adam keeps slot variables per weight: the case that fails through keras.layers.TFSMLayer.
    # TensorFlow runs the train step eagerly: tracing it costs ~14 s of CPU here; graph-mode
    # training of this model is tested by bit_experts.training (a tf.function step). JAX compiles it.
    model.compile(
        keras.optimizers.Adam(1e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        run_eagerly=keras.backend.backend() == "tensorflow",
    )
    before = [np.array(w) for w in expert.trainable_weights]
    history = model.fit(images, labels, batch_size=len(images), epochs=2, shuffle=False, verbose=0)
    after = [np.array(w) for w in expert.trainable_weights]

    out_dir = os.path.dirname(out_path)
    model.save(os.path.join(out_dir, "finetuned.keras"))
    reloaded = keras.models.load_model(os.path.join(out_dir, "finetuned.keras"))
    bit_experts.save_expert(expert, os.path.join(out_dir, "expert.keras"), expert.metadata)
    again = bit_experts.load_expert(os.path.join(out_dir, "expert.keras"))
    np.savez(
        out_path,
        backend=keras.backend.backend(),
        features=features,
        loss=np.asarray(history.history["loss"]),
        moved=np.asarray([not np.array_equal(b, a) for b, a in zip(before, after)]),
        model_reload_exact=all(
            np.array_equal(np.array(a), np.array(b))
            for a, b in zip(model.weights, reloaded.weights, strict=True)
        ),
        expert_reload_exact=all(
            np.array_equal(np.array(a), np.array(b))
            for a, b in zip(expert.weights, again.weights, strict=True)
        ),
        metadata_kept=again.metadata == expert.metadata,
        finetuned_features=again.predict(images, batch_size=len(images), verbose=0),
    )


if __name__ == "__main__":
    main(*sys.argv[1:])
