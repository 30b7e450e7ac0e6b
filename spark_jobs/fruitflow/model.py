"""MobileNetV2 feature extractor: weights resolved once on the driver, rebuilt on executors.

TensorFlow is imported inside the functions: the PCA and CSV jobs import this package too
and must not pay for TensorFlow.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import warnings
from collections.abc import Callable
from importlib import metadata

import numpy as np

from fruitflow.cli import JobError
from fruitflow.contract import IMAGENET_WEIGHTS_FILE, WEIGHTS_IMAGENET, WEIGHTS_RANDOM
from fruitflow.images import MODEL_INPUT_SIZE, preprocess_input

log = logging.getLogger("fruitflow")

FEATURE_DIM = 1280
RANDOM_WEIGHTS_SEED = 1234

# TensorFlow's C++ start-up banner repeats in every Python worker; warnings and errors still show.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Faster oneDNN kernels, off by default on AMD; read when TensorFlow loads (docs/decisions/0010-default-engine.md).
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")


def build_classifier(weights: str | None = None):
    """The full MobileNetV2 (224x224, alpha 1.0) with its ImageNet classifier.
    ``weights=None`` (the default) downloads nothing."""
    import keras

    return keras.applications.MobileNetV2(input_shape=(*MODEL_INPUT_SIZE, 3), include_top=True, weights=weights)


def build_feature_extractor(classifier=None):
    """MobileNetV2 cut at its 1280-d average pool, the layer before the classifier.

    Cut from ``classifier`` when given: the two then share layers, so weights loaded into
    the classifier are the extractor's too. Otherwise from a new, weightless classifier.
    """
    import keras

    classifier = classifier or build_classifier()
    return keras.Model(classifier.inputs, classifier.layers[-2].output, name="mobilenet_v2_features")


def weights_digest(spec: str, local_file: str | None = None) -> str:
    """A digest of the weights ``spec`` names, without building the network: the bytes of a weights
    file (``local_file``, its local copy), the name of Keras' ImageNet file, or the seed of the
    random weights and the Keras version that draws them."""
    if spec == WEIGHTS_IMAGENET:
        return hashlib.sha256(f"imagenet:{IMAGENET_WEIGHTS_FILE}".encode()).hexdigest()
    if spec == WEIGHTS_RANDOM:
        keras_version = metadata.version("keras")
        return hashlib.sha256(f"random:{RANDOM_WEIGHTS_SEED}:keras {keras_version}".encode()).hexdigest()
    digest = hashlib.sha256()
    with open(local_file, "rb") as weights_file:
        for block in iter(lambda: weights_file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def resolve_weights(spec: str, fetch: Callable[[str, str], None]) -> list[np.ndarray]:
    """The extractor's weights for ``spec``: ``imagenet``, ``random`` or a weights file URI.

    ``fetch(uri, local_path)`` copies a remote file locally (the driver's Hadoop FS).
    Runs on the driver only; executors receive the returned arrays by broadcast.
    """
    if spec == WEIGHTS_IMAGENET:
        return _imagenet_weights()
    if spec == WEIGHTS_RANDOM:
        return _random_weights()
    return _file_weights(spec, fetch)


def _imagenet_weights() -> list[np.ndarray]:
    try:
        classifier = build_classifier(weights=WEIGHTS_IMAGENET)
    except Exception as exc:
        raise JobError(
            f"could not download the ImageNet weights for MobileNetV2 ({type(exc).__name__}: {exc}). "
            f"On a machine without internet access, copy {IMAGENET_WEIGHTS_FILE} (from the Keras applications "
            "release) somewhere readable and pass its path or s3:// URI as the weights, "
            "or use 'random' for a smoke test with meaningless features."
        ) from exc
    return build_feature_extractor(classifier).get_weights()


def warn_random_weights() -> None:
    log.warning("=" * 78)
    log.warning("RANDOM WEIGHTS: MobileNetV2 is initialised with seed %d, not trained.", RANDOM_WEIGHTS_SEED)
    log.warning("The features are reproducible but MEANINGLESS: use this for tests and benchmarks only.")
    log.warning("=" * 78)


def _random_weights() -> list[np.ndarray]:
    import keras

    warn_random_weights()
    keras.utils.set_random_seed(RANDOM_WEIGHTS_SEED)
    return build_feature_extractor().get_weights()


def fetch_weights_file(uri: str, folder: str, fetch: Callable[[str, str], None]) -> str:
    """Copy the weights file ``uri`` into ``folder``; returns the local path."""
    name = uri.rstrip("/").rsplit("/", 1)[-1]
    if not name.endswith(".h5"):
        raise JobError(
            f"weights {uri!r} must be 'imagenet', 'random' or a Keras weights file ending in .h5 "
            f"(such as {IMAGENET_WEIGHTS_FILE} or a file written by model.save_weights('x.weights.h5'))"
        )
    local_path = os.path.join(folder, name)
    try:
        fetch(uri, local_path)
    except Exception as exc:
        raise JobError(f"cannot read weights file {uri}: {exc}") from exc
    return local_path


def _file_weights(uri: str, fetch: Callable[[str, str], None]) -> list[np.ndarray]:
    with tempfile.TemporaryDirectory(prefix="fruitflow-weights-") as folder:
        return load_weights_file(fetch_weights_file(uri, folder, fetch))


def _load_strictly(model, local_path: str) -> None:
    # Keras only warns when a file lacks some layers and leaves them randomly initialised:
    # features from such a half-loaded network would look fine and mean nothing.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.load_weights(local_path)


def load_weights_file(local_path: str) -> list[np.ndarray]:
    import keras

    classifier = build_classifier()
    try:
        _load_strictly(classifier, local_path)
        return build_feature_extractor(classifier).get_weights()
    except Exception as with_top_error:
        # Keras also publishes a "_no_top" file: exactly the extractor's layers, in its order.
        no_top = keras.applications.MobileNetV2(
            input_shape=(*MODEL_INPUT_SIZE, 3), include_top=False, weights=None, pooling="avg"
        )
        try:
            _load_strictly(no_top, local_path)
        except Exception:
            raise JobError(
                f"{os.path.basename(local_path)} does not hold MobileNetV2 (224x224, alpha 1.0) weights: "
                f"{with_top_error}"
            ) from with_top_error
        return no_top.get_weights()


def configure_tensorflow_threads(threads: int) -> None:
    """One TensorFlow thread pool per Spark core: N tasks must not start N x N threads.

    Spark sets OMP_NUM_THREADS in Python workers but TensorFlow ignores it, and the
    setting only takes before TensorFlow's runtime starts (a reused worker already has it).
    """
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        pass  # already initialised in this process, with the same settings by the first task


class FeatureExtractor:
    """The TensorFlow engine: the extractor with a compiled forward pass, traced once for any batch size."""

    def __init__(self, weights: list[np.ndarray]):
        import tensorflow as tf

        self.model = build_feature_extractor()
        self.model.set_weights(weights)
        spec = tf.TensorSpec(shape=(None, *MODEL_INPUT_SIZE, 3), dtype=tf.float32)
        self._forward = tf.function(lambda batch: self.model(batch, training=False), input_signature=[spec])

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        """(n, 224, 224, 3) float32 pixels in 0..255 -> (n, 1280) float32 features."""
        return self._forward(preprocess_input(pixels)).numpy()
