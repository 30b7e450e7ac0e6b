"""How fast each engine featurises in process, without Spark: decode + preprocess + forward on the
same images and batches, one subprocess per engine so that its threads and memory stay there."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fruitflow.contract import ENGINE_ONNX, ENGINE_OPENVINO, ENGINE_OPENVINO_BF16, ENGINE_TENSORFLOW, WEIGHTS_RANDOM
from fruitflow.onnx_model import OPSET
from fruitflow_bench import ROOT
from fruitflow_bench.commands import run_logged
from fruitflow_bench.workload import BATCH_SIZE

# The subprocess is the benchmark's own command line, with its hidden --raw-only flags.
BENCHMARK_SCRIPT = ROOT / "bench" / "benchmark.py"
ENGINE_NAMES = {
    ENGINE_ONNX: "ONNX Runtime",
    ENGINE_OPENVINO: "OpenVINO",
    ENGINE_OPENVINO_BF16: "OpenVINO bf16",
    ENGINE_TENSORFLOW: "TensorFlow",
}
# The raw forward passes, by the key the subprocess reports them under, as the report names them.
FORWARD_PASSES = {
    "predict": f"TensorFlow `model.predict` (batch {BATCH_SIZE})",
    "compiled": f"TensorFlow compiled `tf.function` (input_signature [None,224,224,3], batch {BATCH_SIZE})",
    "onnxruntime": f"ONNX Runtime `InferenceSession.run` (tf2onnx, opset {OPSET}, batch {BATCH_SIZE})",
    "openvino": f"OpenVINO `InferRequest.infer`, f32 (the same ONNX model, batch {BATCH_SIZE})",
    "openvino_bf16": f"OpenVINO `InferRequest.infer`, bf16 where the CPU has it (same model, batch {BATCH_SIZE})",
}


def tensorflow_forward_passes(threads: int) -> dict[str, Callable]:
    """Keras' ``predict`` and the job's compiled forward pass, on one pool of ``threads``."""
    from fruitflow.model import FeatureExtractor, configure_tensorflow_threads, resolve_weights

    # As the job's Python workers do, and before TensorFlow's runtime starts: both passes get it.
    configure_tensorflow_threads(threads)
    from keras.applications.mobilenet_v2 import preprocess_input

    extractor = FeatureExtractor(resolve_weights(WEIGHTS_RANDOM, fetch=None))
    return {
        "predict": lambda pixels: extractor.model.predict(preprocess_input(pixels), batch_size=BATCH_SIZE, verbose=0),
        "compiled": extractor,  # numpy preprocess_input, then its tf.function with input_signature [None, 224, 224, 3]
    }


def onnx_forward_passes(threads: int) -> dict[str, Callable]:
    """The job's ONNX Runtime session (intra-op ``threads``, inter-op 1) on the converted network."""
    from fruitflow.onnx_model import OnnxFeatureExtractor, onnx_model

    # Converted here, before any clock starts: the job converts once per model cache, not per run.
    model = onnx_model(WEIGHTS_RANDOM, weights_file=None, cache=None)
    return {"onnxruntime": OnnxFeatureExtractor(model, threads)}


def openvino_forward_passes(threads: int) -> dict[str, Callable]:
    """The job's OpenVINO compiled models (``threads``), f32 and bf16, on the same converted network."""
    from fruitflow.onnx_model import onnx_model
    from fruitflow.openvino_model import BF16, OpenVinoFeatureExtractor

    model = onnx_model(WEIGHTS_RANDOM, weights_file=None, cache=None)
    return {
        "openvino": OpenVinoFeatureExtractor(model, threads),
        "openvino_bf16": OpenVinoFeatureExtractor(model, threads, BF16),
    }


RAW_ENGINES = {
    ENGINE_TENSORFLOW: tensorflow_forward_passes,
    ENGINE_ONNX: onnx_forward_passes,
    ENGINE_OPENVINO: openvino_forward_passes,
}


def raw_throughput(folder: Path, engine: str, threads: int) -> tuple[dict, dict]:
    """Seconds to decode, preprocess and featurise every JPEG under ``folder``, per forward pass,
    and of those the seconds spent decoding and resizing (the rest is the forward pass); and the
    features each forward pass computed, in the order of the result's ``labels``.

    Bytes are read before the clock starts (the jobs read them through Spark). Each forward
    pass is warmed up on a full and on the last, shorter batch first, so no tracing is timed.
    """
    import numpy as np

    from fruitflow.images import decode_image, to_model_input

    paths = sorted(folder.rglob("*.jpg"))
    contents = [path.read_bytes() for path in paths]
    batches = [contents[start : start + BATCH_SIZE] for start in range(0, len(contents), BATCH_SIZE)]
    forward_passes = RAW_ENGINES[engine](threads)

    def model_input(batch: list[bytes]) -> np.ndarray:
        return np.stack([to_model_input(decode_image(content)) for content in batch])

    seconds, decode_seconds, features = {}, {}, {}
    for name, forward in forward_passes.items():
        for warm_up in {len(batches[0]), len(batches[-1])}:
            forward(model_input(contents[:warm_up]))
        decoding, outputs = 0.0, []
        started = time.perf_counter()
        for batch in batches:
            decode_started = time.perf_counter()
            pixels = model_input(batch)
            decoding += time.perf_counter() - decode_started
            outputs.append(forward(pixels))
        seconds[name] = time.perf_counter() - started
        decode_seconds[name] = decoding
        features[name] = np.concatenate(outputs)
    result = {
        "engine": engine,
        "images": len(contents),
        "threads": threads,
        "seconds": seconds,
        "decode_seconds": decode_seconds,
        "labels": [path.parent.name for path in paths],
    }
    return result, features


@dataclass(frozen=True)
class RawResult:
    """One engine's forward passes, in process, on the same images and batches."""

    engine: str
    images: int
    threads: int
    seconds: dict[str, float]  # forward pass (a FORWARD_PASSES key) -> seconds for all the images
    decode_seconds: dict[str, float]  # forward pass -> of those seconds, decoding and resizing
    labels: list[str]  # each image's class, in the order of the features' rows
    features: dict[str, Any]  # forward pass -> (images, 1280) float32 array

    def rate(self, forward_pass: str) -> float:
        return self.images / self.seconds[forward_pass]

    def decode_ms(self, forward_pass: str) -> float:
        """Decode + resize milliseconds per image."""
        return 1000 * self.decode_seconds[forward_pass] / self.images

    def inference_ms(self, forward_pass: str) -> float:
        """Preprocess + forward milliseconds per image."""
        return 1000 * (self.seconds[forward_pass] - self.decode_seconds[forward_pass]) / self.images

    @property
    def best_rate(self) -> float:
        return max(self.rate(forward_pass) for forward_pass in self.seconds)


def measure_raw(folder: Path, engine: str, threads: int, log: Path) -> RawResult:
    """``raw_throughput`` in a subprocess of its own."""
    import numpy as np

    result_file = log.with_suffix(".json")
    command = [sys.executable, str(BENCHMARK_SCRIPT), "--raw-only", str(folder), "--raw-engine", engine]
    run_logged([*command, "--raw-threads", str(threads), "--raw-result", str(result_file)], log)
    result = json.loads(result_file.read_text())
    return RawResult(
        engine=engine,
        images=result["images"],
        threads=result["threads"],
        seconds=result["seconds"],
        decode_seconds=result["decode_seconds"],
        labels=result["labels"],
        features=dict(np.load(features_file(result_file))),
    )


def features_file(result_file: Path) -> Path:
    """Where the raw subprocess leaves its features: beside its result."""
    return result_file.with_suffix(".npz")
