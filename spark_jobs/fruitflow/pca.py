"""PCA job: standardise the embeddings, fit PCA once, keep the components that explain --variance.

The fit is one distributed pass: each partition summarises its rows as (count, mean,
centred scatter matrix), the driver merges the summaries pairwise and diagonalises the
1280 x 1280 correlation matrix with numpy. Projection is a second pass over the same
rows, persisted on disk, so the features are read from Parquet once and never recomputed.

Extract: the features Parquet. Transform: fit, then project. Load: the reduced Parquet, the
explained-variance JSON and its plot, and the scatter of the first two components.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import reduce

import numpy as np
import pandas as pd

from fruitflow import hadoop_fs
from fruitflow.cli import JobError, run_job
from fruitflow.contract import ExplainedVariance, PcaArguments, PcaMetrics

ARGUMENTS = PcaArguments


@dataclass(frozen=True)
class Moments:
    """Count, mean and centred scatter matrix sum((x - mean)(x - mean)^T) of a set of rows."""

    count: int
    mean: np.ndarray
    scatter: np.ndarray

    @classmethod
    def of(cls, rows: np.ndarray) -> Moments:
        rows = np.asarray(rows, dtype=np.float64)
        mean = rows.mean(axis=0)
        centred = rows - mean
        return cls(len(rows), mean, centred.T @ centred)

    def merge(self, other: Moments) -> Moments:
        """Pairwise combination (Chan et al.), exact and stable without a second pass."""
        if other.count == 0:
            return self
        if self.count == 0:
            return other
        count = self.count + other.count
        delta = other.mean - self.mean
        mean = self.mean + delta * (other.count / count)
        scatter = self.scatter + other.scatter + np.outer(delta, delta) * (self.count * other.count / count)
        return Moments(count, mean, scatter)


@dataclass(frozen=True)
class PcaFit:
    mean: np.ndarray
    scale: np.ndarray
    components: np.ndarray  # (dimensions, k)
    explained_ratio: np.ndarray  # every component with variance, in decreasing order

    @property
    def k(self) -> int:
        return self.components.shape[1]


def choose_k(explained_ratio: np.ndarray, variance: float) -> int:
    """Smallest number of leading components whose cumulative explained share reaches ``variance``."""
    cumulative = np.cumsum(explained_ratio)
    reached = np.flatnonzero(cumulative >= variance - 1e-9)  # float sums of ratios fall just short of 1.0
    return int(reached[0]) + 1 if len(reached) else len(explained_ratio)


def fit_pca(moments: Moments, variance: float) -> PcaFit:
    """PCA of the standardised rows (unit-variance columns: the eigenproblem of the correlation matrix)."""
    if moments.count < 2:
        raise JobError(f"PCA needs at least 2 images, found {moments.count}")
    std = np.sqrt(np.diag(moments.scatter) / (moments.count - 1))
    # A constant column carries no variance, but rounding leaves it a std of ~1e-16 x its mean,
    # which standardising would blow up to unit variance: pin it at zero instead.
    constant = std <= 1e-9 * np.abs(moments.mean)
    scale = np.where(constant, 1.0, std)
    covariance = np.where(constant[:, None] | constant[None, :], 0.0, moments.scatter / (moments.count - 1))
    correlation = covariance / np.outer(scale, scale)
    eigenvalues, eigenvectors = np.linalg.eigh(correlation)
    order = np.argsort(eigenvalues)[::-1]
    eigenvalues = np.clip(eigenvalues[order], 0.0, None)
    eigenvectors = eigenvectors[:, order]
    total = eigenvalues.sum()
    if total <= 0:
        raise JobError("every feature is constant across the images: nothing for PCA to explain")
    rank = min(moments.count - 1, len(eigenvalues))
    explained_ratio = eigenvalues[:rank] / total
    k = choose_k(explained_ratio, variance)
    components = eigenvectors[:, :k]
    # An eigenvector's sign is arbitrary; fix it so reruns on the same data give the same columns.
    signs = np.sign(components[np.abs(components).argmax(axis=0), np.arange(k)])
    return PcaFit(moments.mean, scale, components * signs, explained_ratio)


def project(fit: PcaFit, rows: np.ndarray) -> np.ndarray:
    return (((np.asarray(rows, dtype=np.float64) - fit.mean) / fit.scale) @ fit.components).astype(np.float32)


def variance_report(fit: PcaFit, variance: float) -> ExplainedVariance:
    cumulative = np.cumsum(fit.explained_ratio)
    return ExplainedVariance(
        k=fit.k,
        variance_threshold=variance,
        explained_variance=float(cumulative[fit.k - 1]),
        explained_variance_ratio=[float(value) for value in fit.explained_ratio],
        cumulative_explained_variance_ratio=[float(value) for value in cumulative],
    )


def _pyplot():
    """matplotlib's pyplot on its file-only backend: the jobs draw PNGs, never windows."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    return pyplot


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight")
    _pyplot().close(figure)
    return buffer.getvalue()


