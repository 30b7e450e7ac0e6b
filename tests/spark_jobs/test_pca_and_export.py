"""The PCA and CSV jobs on Spark, from the featurise output of generated images."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fruitflow import export_csv, pca
from fruitflow.model import FEATURE_DIM


def pca_outputs(folder: Path) -> list[str]:
    """The PCA job's output flags, laid out as in a run folder."""
    return ["--output", str(folder / "pca"), "--explained-variance", str(folder / "explained_variance.json"),
            "--plot", str(folder / "explained_variance.png")]  # fmt: skip


@pytest.fixture(scope="module")
def run_folder(spark, featurised, tmp_path_factory) -> Path:
    """A run folder: the sample images' features (the featurise job's, shared), then PCA and CSV."""
    out = tmp_path_factory.mktemp("run")
    shutil.copytree(featurised / "features", out / "features")
    assert pca.main(["--features", str(out / "features"), *pca_outputs(out), "--variance", "0.9",
                     "--scatter", str(out / "pca_scatter.png"),
                     "--metrics", str(out / "metrics" / "pca.json")]) == 0  # fmt: skip
    assert export_csv.main(["--pca", str(out / "pca"), "--output", str(out / "pca_features.csv"),
                            "--metrics", str(out / "metrics" / "export_csv.json")]) == 0  # fmt: skip
    return out


@pytest.mark.spark
def test_pca_keeps_the_smallest_k_reaching_the_variance(spark, run_folder):
    report = json.loads((run_folder / "explained_variance.json").read_text())
    k = report["k"]
    cumulative = report["cumulative_explained_variance_ratio"]
    assert report["variance_threshold"] == 0.9
    assert 1 <= k < 29
    assert cumulative[k - 1] >= 0.9 > cumulative[k - 2]
    assert report["explained_variance"] == pytest.approx(cumulative[k - 1])
    assert len(report["explained_variance_ratio"]) == 29  # 30 images span at most 29 directions
    assert np.cumsum(report["explained_variance_ratio"]) == pytest.approx(cumulative)
    assert cumulative[-1] == pytest.approx(1.0)

    table = spark.read.parquet(str(run_folder / "pca"))
    assert dict(table.dtypes) == {"path": "string", "label": "string", "pca": "array<float>"}
    rows = table.collect()
    assert len(rows) == 30 and {len(row.pca) for row in rows} == {k}
    assert json.loads((run_folder / "metrics" / "pca.json").read_text())["k"] == k


@pytest.mark.spark
def test_pca_scores_match_numpy_on_the_same_features(spark, run_folder):
    features = spark.read.parquet(str(run_folder / "features")).orderBy("path").toPandas()
    scores = spark.read.parquet(str(run_folder / "pca")).orderBy("path").toPandas()
    matrix = np.stack(features["features"].to_numpy()).astype(np.float64)
    std = matrix.std(axis=0, ddof=1)
    keep = std > 1e-9 * np.abs(matrix.mean(axis=0))
    standardised = (matrix[:, keep] - matrix[:, keep].mean(axis=0)) / std[keep]
    _, singular, _ = np.linalg.svd(standardised, full_matrices=False)
    k = len(scores["pca"][0])
    expected_variance = singular[:k] ** 2 / (len(matrix) - 1)
    got = np.stack(scores["pca"].to_numpy())
    np.testing.assert_allclose(got.var(axis=0, ddof=1), expected_variance, rtol=1e-3)


