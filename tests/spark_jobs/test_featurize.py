"""The featurise job: batching, the Keras-equivalence of its features, and losing no file."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fruitflow import featurize
from fruitflow.featurize import featurize_contents
from fruitflow.model import FEATURE_DIM
from fruitflow.onnx_model import OnnxFeatureExtractor
from fruitflow.sample_images import FRUITS


def jpeg_bytes(color=(200, 30, 30), size=(60, 60)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="JPEG")
    return buffer.getvalue()


def test_contents_are_featurised_in_order_and_in_bounded_batches():
    batch_sizes = []

    def fake_extract(pixels: np.ndarray) -> np.ndarray:
        batch_sizes.append(len(pixels))
        return pixels.mean(axis=(1, 2))  # (n, 3): one "feature" per colour channel

    contents = [jpeg_bytes((10 * i, 0, 0)) for i in range(7)]
    contents.insert(3, b"broken")
    features, errors = featurize_contents(contents, fake_extract, batch_size=3)

    assert batch_sizes == [3, 3, 1]
    assert errors[3].startswith("cannot decode image") and features[3] is None
    good = [f for f in features if f is not None]
    assert len(good) == 7 and all(e is None for i, e in enumerate(errors) if i != 3)
    red = [round(float(f[0]) / 10) for f in good]
    assert red == list(range(7))  # each result went back to its own row


def test_a_batch_of_only_broken_files_never_reaches_the_model():
    def must_not_run(pixels):
        raise AssertionError("the model ran on nothing")

    features, errors = featurize_contents([b"", b"junk"], must_not_run, batch_size=4)
    assert features == [None, None]
    assert errors[0] == "empty file (0 bytes)" and errors[1].startswith("cannot decode")


def run_featurize(folder: Path, out: Path, *extra: str) -> int:
    return featurize.main(
        [
            "--images", str(folder),
            "--output", str(out / "features"),
            "--errors", str(out / "errors"),
            "--weights", "random",
            "--metrics", str(out / "metrics" / "featurize.json"),
            *extra,
        ]
    )  # fmt: skip


@pytest.mark.spark
def test_every_image_gets_a_1280_float_embedding_and_its_label(spark, featurised, fruit_images):
    table = spark.read.parquet(str(featurised / "features"))
    assert dict(table.dtypes) == {
        "path": "string", "label": "string", "features": "array<float>",
        "length": "bigint", "modification_time": "timestamp",  # what the next run compares to carry rows over
    }  # fmt: skip
    rows = table.collect()
    assert len(rows) == 30
    assert {row.label for row in rows} == {fruit.name for fruit in FRUITS}
    for row in rows:
        assert row.path.startswith("file:/") and row.path.endswith(".jpg")
        assert Path(row.path.removeprefix("file:")).parent.name == row.label
        assert len(row.features) == FEATURE_DIM
        assert np.isfinite(row.features).all()
    assert spark.read.parquet(str(featurised / "errors")).count() == 0


@pytest.mark.spark
def test_the_network_runs_once_per_image_and_the_summary_says_so(featurised):
    metrics = json.loads((featurised / "metrics" / "featurize.json").read_text())
    assert metrics["images"] == metrics["featurised"] == 30
    assert metrics["errors"] == 0
    # Two outputs are written from one evaluation: the UDF saw each image exactly once.
    assert metrics["model_rows"] == 30
    assert metrics["weights"] == "random" and metrics["seconds"] > 0


@pytest.fixture(scope="module")
def odd_modes_folder(tmp_path_factory, fruit_images) -> Path:
    """Real sample images re-saved in the modes photos arrive in: grey, palette, alpha, CMYK, 16-bit."""
    folder = tmp_path_factory.mktemp("modes")
    (folder / "Mixed").mkdir()
    sources = sorted((fruit_images / "Training").rglob("*.jpg"))
    rgb = [Image.open(path).convert("RGB") for path in sources[:7]]
    rgb[0].save(folder / "Mixed" / "rgb.jpg")
    rgb[1].convert("L").save(folder / "Mixed" / "grey.png")
    rgb[2].convert("P").save(folder / "Mixed" / "palette.png")
    rgb[3].convert("RGBA").save(folder / "Mixed" / "alpha.png")
    rgb[4].convert("CMYK").save(folder / "Mixed" / "cmyk.jpg")
    rgb[5].convert("LA").save(folder / "Mixed" / "grey-alpha.png")
    deep = (np.asarray(rgb[6].convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    Image.fromarray(deep).save(folder / "Mixed" / "sixteen-bit.png")  # mode I;16
    return folder


@pytest.fixture(scope="module")
def keras_features(odd_modes_folder) -> dict[str, np.ndarray]:
    """The reference: Keras' own MobileNetV2 and preprocessing, as in the reference notebook, on
    the same decoded pixels; each image's features by its URI."""
    import keras
    from keras.applications.mobilenet_v2 import preprocess_input

    from fruitflow.images import decode_image
    from fruitflow.model import RANDOM_WEIGHTS_SEED

    keras.utils.set_random_seed(RANDOM_WEIGHTS_SEED)
    full = keras.applications.MobileNetV2(weights=None, include_top=True, input_shape=(224, 224, 3))
    reference = keras.Model(full.inputs, full.layers[-2].output)
    paths = sorted((odd_modes_folder / "Mixed").iterdir())
    pixels = np.stack([keras.utils.img_to_array(decode_image(path.read_bytes()).resize((224, 224))) for path in paths])
    expected = reference.predict(preprocess_input(pixels), verbose=0)
    return {f"file:{path}": vector for path, vector in zip(paths, expected, strict=True)}


