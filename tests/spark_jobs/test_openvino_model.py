"""The OpenVINO engine outside Spark: ONNX Runtime's features in f32 from the same converted model,
the task's threads, and a worker that writes nothing and sends nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from fruitflow.onnx_model import OnnxFeatureExtractor
from fruitflow.openvino_model import BF16, F32, OpenVinoFeatureExtractor, inference_precision


def pixels(count: int) -> np.ndarray:
    return np.random.default_rng(5).uniform(0, 255, (count, 224, 224, 3)).astype(np.float32)


def test_openvino_features_are_onnx_runtimes_in_f32_on_the_tasks_threads(converted):
    model = converted[1]
    batch = pixels(4)
    expected = OnnxFeatureExtractor(model, threads=1)(batch)
    extractor = OpenVinoFeatureExtractor(model, threads=2)
    actual = extractor(batch)
    assert actual.shape == (4, 1280) and actual.dtype == np.float32
    assert np.abs(actual - expected).max() <= 1e-5 * np.abs(expected).max()
    assert np.abs(expected[0] - expected[1]).max() > 1e-3 * np.abs(expected).max()  # the images do differ
    compiled = extractor.compiled
    assert str(compiled.get_property("INFERENCE_PRECISION_HINT")) == "<Type: 'float32'>"
    assert compiled.get_property("INFERENCE_NUM_THREADS") == 2
    # Each call's features are its own: the next batch does not overwrite them.
    first = extractor(batch[:2]).copy()
    kept = extractor(batch[:2])
    extractor(batch[2:])
    assert np.array_equal(kept, first)


def test_bf16_features_are_close_to_f32s_where_the_cpu_has_bf16_and_f32s_where_it_does_not(converted):
    model, batch = converted[1], pixels(4)
    f32 = OpenVinoFeatureExtractor(model, threads=2)(batch)
    extractor = OpenVinoFeatureExtractor(model, threads=2, precision=BF16)
    difference = np.abs(extractor(batch) - f32).max() / np.abs(f32).max()
    precision = str(extractor.compiled.get_property("INFERENCE_PRECISION_HINT"))
    if extractor.precision == BF16:  # this host: avx512_bf16
        assert precision == "<Type: 'bfloat16'>" and 0 < difference < 0.05
    else:
        assert precision == "<Type: 'float32'>" and difference == 0


@pytest.mark.parametrize(
    ("capabilities", "precision"), [(["FP32", "BF16", "INT8"], BF16), (["WINOGRAD", "FP32", "INT8", "BIN"], F32)]
)
def test_bf16_runs_only_where_the_cpu_has_it_and_the_log_says_when_it_falls_back(capabilities, precision, job_log):
    assert inference_precision(BF16, capabilities) == precision
    fell_back = (
        "bf16 requested but this CPU has no bf16 support "
        "(OpenVINO's CPU capabilities: WINOGRAD, FP32, INT8, BIN): running f32"
    )
    assert (fell_back in job_log.text) == (precision == F32)
    assert inference_precision(F32, capabilities) == F32


WORKER = """
import json, os, socket, sys
from pathlib import Path
import numpy as np

connections = []
def refuse(self, address):
    connections.append(str(address))
    raise OSError("no network for this worker")
socket.socket.connect = refuse
socket.socket.connect_ex = refuse

import pytest

from fruitflow.openvino_model import BF16, F32, OpenVinoFeatureExtractor, inference_precision
extractor = OpenVinoFeatureExtractor(Path(sys.argv[1]).read_bytes(), threads=1)
features = extractor(np.zeros((2, 224, 224, 3), np.float32))
print(json.dumps({"shape": list(features.shape), "connections": connections}))
"""


def run_in_fresh_folders(tmp_path: Path, script: str, *args: str) -> tuple[subprocess.CompletedProcess, Path, Path]:
    """``script`` in a Python whose home and working folder start empty; and those two folders.
    Not a CI job to OpenVINO's telemetry, which stays silent in one (``CI=true``, ``TF_BUILD``,
    ``JENKINS_URL``): a Python worker on a cluster node is no CI job either."""
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    home.mkdir(parents=True)
    cwd.mkdir()
    environment = {key: value for key, value in os.environ.items() if key not in ("CI", "TF_BUILD", "JENKINS_URL")}
    environment |= {"HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache")}
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        cwd=cwd, env=environment, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result, home, cwd


def test_an_openvino_worker_writes_nothing_and_connects_nowhere(converted, tmp_path):
    """Built and run as a Python worker does, every socket connection failing and recorded."""
    (model_file,) = converted[0].glob("*.onnx")
    result, home, cwd = run_in_fresh_folders(tmp_path / "worker", WORKER, str(model_file))
    assert json.loads(result.stdout) == {"shape": [2, 1280], "connections": []}
    assert list(home.rglob("*")) == [] and list(cwd.rglob("*")) == []
    # The control: a plain import of OpenVINO, its telemetry on, does write under the home folder.
    _, home, _ = run_in_fresh_folders(tmp_path / "plain", "import openvino")
    assert {path.name for path in (home / "intel").iterdir()} >= {"openvino_ga_cid", "stats"}
