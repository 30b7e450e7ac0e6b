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

from fruitflow.onnx_model import OnnxFeatureExtractor
from fruitflow.openvino_model import OpenVinoFeatureExtractor


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

from fruitflow.openvino_model import OpenVinoFeatureExtractor
extractor = OpenVinoFeatureExtractor(Path(sys.argv[1]).read_bytes(), threads=1)
features = extractor(np.zeros((2, 224, 224, 3), np.float32))
print(json.dumps({"shape": list(features.shape), "connections": connections}))
"""


def run_in_fresh_folders(tmp_path: Path, script: str, *args: str) -> tuple[subprocess.CompletedProcess, Path, Path]:
    """``script`` in a Python whose home and working folder start empty; and those two folders."""
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    home.mkdir(parents=True)
    cwd.mkdir()
    environment = {**os.environ, "HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache")}
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
