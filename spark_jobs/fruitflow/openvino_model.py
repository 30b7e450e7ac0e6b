"""The OpenVINO engine: the ONNX model the driver converted (the ONNX Runtime engine's, from the
same model cache), read and compiled by OpenVINO in each Python worker, which never imports TensorFlow.

OpenVINO reads the ONNX bytes itself: no second conversion and no file, and no ``CACHE_DIR``.
Its telemetry is off in the workers: see ``import_openvino``.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from types import ModuleType

import numpy as np

from fruitflow.images import preprocess_input

log = logging.getLogger("fruitflow")

F32, BF16 = "f32", "bf16"


def inference_precision(requested: str, capabilities: Sequence[str]) -> str:
    """The precision to compile in: ``requested``, unless it is bf16 and the CPU's capabilities
    (OpenVINO's ``OPTIMIZATION_CAPABILITIES``: BF16 with AVX-512 BF16 or AMX) lack it; then f32, and
    the worker's log says why."""
    if requested == BF16 and "BF16" not in capabilities:
        log.warning(
            "bf16 requested but this CPU has no bf16 support (OpenVINO's CPU capabilities: %s): running f32",
            ", ".join(capabilities),
        )
        return F32
    return requested


def import_openvino() -> ModuleType:
    """``openvino``, imported with its telemetry off.

    ``import openvino`` imports its converter (``openvino.tools.ovc``), which sends an "import"
    event to Google Analytics and writes a client id and usage counts under ``~/intel/`` unless
    that home folder holds the consent file of OpenVINO's documented switch, ``opt_in_out
    --opt_out`` (OpenVINO, "OpenVINO Telemetry"): a write to the home folder of whichever user
    runs the worker. Without the ``openvino_telemetry`` package the converter uses its own stub,
    which sends and writes nothing: the worker makes that package unimportable before OpenVINO
    first loads. The runtime itself (``Core``) has no telemetry.
    """
    sys.modules.setdefault("openvino_telemetry", None)  # None in sys.modules: any import of it fails
    import openvino

    return openvino


class OpenVinoFeatureExtractor:
    """A Python worker's OpenVINO compiled model for the converted network, in f32 unless bf16 is
    asked for (and the CPU has it)."""

    def __init__(self, model: bytes, threads: int, precision: str = F32):
        openvino = import_openvino()
        from openvino import properties
        from openvino.properties import hint

        core = openvino.Core()
        self.precision = inference_precision(precision, core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
        config = {
            # One pool of the task's cores: N tasks must not start N x N threads.
            properties.inference_num_threads: threads,
            properties.num_streams: 1,
            # Always explicit: OpenVINO defaults to bf16 where the CPU has it (docs/decisions/0010-default-engine.md).
            hint.inference_precision: openvino.Type.bf16 if self.precision == BF16 else openvino.Type.f32,
            # Several Python workers share a node's cores: pinning each one's threads would stack
            # them on the same cores, so the operating system places them.
            hint.enable_cpu_pinning: False,
        }
        self.compiled = core.compile_model(core.read_model(model=model), "CPU", config)
        self.request = self.compiled.create_infer_request()

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        """(n, 224, 224, 3) float32 pixels in 0..255 -> (n, 1280) float32 features."""
        return self.request.infer([preprocess_input(pixels)])[0]
