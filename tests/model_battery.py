"""The standard checks every model of the package goes through (build, call, compile, save/reload)."""

import numpy as np
import tensorflow as tf


def assert_model_battery(model, images, tmp_path, call_kwargs=None, atol=1e-5):
    """Eager, tf.function, inside tf.data and after a .keras save/reload must all agree."""
    import keras  # noqa: PLC0415 (keep the import next to its only use in this helper)

    call_kwargs = call_kwargs or {}
    eager = np.asarray(model(images, **call_kwargs))
    assert np.all(np.isfinite(eager)), "model output is not finite"
    # Graph mode may fuse ops differently (oneDNN): compare relative to the output's scale.
    atol = atol * max(1.0, float(np.abs(eager).max()))

    compiled = tf.function(lambda x: model(x, **call_kwargs))
    np.testing.assert_allclose(np.asarray(compiled(images)), eager, atol=atol)

    dataset = tf.data.Dataset.from_tensor_slices(images).batch(len(images))
    in_data = next(iter(dataset.map(lambda x: model(x, **call_kwargs))))
    np.testing.assert_allclose(np.asarray(in_data), eager, atol=atol)

    path = tmp_path / "model.keras"
    model.save(path)
    reloaded = keras.models.load_model(path)
    np.testing.assert_allclose(np.asarray(reloaded(images, **call_kwargs)), eager, atol=atol)
    return eager
