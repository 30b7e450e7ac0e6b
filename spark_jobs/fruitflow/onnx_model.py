"""The ONNX Runtime engine: the same MobileNetV2, converted to ONNX once on the driver and run
by onnxruntime in the Python workers, which never import TensorFlow.

Converting takes TensorFlow; a model cache (a folder on any Hadoop URI) keeps converted models
between runs, so that a warm driver skips TensorFlow too (docs/decisions/0011-model-cache.md).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib import metadata

import numpy as np

from fruitflow.contract import WEIGHTS_RANDOM
from fruitflow.images import MODEL_INPUT_SIZE, preprocess_input

log = logging.getLogger("fruitflow")

OPSET = 17
INPUT_NAME = "pixels"
# What the converted network computes besides its weights and preprocessing (which runs outside
# it): the cut at the 1280-d pool. Change it with the cut, so that no cached model from before is used.
MODEL_REVISION = "mobilenet_v2-224-avgpool-1280"


def installed_version(*distributions: str) -> str:
    """The version of the first of ``distributions`` installed, read without importing it."""
    for name in distributions:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return "absent"


@dataclass(frozen=True)
class ModelIdentity:
    """Everything that decides the bytes of a converted model, read without importing TensorFlow."""

    weights_digest: str
    model_revision: str
    opset: int
    keras: str
    tensorflow: str
    tf2onnx: str
    onnx: str
    onnxruntime: str

    @property
    def key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:32]


def model_identity(weights_digest: str) -> ModelIdentity:
    return ModelIdentity(
        weights_digest=weights_digest,
        model_revision=MODEL_REVISION,
        opset=OPSET,
        keras=installed_version("keras"),
        tensorflow=installed_version("tensorflow", "tensorflow-cpu"),
        tf2onnx=installed_version("tf2onnx"),
        onnx=installed_version("onnx"),
        onnxruntime=installed_version("onnxruntime"),
    )


def convert_to_onnx(weights: list[np.ndarray]) -> bytes:
    """The feature extractor with ``weights`` as an ONNX model (any batch size). Imports TensorFlow."""
    import tensorflow as tf
    import tf2onnx

    from fruitflow.model import build_feature_extractor

    model = build_feature_extractor()
    model.set_weights(weights)
    signature = (tf.TensorSpec((None, *MODEL_INPUT_SIZE, 3), tf.float32, name=INPUT_NAME),)
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=signature, opset=OPSET)
    return proto.SerializeToString()


class ModelCache:
    """Converted models in a folder: ``<key>.onnx`` and, written after it, ``<key>.json`` with its
    digest. An entry without a manifest, or whose bytes do not match it, is rebuilt; a cache that
    cannot be read or written only costs a conversion, never the run."""

    def __init__(self, read: Callable[[str], bytes], write: Callable[[str, bytes], None], folder: str):
        self.read, self.write, self.folder = read, write, folder.rstrip("/")

    def _uris(self, key: str) -> tuple[str, str]:
        return f"{self.folder}/{key}.onnx", f"{self.folder}/{key}.json"

    def load(self, identity: ModelIdentity) -> bytes | None:
        model_uri, manifest_uri = self._uris(identity.key)
        try:
            manifest = json.loads(self.read(manifest_uri))
        except Exception:
            log.info("model cache: no converted model at %s yet", model_uri)
            return None
        try:
            model = self.read(model_uri)
            if manifest.get("sha256") != hashlib.sha256(model).hexdigest() or manifest.get("bytes") != len(model):
                raise ValueError(f"{len(model):,} bytes that do not match their manifest {manifest_uri}")
        except Exception as problem:
            log.warning("model cache: corrupt entry %s (%s): converting again", model_uri, problem)
            return None
        log.info("model cache: using %s", model_uri)
        return model

    def store(self, identity: ModelIdentity, model: bytes) -> None:
        model_uri, manifest_uri = self._uris(identity.key)
        manifest = {"sha256": hashlib.sha256(model).hexdigest(), "bytes": len(model), "identity": asdict(identity)}
        try:
            self.write(model_uri, model)
            self.write(manifest_uri, json.dumps(manifest, indent=2).encode())
        except Exception as problem:
            log.warning("model cache: could not store %s (%s); the next run converts again", model_uri, problem)
            return
        log.info("model cache: stored %s (%.1f MB)", model_uri, len(model) / 1e6)


def onnx_model(spec: str, weights_file: str | None, cache: ModelCache | None) -> bytes:
    """The ONNX feature extractor for weights ``spec`` (``imagenet``, ``random``, or a weights file
    already copied to ``weights_file``), from ``cache`` when it holds it, else converted
    (TensorFlow on the driver only) and stored there."""
    from fruitflow.model import load_weights_file, resolve_weights, warn_random_weights, weights_digest

    identity = model_identity(weights_digest(spec, weights_file))
    if cache and (model := cache.load(identity)):
        if spec == WEIGHTS_RANDOM:
            warn_random_weights()
        return model
    weights = load_weights_file(weights_file) if weights_file else resolve_weights(spec, None)
    model = convert_to_onnx(weights)
    log.info("converted MobileNetV2 to ONNX (opset %d, %.1f MB)", OPSET, len(model) / 1e6)
    if cache:
        cache.store(identity, model)
    return model


class OnnxFeatureExtractor:
    """A Python worker's ONNX Runtime session for the converted network."""

    def __init__(self, model: bytes, threads: int):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        # One pool of the task's cores: N tasks must not start N x N threads.
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        """(n, 224, 224, 3) float32 pixels in 0..255 -> (n, 1280) float32 features."""
        return self.session.run([self.output_name], {self.input_name: preprocess_input(pixels)})[0]