@pytest.mark.spark
def test_plot_is_a_png_beside_the_pca_output(run_folder):
    png = (run_folder / "explained_variance.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5000
    assert not list(run_folder.glob(".*.crc"))
    # The PCA folder stays a readable Parquet dataset: nothing else was written inside it.
    assert {p.suffix for p in (run_folder / "pca").iterdir() if not p.name.startswith((".", "_"))} == {".parquet"}


@pytest.mark.spark
def test_the_scatter_shows_every_image_on_the_first_two_components(spark, run_folder):
    with Image.open(run_folder / "pca_scatter.png") as png:
        assert png.format == "PNG" and png.width > 600 and png.height > 400
    reduced = spark.read.parquet(str(run_folder / "pca")).toPandas()
    points = pca.scatter_points(spark, str(run_folder / "pca"), len(reduced))
    expected = sorted((row.label, row.pca[0], row.pca[1]) for row in reduced.itertuples())
    assert sorted(points.itertuples(index=False, name=None)) == expected


@pytest.mark.spark
def test_the_scatter_of_a_big_run_is_a_repeatable_sample(spark, run_folder, monkeypatch):
    monkeypatch.setattr(pca, "SCATTER_POINTS", 10)
    reduced = {(row.label, row.pca[0], row.pca[1]) for row in spark.read.parquet(str(run_folder / "pca")).collect()}
    points = pca.scatter_points(spark, str(run_folder / "pca"), 30)
    assert 0 < len(points) <= 10 and set(points.itertuples(index=False, name=None)) <= reduced
    assert points.equals(pca.scatter_points(spark, str(run_folder / "pca"), 30))


def test_the_scatter_gives_each_label_its_colour_and_draws_with_one_component():
    from fruitflow.contract import ExplainedVariance

    rng = np.random.default_rng(3)
    points = pd.DataFrame({"label": np.repeat(["Apple", "Banana", "Kiwi"], 50),
                           "pc_1": rng.normal(size=150), "pc_2": rng.normal(size=150)})  # fmt: skip

    def report(k):
        return ExplainedVariance(k=k, variance_threshold=0.9, explained_variance=0.9,
                                 explained_variance_ratio=[0.6, 0.3, 0.1],
                                 cumulative_explained_variance_ratio=[0.6, 0.9, 1.0])  # fmt: skip

    pixels = np.asarray(Image.open(io.BytesIO(pca.scatter_plot(points, report(2), 150))).convert("RGB"), np.int32)
    for colour in ("#1f77b4", "#ff7f0e", "#2ca02c"):  # matplotlib's tab10, one per label
        rgb = np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)])
        blended = 0.7 * rgb + 0.3 * 255  # the points' alpha on the white background
        assert (np.abs(pixels - blended).max(axis=2) <= 12).sum() > 50, colour
    with Image.open(io.BytesIO(pca.scatter_plot(points.drop(columns="pc_2"), report(1), 150))) as one:
        assert one.format == "PNG"


@pytest.mark.spark
def test_csv_is_one_file_with_one_numeric_column_per_component(run_folder):
    csv = run_folder / "pca_features.csv"
    assert csv.is_file()
    assert sorted(p.name for p in run_folder.iterdir() if "pca_features" in p.name) == ["pca_features.csv"]
    k = json.loads((run_folder / "explained_variance.json").read_text())["k"]
    frame = pd.read_csv(csv)
    assert list(frame.columns) == ["path", "label"] + [f"pc_{i}" for i in range(1, k + 1)]
    assert len(frame) == 30
    assert frame["path"].is_monotonic_increasing and frame["path"].is_unique
    assert all(pd.api.types.is_float_dtype(frame[f"pc_{i}"]) for i in range(1, k + 1))
    assert json.loads((run_folder / "metrics" / "export_csv.json").read_text())["rows"] == 30


@pytest.mark.spark
def test_csv_values_equal_the_pca_parquet(spark, run_folder):
    frame = pd.read_csv(run_folder / "pca_features.csv").set_index("path")
    for row in spark.read.parquet(str(run_folder / "pca")).collect():
        np.testing.assert_allclose(frame.loc[row.path].iloc[1:].to_numpy(dtype=float), row.pca, rtol=1e-6)


