"""Featurise job: every image under --images becomes a 1280-d MobileNetV2 embedding or an error row.

Extract: the binaryFile listing (path, size, modification time), no bytes read. Reuse: with a
previous run's outputs, files whose path, size and modification time are unchanged keep their
rows, planned from the listing alone, and only the new and changed files' bytes are read.
Transform: a pandas iterator UDF that decodes, preprocesses and runs the network batch by batch,
with ONNX Runtime (the default), OpenVINO or TensorFlow. Load: features and errors Parquet, with a progress
line every 30 s. Reconcile: every listed file is in exactly one of the two outputs.
"""

from __future__ import annotations

import os
import re
import tempfile
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fruitflow import hadoop_fs
from fruitflow.cli import JobError, log, run_job
from fruitflow.contract import (
    ENGINE_ONNX,
    ENGINE_OPENVINO,
    ENGINE_OPENVINO_BF16,
    FEATURES_IDENTITY_FILE,
    IMAGE_EXTENSIONS,
    MODEL_CACHE_OFF,
    ONNX_MODEL_ENGINES,
    PREPROCESSING,
    TASKS_PER_CORE,
    WEIGHTS_IMAGENET,
    WEIGHTS_RANDOM,
    FeaturesIdentity,
    FeaturizeArguments,
    FeaturizeMetrics,
)
from fruitflow.images import IMAGE_GLOB, ImageDecodeError, decode_image, normalize_uri, to_model_input
from fruitflow.model import (
    FeatureExtractor,
    configure_tensorflow_threads,
    fetch_weights_file,
    load_weights_file,
    resolve_weights,
    weights_digest,
)
from fruitflow.onnx_model import ModelCache, OnnxFeatureExtractor, onnx_model
from fruitflow.openvino_model import BF16, OpenVinoFeatureExtractor
from fruitflow.progress import ProgressReporter

ARGUMENTS = FeaturizeArguments
RESULT_TYPE = "struct<features:array<float>,error:string>"


def featurize_contents(
    contents: Sequence[bytes], extract: Callable[[np.ndarray], np.ndarray], batch_size: int
) -> tuple[list[np.ndarray | None], list[str | None]]:
    """Features or an error message for each file's bytes, in input order.

    A file that does not decode gets its error and no features; the others go through
    ``extract`` in batches of at most ``batch_size``.
    """
    features: list[np.ndarray | None] = [None] * len(contents)
    errors: list[str | None] = [None] * len(contents)
    decoded: list[tuple[int, np.ndarray]] = []
    for index, content in enumerate(contents):
        try:
            decoded.append((index, to_model_input(decode_image(content))))
        except ImageDecodeError as exc:
            errors[index] = str(exc)
    for start in range(0, len(decoded), batch_size):
        chunk = decoded[start : start + batch_size]
        vectors = extract(np.stack([pixels for _, pixels in chunk]))
        for (index, _), vector in zip(chunk, vectors, strict=True):
            features[index] = vector
    return features, errors


def model_cache_folder(given: str | None, master: str, environ: Mapping[str, str], home: Path) -> str | None:
    """Where converted models are kept: the folder given (``none``: nowhere); with none given, a
    per-user folder when Spark's master is local, as Keras keeps its downloads in ``~/.keras``, so
    that a job run by hand starts warm from its second run; none on a cluster, whose transient
    nodes would not keep it for the next run (docs/decisions/0011-model-cache.md)."""
    if given == MODEL_CACHE_OFF:
        return None
    if given or not master.startswith("local"):
        return given
    cache_home = Path(environ["XDG_CACHE_HOME"]) if environ.get("XDG_CACHE_HOME") else home / ".cache"
    return (cache_home / "fruitflow" / "models").as_uri()


def model_cache(spark, given: str | None) -> ModelCache | None:
    """The job's model cache (``model_cache_folder``), said in the log when the job chose it."""
    master = spark.sparkContext.master
    folder = model_cache_folder(given, master, os.environ, Path.home())
    if folder is None:
        why = "--model-cache none" if given else f"master {master}; --model-cache URI keeps it between runs"
        log.info("model cache: none (%s): the network is converted on every run", why)
        return None
    if given is None:
        log.info("model cache: none given, so the per-user folder %s (--model-cache none turns it off)", folder)
    read, write = partial(hadoop_fs.read_bytes, spark), partial(hadoop_fs.write_bytes_atomically, spark)
    return ModelCache(read, write, folder)