def variance_plot(report: ExplainedVariance) -> bytes:
    """PNG of the cumulative explained variance, with the threshold and the chosen k marked."""
    plt = _pyplot()
    cumulative = report.cumulative_explained_variance_ratio
    k, threshold = report.k, report.variance_threshold
    figure, axes = plt.subplots(figsize=(8, 5), dpi=100)
    axes.plot(range(1, len(cumulative) + 1), cumulative, color="tab:blue", label="cumulative explained variance")
    axes.axhline(threshold, color="tab:red", linestyle="--", label=f"threshold {threshold:.0%}")
    axes.axvline(k, color="tab:green", linestyle=":", label=f"k = {k} ({report.explained_variance:.1%})")
    axes.scatter([k], [cumulative[k - 1]], color="tab:green", zorder=3)
    axes.set(xlabel="number of principal components", ylabel="share of variance", ylim=(0, 1.02))
    axes.set_title("PCA of the MobileNetV2 embeddings")
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right")
    return _png(figure)


# At most this many images in the scatter: each label's cloud still shows, the driver collects
# two floats and a label per point, and matplotlib draws them in about a second.
SCATTER_POINTS = 5000
# A legend names the labels up to this many; beyond, it would cover the picture.
LEGEND_LABELS = 20


def scatter_plot(points: pd.DataFrame, report: ExplainedVariance, images: int) -> bytes:
    """PNG of ``points`` (label, pc_1 and, with k >= 2, pc_2), one colour per label.

    With one component kept there is no second axis: each label gets its own row instead.
    """
    plt = _pyplot()
    labels = sorted(points["label"].unique())
    if len(labels) <= 20:
        colours = plt.get_cmap("tab10" if len(labels) <= 10 else "tab20").colors
    else:
        colours = plt.get_cmap("turbo")(np.linspace(0, 1, len(labels)))
    ratio = report.explained_variance_ratio
    figure, axes = plt.subplots(figsize=(8, 6), dpi=100)
    for index, label in enumerate(labels):
        group = points[points["label"] == label]
        y = group["pc_2"] if report.k >= 2 else np.full(len(group), index)
        axes.scatter(group["pc_1"], y, s=8, alpha=0.7, color=colours[index], label=label, linewidths=0)
    axes.set_xlabel(f"principal component 1 ({ratio[0]:.1%} of variance)")
    if report.k >= 2:
        axes.set_ylabel(f"principal component 2 ({ratio[1]:.1%} of variance)")
    else:
        axes.set_yticks(range(len(labels)) if len(labels) <= LEGEND_LABELS else [])
        axes.set_yticklabels(labels if len(labels) <= LEGEND_LABELS else [])
        axes.set_ylabel("label (k = 1: one component kept)")
    shown = f"{len(points):,} of {images:,} images" if len(points) < images else f"{images:,} images"
    axes.set_title(f"The first two principal components: {shown}, {len(labels):,} labels")
    axes.grid(alpha=0.3)
    if report.k >= 2 and len(labels) <= LEGEND_LABELS:
        axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), markerscale=2, frameon=False)
    return _png(figure)


def scatter_points(spark, reduced_uri: str, images: int) -> pd.DataFrame:
    """label, pc_1 and pc_2 of at most ``SCATTER_POINTS`` images of the reduced output (all of them
    when they are fewer), a seeded sample so reruns draw the same picture."""
    from pyspark.sql import functions as F

    reduced = spark.read.parquet(reduced_uri)
    if images > SCATTER_POINTS:
        reduced = reduced.sample(fraction=SCATTER_POINTS / images, seed=0)
    columns = [F.col("pca")[index].alias(f"pc_{index + 1}") for index in range(2)]
    return reduced.select("label", *columns).limit(SCATTER_POINTS).toPandas()


# Rows per Arrow batch for the Python workers, whatever the bucket's size (docs/decisions/0007-pca-arrow-batch.md).
ROWS_PER_BATCH = 1024
# The most partials the driver holds: one per task slot, not per Parquet split (docs/decisions/0008-pca-partials.md).
MAX_PARTIALS = 64
PARTIALS_SCHEMA = "rows long, shortest int, longest int, moments binary"


