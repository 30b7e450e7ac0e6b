"""Featurise job: every image under --images becomes a 1280-d MobileNetV2 embedding or an error row.

Extract: binaryFile listing and bytes. Transform: a pandas iterator UDF that decodes,
preprocesses and runs the network batch by batch, with ONNX Runtime (the default) or
TensorFlow. Load: features and errors Parquet, with a progress line every 30 s.
Reconcile: every listed file is in exactly one of the two outputs.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Sequence
from functools import partial

import numpy as np
import pandas as pd

from fruitflow import hadoop_fs
from fruitflow.cli import JobError, log, run_job
from fruitflow.contract import ENGINE_ONNX, IMAGE_EXTENSIONS, TASKS_PER_CORE, FeaturizeArguments, FeaturizeMetrics
from fruitflow.images import IMAGE_GLOB, ImageDecodeError, decode_image, normalize_uri, to_model_input
from fruitflow.model import FeatureExtractor, configure_tensorflow_threads, resolve_weights
from fruitflow.onnx_model import ModelCache, OnnxFeatureExtractor, onnx_model
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


def prepare_model(spark, args: FeaturizeArguments):
    """What the executors need to build the network, made once on the driver: the ONNX model's
    bytes, or TensorFlow's weight arrays."""
    fetch = partial(hadoop_fs.download, spark)
    if args.engine == ENGINE_ONNX:
        cache = None
        if args.model_cache:
            read, write = partial(hadoop_fs.read_bytes, spark), partial(hadoop_fs.write_bytes_atomically, spark)
            cache = ModelCache(read, write, args.model_cache)
        return onnx_model(args.weights, fetch, cache)
    return resolve_weights(args.weights, fetch)


def build_extractor(engine: str, model, threads: int) -> Callable[[np.ndarray], np.ndarray]:
    if engine == ENGINE_ONNX:
        return OnnxFeatureExtractor(model, threads)
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


def read_images(spark, folder: str, partitions: int):
    """The image files under ``folder`` as (path, content) rows, in about ``partitions`` tasks.

    Spark packs files into a task by bytes, charging each file a 4 MB "open cost" by default:
    a thousand 5 KB images would make dozens of tiny tasks, each paying to start TensorFlow.
    A small open cost and a minimum partition count give ``partitions`` even tasks straight
    from the scan, with no shuffle of the image bytes.
    """
    spark.conf.set("spark.sql.files.openCostInBytes", str(64 * 1024))
    spark.conf.set("spark.sql.files.minPartitionNum", str(partitions))
    return (
        spark.read.format("binaryFile")
        .option("recursiveFileLookup", "true")
        .option("pathGlobFilter", IMAGE_GLOB)
        .option("ignoreCorruptFiles", "true")
        .load(folder)
    )


def files_the_scan_skipped(spark, listed: list[str], results) -> list[str]:
    """The listed files that never reached the network.

    Spark's file scan drops 0-byte files, and unreadable ones under ignoreCorruptFiles,
    without a trace: only their names, compared with the rows processed, reveal them.
    """
    listed_paths = spark.createDataFrame([(path,) for path in listed], "path string")
    return [row.path for row in listed_paths.join(results.select("path"), "path", "left_anti").collect()]


def extract_images(spark, args: FeaturizeArguments):
    """The image files under --images as (path, content) rows, and their listing (decoded URIs)."""
    if not hadoop_fs.exists(spark, args.images):
        raise JobError(f"images folder {args.images} does not exist")
    images = read_images(spark, args.images, args.partitions or TASKS_PER_CORE * spark.sparkContext.defaultParallelism)
    listed = sorted({normalize_uri(uri) for uri in images.inputFiles()})
    if not listed:
        raise JobError(f"no images found under {args.images} (looked for {', '.join(IMAGE_EXTENSIONS)}, any case)")
    return images, listed


def transform_images(spark, images, args: FeaturizeArguments, rows_seen):
    """(path, features, error) per image: the embedding, or why the file could not be featurised.
    The model is prepared here, once, on the driver."""
    model = prepare_model(spark, args)
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(args.batch_size))
    featurize_images = featurize_udf(spark, args.engine, model, args.batch_size, rows_seen)
    return images.select("path", featurize_images("content").alias("result")).select(
        "path", "result.features", "result.error"
    )


def load_outputs(spark, results, listed: list[str], args: FeaturizeArguments) -> tuple[int, int]:
    """Write --output (featurised images) and --errors (the rest, with why); returns both counts.

    ``results`` must be persisted: both writes then share one evaluation of the network.
    """
    from pyspark.sql import functions as F

    featurised = results.filter(F.col("error").isNull())
    with_label(featurised).select("path", "label", "features").write.mode("overwrite").parquet(args.output)
    counts = results.agg(F.count("features").alias("featurised"), F.count("error").alias("errors")).first()
    all_processed = counts.featurised + counts.errors == len(listed)
    missing = [] if all_processed else files_the_scan_skipped(spark, listed, results)
    missing_errors = spark.createDataFrame(
        [(path, missing_file_error(hadoop_fs.file_length(spark, path))) for path in missing],
        "path string, error string",
    )
    decode_errors = results.filter(F.col("error").isNotNull()).select("path", "error")
    errors = with_label(decode_errors.unionByName(missing_errors)).select("path", "label", "error")
    errors.coalesce(1).write.mode("overwrite").parquet(args.errors)
    return counts.featurised, counts.errors + len(missing)


def reconcile(listed: int, featurised: int, errors: int) -> None:
    """Every listed image is in exactly one output, or the job fails rather than lose files quietly."""
    if featurised + errors != listed:
        raise JobError(
            f"{listed} images listed but {featurised} featurised + {errors} errors: "
            "some files were lost, rerun and report this"
        )


def run(spark, args: FeaturizeArguments) -> FeaturizeMetrics:
    from pyspark import StorageLevel

    images, listed = extract_images(spark, args)
    rows_seen = spark.sparkContext.accumulator(0)
    results = transform_images(spark, images, args, rows_seen).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        with ProgressReporter("featurize", len(listed), lambda: rows_seen.value, log.info):
            featurised, errors = load_outputs(spark, results, listed, args)
    finally:
        results.unpersist()
    reconcile(len(listed), featurised, errors)
    return FeaturizeMetrics(
        images=len(listed),
        featurised=featurised,
        errors=errors,
        model_rows=rows_seen.value,
        weights=args.weights,
        engine=args.engine,
    )


def main(argv: Sequence[str] | None = None) -> int:
    return run_job(ARGUMENTS, run, argv)