def prepare_model(spark, args: FeaturizeArguments) -> tuple[Any, FeaturesIdentity]:
    """What the executors need to build the network, made once on the driver (the ONNX model's
    bytes, or TensorFlow's weight arrays), and the identity of the features it computes."""
    with tempfile.TemporaryDirectory(prefix="fruitflow-weights-") as folder:
        weights_file = None
        if args.weights not in (WEIGHTS_IMAGENET, WEIGHTS_RANDOM):
            weights_file = fetch_weights_file(args.weights, folder, partial(hadoop_fs.download, spark))
        identity = FeaturesIdentity(
            engine=args.engine, weights_digest=weights_digest(args.weights, weights_file), preprocessing=PREPROCESSING
        )
        if args.engine in ONNX_MODEL_ENGINES:
            return onnx_model(args.weights, weights_file, model_cache(spark, args.model_cache)), identity
        return (load_weights_file(weights_file) if weights_file else resolve_weights(args.weights, None)), identity


def build_extractor(engine: str, model, threads: int) -> Callable[[np.ndarray], np.ndarray]:
    if engine == ENGINE_ONNX:
        return OnnxFeatureExtractor(model, threads)
    if engine == ENGINE_OPENVINO:
        return OpenVinoFeatureExtractor(model, threads)
    if engine == ENGINE_OPENVINO_BF16:
        return OpenVinoFeatureExtractor(model, threads, BF16)
    configure_tensorflow_threads(threads)
    return FeatureExtractor(model)


_worker_extractor: tuple[str, Callable[[np.ndarray], np.ndarray]] | None = None


def worker_extractor(engine: str, model_broadcast, model_key: str) -> Callable[[np.ndarray], np.ndarray]:
    """The Python worker's extractor, built once per process and reused by every later task of
    the job (Spark reuses Python workers); a later job's broadcast gets a new one."""
    global _worker_extractor
    if _worker_extractor is None or _worker_extractor[0] != model_key:
        from pyspark import TaskContext

        _worker_extractor = (model_key, build_extractor(engine, model_broadcast.value, TaskContext.get().cpus()))
    return _worker_extractor[1]


def featurize_udf(spark, engine: str, model, batch_size: int, rows_seen):
    from pyspark.sql.functions import pandas_udf

    model_broadcast = spark.sparkContext.broadcast(model)
    model_key = uuid.uuid4().hex

    @pandas_udf(RESULT_TYPE)
    def featurize_images(contents: Iterator[pd.Series]) -> Iterator[pd.DataFrame]:
        extract = worker_extractor(engine, model_broadcast, model_key)
        for batch in contents:
            features, errors = featurize_contents(batch.tolist(), extract, batch_size)
            rows_seen.add(len(batch))
            yield pd.DataFrame({"features": features, "error": errors})

    return featurize_images


def with_label(frame):
    """Add ``label``: the name of the folder that holds the file (Fruits-360 layout)."""
    from pyspark.sql import functions as F

    return frame.withColumn("label", F.element_at(F.split("path", "/"), -2))


def missing_file_error(length: int | None) -> str:
    if length == 0:
        return "empty file (0 bytes)"
    if length is None:
        return "file disappeared or cannot be accessed after it was listed"
    return "file could not be read (I/O error while scanning; see the Spark driver log)"


def binary_files(spark, partitions: int, paths: str | list[str], **options: str):
    """binaryFile rows (path, modification_time, length, content) of ``paths``, spread over about
    ``partitions`` tasks; the bytes are read only where ``content`` is used.

    Spark packs files into a task by bytes, charging each file a 4 MB "open cost" by default:
    a thousand 5 KB images would make dozens of tiny tasks, each paying to start TensorFlow.
    A small open cost and a minimum partition count give ``partitions`` even tasks straight
    from the scan, with no shuffle of the image bytes.
    """
    spark.conf.set("spark.sql.files.openCostInBytes", str(64 * 1024))
    spark.conf.set("spark.sql.files.minPartitionNum", str(partitions))
    reader = spark.read.format("binaryFile").option("pathGlobFilter", IMAGE_GLOB).option("ignoreCorruptFiles", "true")
    return reader.options(**options).load(paths).withColumnRenamed("modificationTime", "modification_time")