@pytest.mark.spark
def test_csv_parts_sorted_one_by_one_join_into_one_file_in_path_order(spark, run_folder, tmp_path, monkeypatch):
    # Each task sorts one path range of at most ROWS_PER_PART rows, never the whole table.
    joined = []

    def concatenate_parts(*args, **kwargs):
        joined.append(concatenate(*args, **kwargs))
        return joined[-1]

    concatenate = export_csv.hadoop_fs.concatenate_parts
    monkeypatch.setattr(export_csv.hadoop_fs, "concatenate_parts", concatenate_parts)
    monkeypatch.setattr(export_csv, "ROWS_PER_PART", 4)
    assert export_csv.main(["--pca", str(run_folder / "pca"), "--output", str(tmp_path / "parts.csv")]) == 0
    assert joined[0] >= 5  # 30 rows in ranges of about 4
    assert (tmp_path / "parts.csv").read_bytes() == (run_folder / "pca_features.csv").read_bytes()
    assert [path.name for path in tmp_path.iterdir()] == ["parts.csv"]


def write_features(spark, folder: Path, paths: list[str], dims: int = FEATURE_DIM, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    rows = [(path, path.split("/")[-2], rng.normal(size=dims).astype(np.float32).tolist()) for path in paths]
    frame = spark.createDataFrame(rows, "path string, label string, features array<float>")
    frame.write.mode("overwrite").parquet(str(folder))
    return str(folder)


@pytest.mark.spark
def test_csv_quotes_awkward_names_so_pandas_reads_them_back(spark, tmp_path):
    awkward = ['s3://b/Apple, "Red"/x.jpg', "s3://b/Kiwi/plain.jpg", "s3://b/Pêche/é, è.jpg"]
    features = write_features(spark, tmp_path / "features", awkward)
    assert pca.main(["--features", features, *pca_outputs(tmp_path)]) == 0
    assert export_csv.main(["--pca", str(tmp_path / "pca"), "--output", str(tmp_path / "out.csv")]) == 0
    frame = pd.read_csv(tmp_path / "out.csv")
    assert sorted(frame["path"]) == sorted(awkward)
    assert set(frame["label"]) == {'Apple, "Red"', "Kiwi", "Pêche"}


@pytest.mark.spark
def test_the_python_workers_get_batches_of_at_most_rows_per_batch(spark, tmp_path, monkeypatch):
    # Spark's default of 10,000 rows per batch made each worker hold 400 MB on 90,000 images.
    cap = 16
    partition_moments = pca._partition_moments

    def moments_of_capped_batches(batches):
        def checked():
            for batch in batches:
                if len(batch) > cap:
                    raise ValueError(f"a batch of {len(batch)} rows")
                yield batch

        return partition_moments(checked())

    monkeypatch.setattr(pca, "_partition_moments", moments_of_capped_batches)
    features = write_features(spark, tmp_path / "features", [f"s3://b/C{i % 3}/{i}.jpg" for i in range(100)], dims=8)
    monkeypatch.setattr(pca, "ROWS_PER_BATCH", cap)
    assert pca.main(["--features", features, *pca_outputs(tmp_path), "--metrics", str(tmp_path / "pca.json")]) == 0
    assert json.loads((tmp_path / "pca.json").read_text())["images"] == 100
    monkeypatch.setattr(pca, "ROWS_PER_BATCH", 10_000)  # the check itself is in force
    with pytest.raises(Exception, match="a batch of 50 rows"):
        pca.main(["--features", features, *pca_outputs(tmp_path)])


@pytest.mark.spark
def test_the_driver_merges_one_partial_per_core_however_many_files_the_features_have(spark, tmp_path, monkeypatch):
    # Each partial is a d x d matrix the driver holds until all are merged: one per Parquet split
    # made their number, and the driver's heap, grow with the bucket.
    paths = [f"s3://b/C{i % 3}/{i}.jpg" for i in range(120)]
    folder = tmp_path / "features"
    spark.read.parquet(write_features(spark, tmp_path / "one", paths, dims=8)).repartition(12).write.parquet(
        str(folder)
    )
    loaded = []
    load_moments = pca._load_moments
    monkeypatch.setattr(pca, "_load_moments", lambda blob: loaded.append(blob) or load_moments(blob))
    splits = {"spark.sql.files.maxPartitionBytes": "1024", "spark.sql.files.openCostInBytes": "0"}
    before = {key: spark.conf.get(key) for key in splits}
    try:
        for key, value in splits.items():
            spark.conf.set(key, value)
        assert spark.read.parquet(str(folder)).rdd.getNumPartitions() >= 12  # a split per file at least
        arguments = ["--features", str(folder), *pca_outputs(tmp_path), "--metrics", str(tmp_path / "pca.json")]
        assert pca.main(arguments) == 0
    finally:
        for key, value in before.items():
            spark.conf.set(key, value)
    assert len(loaded) == spark.sparkContext.defaultParallelism == 2
    assert json.loads((tmp_path / "pca.json").read_text())["images"] == 120


@pytest.mark.spark
def test_fewer_images_than_dimensions_work(spark, tmp_path):
    features = write_features(spark, tmp_path / "features", [f"s3://b/C{i % 2}/{i}.jpg" for i in range(5)])
    assert pca.main(["--features", features, *pca_outputs(tmp_path), "--variance", "1.0"]) == 0
    report = json.loads((tmp_path / "explained_variance.json").read_text())
    assert report["k"] == 4 and len(report["explained_variance_ratio"]) == 4


@pytest.mark.spark
def test_one_image_is_refused_with_a_message(spark, tmp_path, capsys):
    features = write_features(spark, tmp_path / "features", ["s3://b/A/only.jpg"])
    assert pca.main(["--features", features, *pca_outputs(tmp_path)]) == 1
    assert "PCA needs at least 2 images, found 1" in capsys.readouterr().err
    assert not (tmp_path / "pca").exists()


@pytest.mark.spark
def test_missing_features_are_refused_with_a_message(spark, tmp_path, capsys):
    assert pca.main(["--features", str(tmp_path / "none"), *pca_outputs(tmp_path)]) == 1
    assert "run featurize first" in capsys.readouterr().err


@pytest.mark.parametrize("variance", ["0", "1.5", "-0.2", "ninety"])
def test_variance_outside_zero_one_exits_with_usage(variance, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        pca.main(["--features", str(tmp_path), *pca_outputs(tmp_path), "--variance", variance])
    assert exit_info.value.code == 2
    assert "--variance" in capsys.readouterr().err


@pytest.mark.spark
def test_export_refuses_a_folder_that_is_not_a_pca_output(spark, tmp_path, capsys):
    features = write_features(spark, tmp_path / "features", ["s3://b/A/1.jpg", "s3://b/A/2.jpg"])
    assert export_csv.main(["--pca", features, "--output", str(tmp_path / "x.csv")]) == 1
    assert "is not a pca output" in capsys.readouterr().err
    assert not (tmp_path / "x.csv").exists()


@pytest.mark.spark
def test_vectors_of_unequal_length_are_refused(spark, tmp_path, capsys):
    rows = [
        ("s3://b/A/1.jpg", "A", [1.0, 2.0, 3.0]),
        ("s3://b/A/2.jpg", "A", [1.0, 2.0]),
        ("s3://b/A/3.jpg", "A", [0.0, 1.0, 5.0]),
    ]
    spark.createDataFrame(rows, "path string, label string, features array<float>").write.parquet(str(tmp_path / "f"))
    assert pca.main(["--features", str(tmp_path / "f"), *pca_outputs(tmp_path)]) == 1
    assert "differ in length (2 to 3)" in capsys.readouterr().err

    ragged = [(path, label, values) for path, label, values in rows]
    spark.createDataFrame(ragged, "path string, label string, pca array<float>").write.parquet(str(tmp_path / "p"))
    assert export_csv.main(["--pca", str(tmp_path / "p"), "--output", str(tmp_path / "x.csv")]) == 1
    assert "differ in length (2 to 3)" in capsys.readouterr().err
    assert not (tmp_path / "x.csv").exists()
    assert [p.name for p in tmp_path.iterdir() if "x.csv" in p.name] == []