@pytest.mark.spark
@pytest.mark.parametrize("engine", ["onnx", "tensorflow"])
def test_both_engines_equal_an_in_process_keras_predict(
    spark, odd_modes_folder, keras_features, tmp_path, engine, monkeypatch, job_log
):
    """Both engines' features are Keras' (keras_features) within 1e-4 of the largest feature.
    Run as by hand, without --model-cache: the onnx engine keeps its model in the per-user cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user-cache"))
    assert run_featurize(odd_modes_folder, tmp_path, "--engine", engine) == 0
    per_user = tmp_path / "user-cache" / "fruitflow" / "models"
    if engine == "onnx":
        assert f"model cache: none given, so the per-user folder {per_user.as_uri()}" in job_log.text
        assert "model cache: stored" in job_log.text
        assert sorted(path.suffix for path in per_user.iterdir()) == [".json", ".onnx"]
    else:
        assert not per_user.exists()  # TensorFlow runs the weights as they are: nothing to keep
    metrics = json.loads((tmp_path / "metrics" / "featurize.json").read_text())
    assert (metrics["engine"], metrics["featurised"], metrics["errors"]) == (engine, 7, 0)

    rows = spark.read.parquet(str(tmp_path / "features")).orderBy("path").collect()
    assert sorted(row.path for row in rows) == sorted(keras_features)
    expected = np.stack([keras_features[row.path] for row in rows])
    actual = np.array([row.features for row in rows])

    scale = np.abs(expected).max()
    assert scale > 0
    assert np.abs(actual - expected).max() <= 1e-4 * scale
    # And the images really differ: matching one constant vector would prove nothing.
    assert np.abs(expected[0] - expected[1]).max() > 1e-3 * scale


@pytest.mark.spark
def test_model_cache_on_a_hadoop_uri_serves_the_next_run(
    spark, fruit_images, tmp_path, job_log, featurised, model_cache
):
    images = tmp_path / "images"  # a class of the samples: the cache holds one model whatever the images
    shutil.copytree(fruit_images / "Training" / "Lemon", images / "Lemon")
    cache = f"file://{tmp_path / 'results' / '_models'}"
    assert run_featurize(images, tmp_path / "cold", "--model-cache", cache) == 0
    assert "model cache: stored" in job_log.text
    job_log.clear()
    assert run_featurize(images, tmp_path / "warm", "--model-cache", cache) == 0
    assert "model cache: using" in job_log.text and "converted MobileNetV2" not in job_log.text
    assert sorted(path.suffix for path in (tmp_path / "results" / "_models").iterdir()) == [".json", ".onnx"]
    cold, warm = (
        {row.path: row.features for row in spark.read.parquet(str(tmp_path / run / "features")).collect()}
        for run in ("cold", "warm")
    )
    assert cold == warm and len(cold) == 3
    # Converted afresh: the same network as the shared cache's conversion of the same weights (the
    # featurised fixture's), as a rebuilt cache entry must be.
    (fresh,) = (tmp_path / "results" / "_models").glob("*.onnx")
    shared = Path(model_cache.removeprefix("file://")) / fresh.name
    pixels = np.random.default_rng(3).uniform(0, 255, (2, 224, 224, 3)).astype(np.float32)
    expected = OnnxFeatureExtractor(shared.read_bytes(), threads=1)(pixels)
    assert np.allclose(
        OnnxFeatureExtractor(fresh.read_bytes(), threads=1)(pixels),
        expected,
        rtol=0,
        atol=1e-6 * np.abs(expected).max(),
    )


@pytest.mark.spark
def test_progress_lines_reach_the_job_log(featurised):
    lines = [line for line in (featurised / "job.log").read_text().splitlines() if "featurize progress: " in line]
    assert "featurize progress: 30/30 images (100%)" in lines[-1] and lines[-1].endswith(", done")
    assert [line for line in lines if line.endswith("done")] == [lines[-1]]  # "done" only once it is


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory, fruit_images, bomb_png) -> tuple[Path, dict[str, str]]:
    """Good and broken files side by side: the folder, and file name -> expected outcome."""
    folder = tmp_path_factory.mktemp("mixed")
    good = sorted((fruit_images / "Training" / "Banana").glob("*.jpg"))
    outcomes = {}

    def put(relative: str, content: bytes, outcome: str):
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        outcomes[relative] = outcome

    put("Banana/good 1.jpg", good[0].read_bytes(), "features")
    put("Banana/UPPER.JPG", good[1].read_bytes(), "features")
    put("Banana/also.Jpeg", good[2].read_bytes(), "features")
    rgba = io.BytesIO()
    Image.new("RGBA", (80, 80), (20, 200, 20, 128)).save(rgba, format="PNG")
    put("Pêche Jaune/transparent.png", rgba.getvalue(), "features")
    noise = Image.fromarray(np.random.default_rng(2).integers(0, 256, (1200, 1200, 3), dtype=np.uint8))
    large = io.BytesIO()
    noise.save(large, format="JPEG", quality=95)
    assert large.tell() > 1024 * 1024  # larger than a memory page of the jobs' session (SESSION_DEFAULTS)
    put("Banana/large.jpg", large.getvalue(), "features")
    put("deep/er/Kiwi/nested.jpg", good[0].read_bytes(), "features")
    put("Banana/empty.jpg", b"", "empty file")
    put("Banana/truncated.jpg", good[0].read_bytes()[:300], "cannot decode image")
    put("Banana/random.png", np.random.default_rng(1).bytes(5000), "cannot decode image")
    put("Banana/bomb.png", bomb_png, "decompression bomb")
    put("Banana/notes.txt", b"not an image, not matched", "ignored")
    put("Banana/.DS_Store", b"\x00\x00\x00\x01Bud1", "ignored")
    put("Banana/photo.jpg.bak", good[0].read_bytes(), "ignored")
    return folder, outcomes


@pytest.mark.spark
def test_mixed_folder_loses_no_file(spark, mixed_folder, tmp_path, model_cache):
    folder, outcomes = mixed_folder
    assert run_featurize(folder, tmp_path, "--model-cache", model_cache) == 0
    features = {row.path: row for row in spark.read.parquet(str(tmp_path / "features")).collect()}
    errors = {row.path: row for row in spark.read.parquet(str(tmp_path / "errors")).collect()}

    def uri(relative):
        return f"file:{folder / relative}"

    matched = {name: outcome for name, outcome in outcomes.items() if outcome != "ignored"}
    assert set(features) | set(errors) == {uri(name) for name in matched}
    assert not set(features) & set(errors)
    for name, outcome in matched.items():
        if outcome == "features":
            assert len(features[uri(name)].features) == FEATURE_DIM, name
        else:
            assert outcome in errors[uri(name)].error, (name, errors[uri(name)].error)
            assert errors[uri(name)].label == Path(name).parent.name
    assert features[uri("Pêche Jaune/transparent.png")].label == "Pêche Jaune"

    metrics = json.loads((tmp_path / "metrics" / "featurize.json").read_text())
    assert (metrics["images"], metrics["featurised"], metrics["errors"]) == (len(matched), 6, 4)


@pytest.mark.spark
def test_the_networks_results_are_kept_on_disk_never_in_the_heap(
    spark, fruit_images, tmp_path, model_cache, monkeypatch
):
    # Their second reading (the counts, the errors) once made the heap hold them: a 1 GB driver
    # ran out of memory on 90,000 images. What is persisted while the outputs are written shows it.
    persisted = []
    write_outputs = featurize.load_outputs

    def load_outputs_then_look(session, *args):
        counts = write_outputs(session, *args)
        storage = session.sparkContext._jsc.sc().getRDDStorageInfo()
        persisted.extend((info.name(), info.memSize(), info.diskSize()) for info in storage)
        return counts

    monkeypatch.setattr(featurize, "load_outputs", load_outputs_then_look)
    assert run_featurize(fruit_images, tmp_path, "--model-cache", model_cache) == 0

    (results,) = [(memory, disk) for name, memory, disk in persisted if "featurize_images" in name]
    assert results[0] == 0 and results[1] > 30 * FEATURE_DIM  # 30 images' features, all on disk


@pytest.mark.spark
def test_rerun_replaces_the_previous_outputs(spark, fruit_images, tmp_path, model_cache):
    few = tmp_path / "few"
    shutil.copytree(fruit_images / "Training" / "Lemon", few / "Lemon")
    assert run_featurize(fruit_images, tmp_path / "out", "--model-cache", model_cache) == 0
    assert run_featurize(few, tmp_path / "out", "--model-cache", model_cache) == 0
    assert spark.read.parquet(str(tmp_path / "out" / "features")).count() == 3


@pytest.mark.spark
def test_missing_folder_is_a_readable_error(spark, tmp_path, capsys):
    assert run_featurize(tmp_path / "nowhere", tmp_path / "out") == 1
    assert f"featurize: error: images folder {tmp_path / 'nowhere'} does not exist" in capsys.readouterr().err


@pytest.mark.spark
def test_folder_without_images_is_a_readable_error(spark, tmp_path, capsys):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "readme.txt").write_text("no pictures here")
    assert run_featurize(tmp_path / "docs", tmp_path / "out") == 1
    message = capsys.readouterr().err
    assert "no images found under" in message and ".jpg" in message


@pytest.mark.parametrize("bad", [["--batch-size", "0"], ["--partitions", "-2"], ["--batch-size", "many"]])
def test_bad_numbers_exit_with_usage(bad, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_featurize(tmp_path, tmp_path / "out", *bad)
    assert exit_info.value.code == 2
    assert "usage: featurize.py" in capsys.readouterr().err


@pytest.mark.spark
def test_weights_that_are_not_a_keras_file_are_refused(spark, fruit_images, tmp_path, capsys):
    weights = tmp_path / "weights.bin"
    weights.write_bytes(b"nope")
    code = featurize.main(
        ["--images", str(fruit_images), "--output", str(tmp_path / "f"), "--errors", str(tmp_path / "e"),
         "--weights", str(weights)]
    )  # fmt: skip
    assert code == 1
    assert "must be 'imagenet', 'random' or a Keras weights file ending in .h5" in capsys.readouterr().err


def featurise_first_run(fruit_images: Path, folder: Path, model_cache: str) -> tuple[Path, Path]:
    """A copy of the sample images with one undecodable file, featurised once: (images, outputs)."""
    images = folder / "images"
    shutil.copytree(fruit_images / "Training", images)
    (images / "Kiwi" / "truncated.jpg").write_bytes((images / "Kiwi" / "0_100.jpg").read_bytes()[:300])
    assert run_featurize(images, folder / "first", "--model-cache", model_cache) == 0
    return images, folder / "first"


@pytest.fixture
def first_run(spark, fruit_images, tmp_path, model_cache) -> tuple[Path, Path]:
    """A first run whose images the test may change."""
    return featurise_first_run(fruit_images, tmp_path, model_cache)


@pytest.fixture(scope="module")
def shared_first_run(spark, fruit_images, tmp_path_factory, model_cache) -> tuple[Path, Path]:
    """A first run for the tests that change neither its images nor its outputs."""
    return featurise_first_run(fruit_images, tmp_path_factory.mktemp("first-run"), model_cache)


def rows_by_path(spark, folder: Path) -> dict:
    return {row.path: row for row in spark.read.parquet(str(folder)).collect()}


def png_bytes(color: tuple[int, int, int]) -> bytes:
    """A valid image of under 100 bytes: smaller than any generated JPEG, the truncated one included."""
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def unread_above(spark):
    """Fail any read of a file's bytes above a size, as binaryFile does past its maxLength."""
    setting = "spark.sql.sources.binaryFile.maxLength"

    def limit(length: int) -> None:
        spark.conf.set(setting, str(length))

    yield limit
    spark.conf.unset(setting)