def read_images(spark, folder: str, partitions: int):
    """The image files under ``folder``, as ``binary_files`` rows."""
    return binary_files(spark, partitions, folder, recursiveFileLookup="true")


def literal_glob(uri: str) -> str:
    """``uri`` with Hadoop's glob characters escaped: Spark globs every path it is given, and a
    file may well be called ``apple [2].jpg``."""
    return re.sub(r"([\\{}\[\]*?])", r"\\\1", uri)


def read_files(spark, uris: Sequence[str], partitions: int):
    """binaryFile rows of exactly these files, the only ones whose bytes the job reads.

    A file deleted since the listing would fail the whole read, so the read then keeps the files
    still there; the vanished ones reach no output and are reported as missing.
    """
    from pyspark.errors import AnalysisException

    # Spark lists many paths with a task per path by default (docs/decisions/0013-featurize-listing-and-planning.md).
    spark.conf.set("spark.sql.sources.parallelPartitionDiscovery.parallelism", str(partitions))
    present = list(uris)
    while present:
        try:
            return binary_files(spark, partitions, [literal_glob(uri) for uri in present])
        except AnalysisException as error:
            still_there = [uri for uri in present if hadoop_fs.exists(spark, uri)]
            if error.getErrorClass() != "PATH_NOT_FOUND" or len(still_there) == len(present):
                raise
            present = still_there
    return spark.createDataFrame([], "path string, modification_time timestamp, length long, content binary")


KEY = ["path", "length", "modification_time"]  # a file is unchanged while all three are


def files_the_scan_skipped(spark, listed: list[str], processed) -> list[str]:
    """The listed files that reached no output.

    Spark's file scan drops 0-byte files, and unreadable ones under ignoreCorruptFiles,
    without a trace: only their names, compared with the rows processed, reveal them.
    """
    listed_paths = spark.createDataFrame([(path,) for path in listed], "path string")
    return [row.path for row in listed_paths.join(processed, "path", "left_anti").collect()]


def input_files(spark, frame) -> list[str]:
    """``frame.inputFiles()`` (percent-encoded URIs) in one call to the JVM: PySpark's fetches the
    array one element per call (docs/decisions/0013-featurize-listing-and-planning.md)."""
    joined = spark.sparkContext._jvm.org.apache.hadoop.util.StringUtils.join("\0", frame._jdf.inputFiles())
    return joined.split("\0") if joined else []


def extract_images(spark, args: FeaturizeArguments):
    """The image files under --images as (path, length, modification_time, content) rows, and their
    listing (decoded URIs). Their bytes are read only where ``content`` is used."""
    if not hadoop_fs.exists(spark, args.images):
        raise JobError(f"images folder {args.images} does not exist")
    images = read_images(spark, args.images, partitions(spark, args))
    listed = sorted({normalize_uri(uri) for uri in input_files(spark, images)})
    if not listed:
        raise JobError(f"no images found under {args.images} (looked for {', '.join(IMAGE_EXTENSIONS)}, any case)")
    return images, listed


def partitions(spark, args: FeaturizeArguments) -> int:
    return args.partitions or TASKS_PER_CORE * spark.sparkContext.defaultParallelism


def previous_outputs(spark, args: FeaturizeArguments, identity: FeaturesIdentity):
    """The previous run's (features, errors) when their rows can be carried over, else None and
    the log says why: every image then goes through the network."""
    if args.previous_features is None:
        return None
    identity_uri = f"{args.previous_features.rstrip('/')}/{FEATURES_IDENTITY_FILE}"
    if not hadoop_fs.exists(spark, identity_uri):
        log.warning("previous outputs unusable (no %s: not written by this version): featurising every image",
                    identity_uri)  # fmt: skip
        return None
    try:
        previous = FeaturesIdentity.from_json(hadoop_fs.read_bytes(spark, identity_uri).decode())
        features, errors = spark.read.parquet(args.previous_features), spark.read.parquet(args.previous_errors)
        for frame, columns in ((features, {*KEY, "label", "features"}), (errors, {*KEY, "label", "error"})):
            if lacking := columns - set(frame.columns):
                raise ValueError(f"no column(s) {', '.join(sorted(lacking))} in {frame.inputFiles()[0]}")
    except Exception as problem:
        log.warning("previous outputs unusable (%s): featurising every image", str(problem).splitlines()[0])
        return None
    if previous != identity:
        changed = [f"{name} {getattr(previous, name)} -> {getattr(identity, name)}"
                   for name in ("engine", "weights_digest", "preprocessing")
                   if getattr(previous, name) != getattr(identity, name)]  # fmt: skip
        log.warning("previous features were computed otherwise (%s): featurising every image", "; ".join(changed))
        return None
    return features, errors


