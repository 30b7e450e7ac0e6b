"""Resolving the extractor's weights on the driver: random, weights files, and ImageNet failures."""

from __future__ import annotations

import shutil

import h5py
import numpy as np
import pytest

from fruitflow.cli import JobError
from fruitflow.model import FEATURE_DIM, FeatureExtractor, build_classifier, build_feature_extractor, resolve_weights


def local_copy(uri: str, local_path: str) -> None:
    shutil.copyfile(uri, local_path)


@pytest.fixture(scope="module")
def random_weights():
    return resolve_weights("random", local_copy)


def test_random_weights_are_seeded_and_say_so(random_weights, job_log):
    again = resolve_weights("random", local_copy)
    assert "RANDOM WEIGHTS" in job_log.text and "MEANINGLESS" in job_log.text
    assert len(again) == len(random_weights)
    assert all(np.array_equal(a, b) for a, b in zip(again, random_weights, strict=True))


def test_extractor_outputs_1280_features_per_image(random_weights):
    extract = FeatureExtractor(random_weights)
    pixels = np.random.default_rng(0).uniform(0, 255, (3, 224, 224, 3)).astype(np.float32)
    features = extract(pixels)
    assert features.shape == (3, FEATURE_DIM) and features.dtype == np.float32
    assert extract(pixels[:1]).shape == (1, FEATURE_DIM)  # another batch size, same traced function


@pytest.fixture(scope="module")
def trained_like_weights():
    """A full model whose weights differ from the random option's, standing in for ImageNet's,
    and its extractor's weights. The tests only save it."""
    import keras

    keras.utils.set_random_seed(99)
    full = build_classifier()
    return full, build_feature_extractor(full).get_weights()


def test_keras_v3_weights_file_loads(tmp_path, random_weights, trained_like_weights):
    full, expected = trained_like_weights
    path = tmp_path / "mine.weights.h5"
    full.save_weights(path)
    loaded = resolve_weights(str(path), local_copy)
    assert all(np.array_equal(a, b) for a, b in zip(loaded, expected, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(loaded, random_weights, strict=True))


def test_legacy_keras_applications_h5_loads_with_or_without_top(tmp_path, trained_like_weights):
    """The files published for keras.applications are legacy HDF5 weights, with or without the classifier."""
    import keras
    from keras.src.legacy.saving import legacy_h5_format

    full, expected = trained_like_weights
    with_top = tmp_path / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5"
    with h5py.File(with_top, "w") as handle:
        legacy_h5_format.save_weights_to_hdf5_group(handle, full)
    loaded = resolve_weights(str(with_top), local_copy)
    assert all(np.array_equal(a, b) for a, b in zip(loaded, expected, strict=True))

    no_top_model = keras.applications.MobileNetV2(include_top=False, weights=None, pooling="avg")
    no_top_model.set_weights(expected)
    no_top = tmp_path / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
    with h5py.File(no_top, "w") as handle:
        legacy_h5_format.save_weights_to_hdf5_group(handle, no_top_model)
    loaded = resolve_weights(str(no_top), local_copy)
    assert all(np.array_equal(a, b) for a, b in zip(loaded, expected, strict=True))


def test_weights_of_another_network_are_refused(tmp_path):
    import keras

    other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    path = tmp_path / "other.weights.h5"
    other.save_weights(path)
    with pytest.raises(JobError, match="does not hold MobileNetV2"):
        resolve_weights(str(path), local_copy)


def test_unreadable_weights_uri_is_a_job_error(tmp_path):
    with pytest.raises(JobError, match="cannot read weights file"):
        resolve_weights(str(tmp_path / "missing.h5"), local_copy)


def test_failed_imagenet_download_says_what_to_do(monkeypatch):
    import keras

    def offline(*args, weights=None, **kwargs):
        raise OSError("URL fetch failure: [Errno 101] Network is unreachable")

    monkeypatch.setattr(keras.applications, "MobileNetV2", offline)
    with pytest.raises(JobError) as error:
        resolve_weights("imagenet", local_copy)
    message = str(error.value)
    assert "could not download the ImageNet weights" in message
    assert "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5" in message
    assert "'random'" in message and "Network is unreachable" in message


def test_a_file_missing_some_layers_is_refused_not_half_loaded(tmp_path, trained_like_weights):
    full, _ = trained_like_weights
    path = tmp_path / "partial.weights.h5"
    full.save_weights(path)
    with h5py.File(path, "a") as handle:
        del handle["layers"]["batch_normalization_12"]
    with pytest.raises(JobError, match="does not hold MobileNetV2"):
        resolve_weights(str(path), local_copy)