@pytest.mark.spark
def test_unchanged_images_keep_their_rows_and_only_new_or_changed_ones_are_featurised(
    spark, first_run, tmp_path, job_log, model_cache, unread_above
):
    images, first = first_run
    for index in range(2):
        (images / "Kiwi" / f"new {index}.png").write_bytes(png_bytes((20, 200 - 50 * index, 90)))  # new: 2
    replaced = images / "Lemon" / sorted(path.name for path in (images / "Lemon").glob("*.jpg"))[0]
    replaced.write_bytes(png_bytes((250, 240, 20)))  # changed: other content, another size and time
    removed = sorted((images / "Pear").glob("*.jpg"))[0]
    removed.unlink()  # removed: 1
    # Every unchanged file (the truncated one is the smallest, 300 bytes) is too big to be read: the
    # run can only succeed if the plan comes from the listing and only the changed files are read.
    unread_above(200)

    previous = ["--previous-features", str(first / "features"), "--previous-errors", str(first / "errors")]
    assert run_featurize(images, tmp_path / "second", "--model-cache", model_cache, *previous) == 0

    metrics = json.loads((tmp_path / "second" / "metrics" / "featurize.json").read_text())
    current = 30 + 1 + 2 - 1  # the samples, the truncated file, new, removed
    assert (metrics["images"], metrics["featurised"], metrics["errors"]) == (current, current - 1, 1)
    assert (metrics["new"], metrics["changed"], metrics["removed"], metrics["reused"]) == (2, 1, 1, current - 3)
    assert metrics["model_rows"] == 3  # exactly the new and the changed images went through the network
    assert "2 new and 1 changed go through the network, 1 removed" in job_log.text

    before, after = rows_by_path(spark, first / "features"), rows_by_path(spark, tmp_path / "second" / "features")
    on_disk = {f"file:{path}" for path in images.rglob("*.*g") if path.name != "truncated.jpg"}
    assert set(after) == on_disk  # the removed image is gone, the new ones are there
    unchanged = on_disk - {f"file:{replaced}"} - {f"file:{images / 'Kiwi' / f'new {i}.png'}" for i in range(2)}
    for path in unchanged:  # carried over bit for bit
        assert (
            np.array(after[path].features, np.float32).tobytes()
            == np.array(before[path].features, np.float32).tobytes()
        )
        assert (after[path].length, after[path].modification_time) == (
            before[path].length,
            before[path].modification_time,
        )
    assert after[f"file:{replaced}"].features != before[f"file:{replaced}"].features
    errors = rows_by_path(spark, tmp_path / "second" / "errors")
    assert list(errors) == [f"file:{images / 'Kiwi' / 'truncated.jpg'}"]  # kept, not retried
    assert json.loads((tmp_path / "second" / "features" / "_model.json").read_text())["engine"] == "onnx"