@dataclass(frozen=True)
class ReusePlan:
    """What a previous run's outputs save this one, decided from the listing alone."""

    to_read: list[str]  # new and changed files: the only ones whose bytes are read
    reused_features: int  # unchanged files whose previous features row is carried over
    reused_errors: int  # unchanged files whose previous error row is carried over
    new: int
    changed: int
    removed: int

    @property
    def reused(self) -> int:
        return self.reused_features + self.reused_errors


def plan_reuse(listing: pd.DataFrame, listed: Sequence[str], previous: pd.DataFrame) -> ReusePlan:
    """Compare the scan's ``listing`` (KEY rows) with the previous outputs' KEY rows (and their
    ``output``: features or errors). ``listed`` holds every listed file, also those the scan
    skips (0-byte ones): such a file is not removed, and it is reported as missing again."""
    merged = listing[KEY].merge(previous[[*KEY, "output"]], on="path", how="left", suffixes=("", "_before"))
    known = merged["output"].notna()
    unchanged = (
        known
        & (merged["length"] == merged["length_before"])
        & (merged["modification_time"] == merged["modification_time_before"])
    )
    changed = int((known & ~unchanged).sum())
    to_read = sorted(merged.loc[~unchanged, "path"])
    reused_outputs = merged.loc[unchanged, "output"]
    return ReusePlan(
        to_read=to_read,
        reused_features=int((reused_outputs == "features").sum()),
        reused_errors=int((reused_outputs == "errors").sum()),
        new=len(to_read) - changed,
        changed=changed,
        removed=len(set(previous["path"]) - set(listed)),
    )


@dataclass(frozen=True)
class Reuse:
    """A reuse plan, and the previous rows it carries over."""

    plan: ReusePlan
    listing: Any  # DataFrame: the persisted listing the carried-over rows are joined with
    features: Any  # DataFrame: previous features rows of unchanged files
    errors: Any  # DataFrame: previous error rows of unchanged files


def carry_over(spark, images, listed: list[str], previous) -> Reuse:
    """Plan from the listing (one metadata scan, kept for the carried-over rows' join) and the
    previous outputs' keys, both collected to the driver: a few dozen bytes per file."""
    from pyspark.sql import functions as F

    previous_features, previous_errors = previous
    listing = images.select(*KEY).persist()
    previous_keys = previous_features.select(*KEY, F.lit("features").alias("output")).unionByName(
        previous_errors.select(*KEY, F.lit("errors").alias("output"))
    )
    # Through Arrow, not Python rows (docs/decisions/0013-featurize-listing-and-planning.md).
    spark.conf.set("spark.sql.execution.arrow.pyspark.enabled", "true")
    plan = plan_reuse(listing.toPandas(), listed, previous_keys.toPandas())
    return Reuse(
        plan=plan,
        listing=listing,
        features=previous_features.join(listing, KEY, "left_semi").select("path", "label", "features", *KEY[1:]),
        errors=previous_errors.join(listing, KEY, "left_semi").select("path", "label", "error", *KEY[1:]),
    )


def transform_images(spark, images, model, args: FeaturizeArguments, rows_seen):
    """(path, length, modification_time, features, error) per image: the embedding, or why the
    file could not be featurised."""
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(args.batch_size))
    featurize_images = featurize_udf(spark, args.engine, model, args.batch_size, rows_seen)
    return images.select(*KEY, featurize_images("content").alias("result")).select(
        *KEY, "result.features", "result.error"
    )


