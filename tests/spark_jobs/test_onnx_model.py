"""The ONNX Runtime engine: its model cache (cold, warm, corrupt, partial, unwritable), and
TensorFlow kept out of the Python workers (ONNX Runtime's and OpenVINO's) always and out of a warm driver."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from fruitflow import onnx_model as engine
from fruitflow.model import weights_digest
from fruitflow.onnx_model import ModelCache, OnnxFeatureExtractor, model_identity, onnx_model

ROOT = Path(__file__).resolve().parents[2]


def local_cache(folder: Path) -> ModelCache:
    def write(uri: str, data: bytes) -> None:
        Path(uri).parent.mkdir(parents=True, exist_ok=True)
        temporary = Path(f"{uri}.tmp")
        temporary.write_bytes(data)
        temporary.replace(uri)

    return ModelCache(lambda uri: Path(uri).read_bytes(), write, str(folder))


RANDOM_WEIGHTS = object()  # what resolving the random weights gives, while conversions are answered


@pytest.fixture
def conversions(converted, monkeypatch) -> list:
    """Converting the random weights answered with ``converted``'s model, which that conversion
    made; the weights of each conversion asked for. (A second conversion of the same weights
    gives the same network: test_featurize.py's model cache test converts again and compares.)"""
    from fruitflow import model as keras_model

    calls = []
    monkeypatch.setattr(
        keras_model, "resolve_weights", lambda spec, fetch: RANDOM_WEIGHTS if spec == "random" else None
    )
    monkeypatch.setattr(engine, "convert_to_onnx", lambda weights: calls.append(weights) or converted[1])
    return calls


def entry(folder: Path) -> tuple[Path, Path]:
    key = model_identity(weights_digest("random")).key
    return folder / f"{key}.onnx", folder / f"{key}.json"


def test_cold_cache_converts_and_stores_the_model_with_its_manifest(converted):
    folder, model = converted
    model_file, manifest_file = entry(folder)
    assert model_file.read_bytes() == model
    manifest = json.loads(manifest_file.read_text())
    assert manifest["bytes"] == len(model) > 5_000_000
    assert manifest["identity"]["opset"] == 17 and manifest["identity"]["onnxruntime"] == "1.32.0"
    features = OnnxFeatureExtractor(model, threads=1)(np.zeros((2, 224, 224, 3), np.float32))
    assert features.shape == (2, 1280) and features.dtype == np.float32


def test_warm_cache_returns_the_stored_model_without_converting(converted, monkeypatch, job_log):
    folder, model = converted
    monkeypatch.setattr(engine, "convert_to_onnx", lambda weights: pytest.fail("converted again"))
    assert onnx_model("random", None, local_cache(folder)) == model
    assert "model cache: using" in job_log.text and "RANDOM WEIGHTS" in job_log.text


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda model, manifest: model.write_bytes(model.read_bytes()[:1000]), id="truncated-model"),
        pytest.param(lambda model, manifest: model.write_bytes(b"\0" * len(model.read_bytes())), id="garbled-model"),
        pytest.param(lambda model, manifest: model.unlink(), id="model-gone"),
        pytest.param(lambda model, manifest: manifest.write_text("{not json"), id="garbled-manifest"),
        pytest.param(lambda model, manifest: manifest.unlink(), id="partial-write"),
    ],
)
def test_a_damaged_entry_is_rebuilt_and_logged_never_used(converted, conversions, tmp_path, damage, job_log):
    source, model = converted
    folder = tmp_path / "models"
    shutil.copytree(source, folder)
    model_file, manifest_file = entry(folder)
    damage(model_file, manifest_file)
    rebuilt = onnx_model("random", None, local_cache(folder))
    assert "converted MobileNetV2 to ONNX" in job_log.text
    assert "corrupt entry" in job_log.text or "no converted model" in job_log.text
    pixels = np.random.default_rng(3).uniform(0, 255, (2, 224, 224, 3)).astype(np.float32)
    expected = OnnxFeatureExtractor(model, threads=1)(pixels)
    assert np.allclose(
        OnnxFeatureExtractor(rebuilt, threads=1)(pixels), expected, rtol=0, atol=1e-6 * np.abs(expected).max()
    )
    assert model_file.read_bytes() == rebuilt  # repaired for the next run
    assert json.loads(manifest_file.read_text())["bytes"] == len(rebuilt)
    assert conversions == [RANDOM_WEIGHTS]  # converted once, from the random weights


def test_a_cache_that_cannot_be_written_costs_a_conversion_not_the_run(conversions, tmp_path, job_log):
    def refuse(uri: str, data: bytes) -> None:
        raise PermissionError(f"Access Denied: {uri}")

    cache = ModelCache(lambda uri: Path(uri).read_bytes(), refuse, str(tmp_path / "nowhere"))
    model = onnx_model("random", None, cache)
    assert len(model) > 5_000_000 and conversions == [RANDOM_WEIGHTS]
    assert "could not store" in job_log.text and "Access Denied" in job_log.text


def test_weights_files_are_keyed_by_their_bytes(tmp_path):
    first, second = tmp_path / "a.h5", tmp_path / "b.h5"
    first.write_bytes(b"weights one")
    second.write_bytes(b"weights two")
    keys = {model_identity(weights_digest("x.h5", str(path))).key for path in (first, second)}
    keys |= {model_identity(weights_digest(spec)).key for spec in ("imagenet", "random")}
    assert len(keys) == 4


def test_a_warm_driver_never_imports_tensorflow(converted):
    folder, model = converted
    script = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        from fruitflow import featurize  # what the job's driver imports
        from fruitflow.onnx_model import ModelCache, onnx_model
        cache = ModelCache(lambda uri: Path(uri).read_bytes(), None, {str(folder)!r})
        model = onnx_model("random", None, cache)
        heavy = sorted(name for name in ("tensorflow", "keras", "tf2onnx") if name in sys.modules)
        print(len(model), heavy)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=os.environ)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(len(model)), "[]"]


BLOCK_TENSORFLOW = """
import sys

class NoTensorFlow:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "keras"):
            raise ImportError(f"this Python worker must not import {name}")
        return None

sys.meta_path.insert(0, NoTensorFlow())
"""


@pytest.fixture
def workers_without_tensorflow(spark, tmp_path, monkeypatch):
    """Python workers started from now on fail on any TensorFlow or Keras import (the driver does not)."""
    (tmp_path / "blocker").mkdir()
    (tmp_path / "blocker" / "sitecustomize.py").write_text(BLOCK_TENSORFLOW)
    monkeypatch.setitem(spark.sparkContext.environment, "PYTHONPATH", str(tmp_path / "blocker"))


def run_featurize(folder: Path, out: Path, engine_name: str) -> int:
    from fruitflow import featurize

    return featurize.main(
        ["--images", str(folder), "--output", str(out / "features"), "--errors", str(out / "errors"),
         "--weights", "random", "--engine", engine_name, "--partitions", "2"]
    )  # fmt: skip


@pytest.mark.spark
@pytest.mark.parametrize("engine_name", ["onnx", "openvino", "openvino-bf16"])
def test_onnx_model_workers_never_import_tensorflow(
    spark, fruit_images, tmp_path, workers_without_tensorflow, engine_name
):
    assert run_featurize(fruit_images, tmp_path / engine_name, engine_name) == 0
    assert spark.read.parquet(str(tmp_path / engine_name / "features")).count() == 30
    # The control: the same workers refuse the TensorFlow engine, so the blocker was in place.
    with pytest.raises(Exception, match="must not import"):
        run_featurize(fruit_images, tmp_path / "tensorflow", "tensorflow")
