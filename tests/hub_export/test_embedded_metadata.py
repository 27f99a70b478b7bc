"""A SavedModel that embeds another of our modules (the fine-tuned classifier of
`vtab_eval.classifier.save_classifier` tracks the loaded feature extractor) exports the embedded
module's metadata asset too, under the same base name; `read_metadata` must still read the saved
module's own metadata (the asset its root's `get_metadata()` reads), not the embedded one's."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from hub_export import module as hub_module
from vtab_eval import classifier as classifier_lib

SOURCE = {"name": "tiny", "kind": "baseline", "role": "feature_vector"}
CLASSIFIER = {"task": "colours", "classes": ["r", "g"], "source_module": "tiny"}
_SPEC = tf.TensorSpec([None, None, None, 3], tf.float32)


class _Features(tf.__internal__.tracking.AutoTrackable):
    """A tiny feature-vector module in our format (what `save_module` expects)."""

    def __init__(self):
        super().__init__()
        self.w = tf.Variable(np.arange(12, dtype=np.float32).reshape(3, 4) / 12, name="w")
        self.variables = [self.w]
        self.trainable_variables = [self.w]
        self.regularization_losses = []
        self.__call__ = tf.function(self._call)
        for training in (False, True):
            self.__call__.get_concrete_function(_SPEC, training)
        self.serving_default = tf.function(self._serve, input_signature=[_SPEC])

    def _call(self, images, training=False):
        return tf.matmul(tf.reduce_mean(images, axis=[1, 2]), self.w)

    def _serve(self, images):
        return {"feature_vector": self._call(images)}


def _metadata_assets(module_dir):
    assets = os.path.join(module_dir, "assets")
    return sorted(n for n in os.listdir(assets) if n.startswith(hub_module.METADATA_FILE))


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("embedded") / "source")
    return hub_module.save_module(_Features(), path, metadata=SOURCE)


def _classifier(source):
    import tensorflow_hub as hub

    kernel = tf.Variable(tf.ones([4, 2]), name="kernel")
    bias = tf.Variable(tf.zeros([2]), name="bias")
    return classifier_lib.Classifier(hub.load(source), kernel, bias, source)


def test_plain_module_reads_its_asset_without_the_sidecar(source, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(source, copy)
    os.remove(copy / hub_module.METADATA_FILE)
    assert _metadata_assets(copy) == [hub_module.METADATA_FILE]
    assert hub_module.metadata_asset_path(copy) == str(copy / hub_module.METADATA_ASSET)
    assert hub_module.read_metadata(copy) == SOURCE


def test_classifier_embedding_a_module_reads_its_own_metadata(source, tmp_path):
    import tensorflow_hub as hub

    saved = classifier_lib.save_classifier(
        _classifier(source), str(tmp_path / "clf"), 8, CLASSIFIER
    )
    # The embedded module's asset is exported too: two files of the same base name.
    assert len(_metadata_assets(saved)) == 2
    assert json.loads(hub.load(saved).get_metadata().numpy()) == CLASSIFIER
    os.remove(os.path.join(saved, hub_module.METADATA_FILE))
    assert hub_module.read_metadata(saved) == CLASSIFIER
    own = hub_module.metadata_asset_path(saved)
    # write_metadata rewrites the classifier's asset and leaves the embedded module's alone.
    updated = dict(CLASSIFIER, version=2)
    hub_module.write_metadata(saved, updated)
    (embedded,) = [
        os.path.join(saved, "assets", n)
        for n in _metadata_assets(saved)
        if n != os.path.basename(own)
    ]
    with open(embedded, encoding="utf-8") as f:
        assert json.load(f) == SOURCE
    os.remove(os.path.join(saved, hub_module.METADATA_FILE))
    assert hub_module.read_metadata(saved) == updated
    assert json.loads(hub.load(saved).get_metadata().numpy()) == updated


def test_module_without_metadata_embedding_ours_has_none(source, tmp_path):
    exported = classifier_lib.ExportedClassifier(_classifier(source), 8)
    saved = hub_module.save_module(exported, str(tmp_path / "bare"))  # no metadata of its own
    assert _metadata_assets(saved) == [hub_module.METADATA_FILE]  # the embedded module's
    assert hub_module.metadata_asset_path(saved) is None
    assert hub_module.read_metadata(saved) is None


def test_unparsable_saved_model_is_named_when_it_has_a_metadata_asset(tmp_path):
    (tmp_path / "saved_model.pb").write_bytes(b"\xff not a protocol buffer")
    assert hub_module.read_metadata(tmp_path) is None  # no metadata asset: not parsed
    (tmp_path / "assets").mkdir()
    (tmp_path / hub_module.METADATA_ASSET).write_text(json.dumps(SOURCE))
    with pytest.raises(ValueError, match="saved_model.pb: not a SavedModel protocol buffer"):
        hub_module.read_metadata(tmp_path)