@pytest.mark.spark
def test_features_of_another_engine_are_computed_again_and_the_log_says_why(spark, shared_first_run, tmp_path, job_log):
    images, first = shared_first_run
    previous = ["--previous-features", str(first / "features"), "--previous-errors", str(first / "errors")]
    assert run_featurize(images, tmp_path / "tf", "--engine", "tensorflow", *previous) == 0
    metrics = json.loads((tmp_path / "tf" / "metrics" / "featurize.json").read_text())
    assert (metrics["reused"], metrics["model_rows"]) == (0, 31)
    assert (
        "previous features were computed otherwise (engine onnx -> tensorflow): featurising every image" in job_log.text
    )


@pytest.mark.spark
def test_openvino_computes_every_image_again_and_equals_onnx_runtimes_features(
    spark, shared_first_run, tmp_path, job_log, model_cache
):
    """Switching to openvino recomputes the ONNX Runtime run's rows (the engine is in the features'
    identity), from the same cached model, and each image's features equal ONNX Runtime's within
    1e-5 of the largest feature."""
    images, first = shared_first_run
    previous = ["--previous-features", str(first / "features"), "--previous-errors", str(first / "errors")]
    assert run_featurize(images, tmp_path / "ov", "--engine", "openvino", "--model-cache", model_cache, *previous) == 0
    metrics = json.loads((tmp_path / "ov" / "metrics" / "featurize.json").read_text())
    assert (metrics["engine"], metrics["reused"], metrics["model_rows"]) == ("openvino", 0, 31)
    assert "previous features were computed otherwise (engine onnx -> openvino)" in job_log.text
    assert "model cache: using" in job_log.text and "converted MobileNetV2" not in job_log.text
    assert json.loads((tmp_path / "ov" / "features" / "_model.json").read_text())["engine"] == "openvino"

    onnx, openvino = rows_by_path(spark, first / "features"), rows_by_path(spark, tmp_path / "ov" / "features")
    assert sorted(openvino) == sorted(onnx) and len(onnx) == 30
    expected = np.array([onnx[path].features for path in sorted(onnx)])
    actual = np.array([openvino[path].features for path in sorted(onnx)])
    scale = np.abs(expected).max()
    assert np.abs(actual - expected).max() <= 1e-5 * scale
    assert np.abs(expected[0] - expected[1]).max() > 1e-3 * scale