def load_outputs(
    spark, fresh, reuse: Reuse | None, listed: list[str], identity: FeaturesIdentity, args: FeaturizeArguments
) -> tuple[int, int]:
    """Write --output (featurised images, and the model identity beside them) and --errors (the
    rest, with why); returns both counts.

    ``fresh`` must be persisted: both writes then share one evaluation of the network.
    """
    from pyspark.sql import functions as F

    columns = ["path", "label", "features", *KEY[1:]]
    features = with_label(fresh.filter(F.col("error").isNull())).select(*columns)
    if reuse:
        features = features.unionByName(reuse.features)
    # 1280 distinct floats per row never gain from a dictionary (docs/decisions/0014-features-without-dictionary.md).
    features.write.option("parquet.enable.dictionary", "false").mode("overwrite").parquet(args.output)
    hadoop_fs.write_bytes(spark, f"{args.output.rstrip('/')}/{FEATURES_IDENTITY_FILE}", identity.to_json().encode())

    counts = fresh.agg(F.count("features").alias("featurised"), F.count("error").alias("errors")).first()
    reused_features = reuse.plan.reused_features if reuse else 0
    reused_errors = reuse.plan.reused_errors if reuse else 0
    processed = fresh.select("path")
    if reuse:
        processed = processed.unionByName(reuse.features.select("path")).unionByName(reuse.errors.select("path"))
    all_processed = counts.featurised + counts.errors + reused_features + reused_errors == len(listed)
    missing = [] if all_processed else files_the_scan_skipped(spark, listed, processed)
    missing_errors = spark.createDataFrame(
        [(path, missing_file_error(length), length, modified) for path in missing
         for length, modified in [hadoop_fs.file_status(spark, path)]],
        "path string, error string, length long, modification_time timestamp",
    )  # fmt: skip
    errors = with_label(fresh.filter(F.col("error").isNotNull()).select("path", "error", *KEY[1:]))
    errors = errors.unionByName(with_label(missing_errors))
    if reuse:
        errors = errors.unionByName(reuse.errors)
    errors.select("path", "label", "error", *KEY[1:]).coalesce(1).write.mode("overwrite").parquet(args.errors)
    return counts.featurised + reused_features, counts.errors + reused_errors + len(missing)


def reconcile(listed: int, featurised: int, errors: int) -> None:
    """Every listed image is in exactly one output, or the job fails rather than lose files quietly."""
    if featurised + errors != listed:
        raise JobError(
            f"{listed} images listed but {featurised} featurised + {errors} errors: "
            "some files were lost, rerun and report this"
        )


def run(spark, args: FeaturizeArguments) -> FeaturizeMetrics:
    from pyspark import StorageLevel

    if (args.previous_features is None) != (args.previous_errors is None):
        raise JobError("give --previous-features and --previous-errors together (a previous run's two outputs)")
    images, listed = extract_images(spark, args)
    model, identity = prepare_model(spark, args)
    previous = previous_outputs(spark, args, identity)
    reuse = carry_over(spark, images, listed, previous) if previous else None
    if reuse:
        plan = reuse.plan
        log.info(
            "carried over from %s: %d unchanged images; %d new and %d changed go through the network, %d removed",
            args.previous_features, plan.reused, plan.new, plan.changed, plan.removed,
        )  # fmt: skip
        images = read_files(spark, plan.to_read, partitions(spark, args))
    rows_seen = spark.sparkContext.accumulator(0)
    # On disk only: the second pass over the network's results (the counts, the errors) reads them
    # back without the driver's heap holding them, however many images the bucket has.
    fresh = transform_images(spark, images, model, args, rows_seen).persist(StorageLevel.DISK_ONLY)
    to_featurise = len(reuse.plan.to_read) if reuse else len(listed)
    progress = ProgressReporter("featurize", to_featurise, lambda: rows_seen.value, log.info,
                                then=f"writing {len(listed):,} rows")  # fmt: skip
    try:
        with progress:
            featurised, errors = load_outputs(spark, fresh, reuse, listed, identity, args)
    finally:
        fresh.unpersist()
        if reuse:
            reuse.listing.unpersist()
    reconcile(len(listed), featurised, errors)
    return FeaturizeMetrics(
        images=len(listed),
        featurised=featurised,
        errors=errors,
        model_rows=rows_seen.value,
        reused=reuse.plan.reused if reuse else 0,
        new=reuse.plan.new if reuse else rows_seen.value,
        changed=reuse.plan.changed if reuse else 0,
        removed=reuse.plan.removed if reuse else 0,
        weights=args.weights,
        engine=args.engine,
    )


def main(argv: Sequence[str] | None = None) -> int:
    return run_job(ARGUMENTS, run, argv)