def _partition_moments(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """One row per partition: its row count, shortest and longest vector, and moments.

    Vectors of unequal length cannot be stacked: the partition then reports the lengths
    only, for the driver to refuse with a message rather than a worker traceback.
    """
    moments, rows, lengths = None, 0, set()
    for batch in batches:
        rows += len(batch)
        lengths.update(batch["features"].map(len).unique().tolist())
        if len(lengths) == 1:
            part = Moments.of(np.stack(batch["features"].to_numpy()))
            moments = part if moments is None else moments.merge(part)
    if rows:
        blob = None
        if len(lengths) == 1:
            buffer = io.BytesIO()
            np.savez(buffer, count=moments.count, mean=moments.mean, scatter=moments.scatter)
            blob = buffer.getvalue()
        yield pd.DataFrame({"rows": [rows], "shortest": [min(lengths)], "longest": [max(lengths)], "moments": [blob]})


def _load_moments(blob: bytes) -> Moments:
    arrays = np.load(io.BytesIO(blob))
    return Moments(int(arrays["count"]), arrays["mean"], arrays["scatter"])


def extract_features(spark, args: PcaArguments):
    """The featurize output's (path, label, features) rows, persisted on disk only: the fit and the
    projection both read them, Parquet is read once, and the driver's heap never holds them."""
    from pyspark import StorageLevel

    if not hadoop_fs.exists(spark, args.features):
        raise JobError(f"features {args.features} do not exist (run featurize first)")
    features = spark.read.parquet(args.features)
    missing_columns = {"path", "label", "features"} - set(features.columns)
    if missing_columns:
        raise JobError(f"{args.features} lacks the column(s) {sorted(missing_columns)}: not a featurize output")
    return features.select("path", "label", "features").persist(StorageLevel.DISK_ONLY)


def fit(spark, features, args: PcaArguments) -> tuple[PcaFit, int]:
    """The PCA fit of all rows in one distributed pass, and the number of rows it saw."""
    tasks = min(MAX_PARTIALS, spark.sparkContext.defaultParallelism)
    partials = features.select("features").coalesce(tasks).mapInPandas(_partition_moments, PARTIALS_SCHEMA).collect()
    rows = sum(partial.rows for partial in partials)
    if rows < 2:
        raise JobError(f"PCA needs at least 2 images, found {rows} in {args.features}")
    shortest, longest = min(p.shortest for p in partials), max(p.longest for p in partials)
    if shortest != longest:
        raise JobError(f"feature vectors in {args.features} differ in length ({shortest} to {longest})")
    return fit_pca(reduce(Moments.merge, (_load_moments(p.moments) for p in partials)), args.variance), rows


def transform(spark, features, pca_fit: PcaFit):
    """(path, label, pca): each row projected on the kept components."""
    from pyspark.sql.functions import pandas_udf

    fit_broadcast = spark.sparkContext.broadcast(pca_fit)

    @pandas_udf("array<float>")
    def to_components(batches: Iterator[pd.Series]) -> Iterator[pd.Series]:
        for batch in batches:
            yield pd.Series(list(project(fit_broadcast.value, np.stack(batch.to_numpy()))))

    return features.select("path", "label", to_components("features").alias("pca"))


def load(spark, reduced, report: ExplainedVariance, images: int, args: PcaArguments) -> None:
    reduced.write.mode("overwrite").parquet(args.output)
    hadoop_fs.write_bytes(spark, args.explained_variance, report.to_json().encode())
    hadoop_fs.write_bytes(spark, args.plot, variance_plot(report))
    if args.scatter:
        points = scatter_points(spark, args.output, images)
        hadoop_fs.write_bytes(spark, args.scatter, scatter_plot(points, report, images))


def run(spark, args: PcaArguments) -> PcaMetrics:
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(ROWS_PER_BATCH))
    features = extract_features(spark, args)
    try:
        pca_fit, rows = fit(spark, features, args)
        report = variance_report(pca_fit, args.variance)
        load(spark, transform(spark, features, pca_fit), report, rows, args)
    finally:
        features.unpersist()
    return PcaMetrics(images=rows, k=pca_fit.k, variance=round(report.explained_variance, 4))


def main(argv: Sequence[str] | None = None) -> int:
    return run_job(ARGUMENTS, run, argv)