@pytest.mark.spark
def test_outputs_without_a_model_identity_are_not_trusted(spark, shared_first_run, tmp_path, job_log, model_cache):
    images, shared = shared_first_run
    first = tmp_path / "first"
    shutil.copytree(shared, first)  # the rows name the images, wherever the outputs are
    (first / "features" / "_model.json").unlink()  # as written before change detection existed
    previous = ["--previous-features", str(first / "features"), "--previous-errors", str(first / "errors")]
    assert run_featurize(images, tmp_path / "again", "--model-cache", model_cache, *previous) == 0
    metrics = json.loads((tmp_path / "again" / "metrics" / "featurize.json").read_text())
    assert (metrics["reused"], metrics["model_rows"]) == (0, 31)
    assert "previous outputs unusable" in job_log.text


@pytest.mark.spark
def test_previous_outputs_come_in_pairs(fruit_images, tmp_path, capsys):
    assert run_featurize(fruit_images, tmp_path, "--previous-features", str(tmp_path / "features")) == 1
    assert "give --previous-features and --previous-errors together" in capsys.readouterr().err


@pytest.mark.spark
def test_features_of_other_weights_are_computed_again(spark, shared_first_run, tmp_path, job_log):
    import keras

    from fruitflow.model import build_classifier

    images, first = shared_first_run
    keras.utils.set_random_seed(99)
    weights = tmp_path / "other.weights.h5"
    build_classifier().save_weights(str(weights))
    previous = ["--previous-features", str(first / "features"), "--previous-errors", str(first / "errors")]
    assert run_featurize(images, tmp_path / "other", "--weights", str(weights), *previous) == 0
    metrics = json.loads((tmp_path / "other" / "metrics" / "featurize.json").read_text())
    assert (metrics["reused"], metrics["model_rows"]) == (0, 31)
    assert "previous features were computed otherwise (weights_digest " in job_log.text


@pytest.mark.parametrize(
    ("given", "master", "environ", "expected"),
    [
        ("s3://b/results/_models", "yarn", {}, "s3://b/results/_models"),
        ("file:///srv/models", "local[2]", {"XDG_CACHE_HOME": "/xdg"}, "file:///srv/models"),
        (None, "local[*]", {}, "file:///home/ann/.cache/fruitflow/models"),
        (None, "local[2]", {"XDG_CACHE_HOME": "/xdg"}, "file:///xdg/fruitflow/models"),
        (None, "local", {"XDG_CACHE_HOME": ""}, "file:///home/ann/.cache/fruitflow/models"),  # empty: unset (XDG)
        (None, "yarn", {"XDG_CACHE_HOME": "/xdg"}, None),  # a transient cluster's disks go with it
        ("none", "local[*]", {"XDG_CACHE_HOME": "/xdg"}, None),
    ],
)
def test_a_job_without_a_model_cache_keeps_its_model_per_user_on_a_local_master(given, master, environ, expected):
    assert featurize.model_cache_folder(given, master, environ, Path("/home/ann")) == expected


@pytest.mark.spark
def test_model_cache_none_converts_every_run_and_says_so(spark, job_log):
    assert featurize.model_cache(spark, "none") is None
    assert "model cache: none (--model-cache none): the network is converted on every run" in job_log.text


def keys(*rows: tuple) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["path", "length", "modification_time", "output"][: len(rows[0])])
    frame["modification_time"] = pd.to_datetime(frame["modification_time"], format="ISO8601")
    return frame


def test_the_reuse_plan_comes_from_the_listing_and_the_previous_keys_alone():
    listing = keys(
        ("a", 10, "2026-11-01 02:00:00"),  # unchanged, featurised before
        ("b", 11, "2026-11-01 02:00:00"),  # unchanged, an error row before
        ("c", 99, "2026-11-01 02:00:00"),  # another size
        ("d", 13, "2026-11-02 02:00:00.000001"),  # another modification time, a microsecond later
        ("e", 14, "2026-11-02 02:00:00"),  # new
    )
    previous = keys(
        ("a", 10, "2026-11-01 02:00:00", "features"),
        ("b", 11, "2026-11-01 02:00:00", "errors"),
        ("c", 12, "2026-11-01 02:00:00", "features"),
        ("d", 13, "2026-11-02 02:00:00", "errors"),
        ("empty", 0, "2026-11-01 02:00:00", "errors"),  # still listed, skipped by the scan: not removed
        ("gone", 15, "2026-11-01 02:00:00", "features"),  # removed
    )
    plan = featurize.plan_reuse(listing, ["a", "b", "c", "d", "e", "empty"], previous)
    assert plan == featurize.ReusePlan(
        to_read=["c", "d", "e"], reused_features=1, reused_errors=1, new=1, changed=2, removed=1
    )
    assert plan.reused == 2


ODD_NAMES = ["apple [2].jpg", "a*b?.jpg", "x{y,z}.jpg", "back\\slash.jpg", "grüne é%20.jpg", "plain.jpg"]


@pytest.mark.spark
def test_files_are_read_by_their_literal_names_and_one_deleted_since_the_listing_is_left_out(spark, tmp_path):
    for name in ODD_NAMES:
        (tmp_path / name).write_bytes(jpeg_bytes())
    (tmp_path / "a.jpg").write_bytes(jpeg_bytes())  # what a glob "a*b?.jpg" or "x{y,z}.jpg" would also catch
    listed = {row.path for row in featurize.read_images(spark, str(tmp_path), 2).select("path").collect()}
    wanted = sorted(path for path in listed if not path.endswith("/a.jpg"))
    assert len(wanted) == len(ODD_NAMES)

    read = featurize.read_files(spark, wanted, 2)
    assert sorted(row.path for row in read.select("path").collect()) == wanted  # the listing's own spelling

    (tmp_path / "plain.jpg").unlink()
    after_a_deletion = featurize.read_files(spark, wanted, 2)
    assert sorted(row.path for row in after_a_deletion.select("path").collect()) == [
        path for path in wanted if not path.endswith("/plain.jpg")
    ]
    assert featurize.read_files(spark, [], 2).count() == 0
