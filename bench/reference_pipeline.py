"""The reference approach the benchmark compares against: the well-known course notebook
("P8 fruits" on a cloud cluster), re-created here as one PySpark script.

What it reproduces, on purpose, because that is what gets measured:
- one pandas iterator UDF that rebuilds MobileNetV2 from broadcast weights on every call,
  i.e. once per task, with TensorFlow's default threading in every Python worker;
- preprocessing with PIL + img_to_array + preprocess_input and ``model.predict`` per batch;
- ``repartition(20)`` and no caching: every action of the Spark ML stage (scaler fit, two
  PCA fits, the Parquet write, ``toPandas``) runs the network again through the lineage;
- a Python UDF to turn the arrays into ML vectors, StandardScaler, a full-rank PCA fit to
  read the explained variance, a second fit with the k for 95%, and the CSV via pandas.

Offline: the network starts from a seeded random initialisation (weights=None, the seed
of fruitflow's ``random`` weights), so nothing is downloaded.

    spark-submit --master 'local[*]' bench/reference_pipeline.py IMAGES OUTPUT [--metrics FILE]
"""

from __future__ import annotations

import argparse
import io
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

RANDOM_WEIGHTS_SEED = 1234  # fruitflow.model.RANDOM_WEIGHTS_SEED: the same random network
PARTITIONS = 20
VARIANCE = 0.95


def full_model():
    from keras.applications.mobilenet_v2 import MobileNetV2

    return MobileNetV2(weights=None, include_top=True, input_shape=(224, 224, 3))


def cut_model(model):
    """The network without its classifier: the 1280-d global average pool."""
    from keras.models import Model

    return Model(inputs=model.inputs, outputs=model.layers[-2].output)


def preprocess(content: bytes) -> np.ndarray:
    from keras.applications.mobilenet_v2 import preprocess_input
    from keras.preprocessing.image import img_to_array
    from PIL import Image

    image = Image.open(io.BytesIO(content)).resize([224, 224])
    return preprocess_input(img_to_array(image))


def featurize_series(model, contents: pd.Series) -> pd.Series:
    pixels = np.stack(contents.map(preprocess))
    predictions = model.predict(pixels, verbose=0)
    return pd.Series([prediction.flatten() for prediction in predictions])


def make_featurize_udf(weights_broadcast, rows_featurised):
    from pyspark.sql.functions import PandasUDFType, pandas_udf

    @pandas_udf("array<float>", PandasUDFType.SCALAR_ITER)
    def featurize_udf(content_batches):
        model = cut_model(full_model())
        model.set_weights(weights_broadcast.value)
        for contents in content_batches:
            rows_featurised.add(len(contents))
            yield featurize_series(model, contents)

    return featurize_udf


def components_for(explained_variance: np.ndarray, share: float) -> int:
    return int(np.searchsorted(np.cumsum(explained_variance), share) + 1)


def run(spark, images: str, output: Path) -> dict:
    import keras
    from pyspark.ml.feature import PCA, StandardScaler
    from pyspark.ml.linalg import Vectors, VectorUDT
    from pyspark.sql.functions import col, element_at, split, udf

    loaded = (
        spark.read.format("binaryFile")
        .option("pathGlobFilter", "*.jpg")
        .option("recursiveFileLookup", "true")
        .load(images)
    )
    labelled = loaded.withColumn("label", element_at(split(col("path"), "/"), -2))

    keras.utils.set_random_seed(RANDOM_WEIGHTS_SEED)
    model = cut_model(full_model())
    weights_broadcast = spark.sparkContext.broadcast(model.get_weights())
    dimensions = model.output_shape[-1]
    rows_featurised = spark.sparkContext.accumulator(0)
    featurize_udf = make_featurize_udf(weights_broadcast, rows_featurised)

    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", "1024")
    features = labelled.repartition(PARTITIONS).select(
        col("path"), col("label"), featurize_udf("content").alias("features")
    )
    features.write.mode("overwrite").parquet(str(output / "features"))

    to_vector = udf(lambda values: Vectors.dense(values), VectorUDT())
    vectors = features.withColumn("vector", to_vector("features"))
    scaler = StandardScaler(inputCol="vector", outputCol="scaled", withMean=True, withStd=True).fit(vectors)
    scaled = scaler.transform(vectors)

    full_pca = PCA(k=dimensions, inputCol="scaled", outputCol="pca").fit(scaled)
    k = components_for(full_pca.explainedVariance.toArray(), VARIANCE)
    reduced = PCA(k=k, inputCol="scaled", outputCol="pca").fit(scaled).transform(scaled).select("path", "label", "pca")
    reduced.write.mode("overwrite").parquet(str(output / "pca"))
    table = reduced.toPandas()
    table.to_csv(output / "pca_features.csv", index=False)
    return {"images": len(table), "k": k, "rows_featurised": rows_featurised.value}


def main() -> None:
    parser = argparse.ArgumentParser(description="The course notebook's featurise + PCA approach, for comparison.")
    parser.add_argument("images", help="folder of <class>/<image>.jpg files, searched recursively")
    parser.add_argument("output", type=Path, help="folder for features/, pca/ and pca_features.csv")
    parser.add_argument("--metrics", type=Path, help="also write the summary as JSON to this file")
    args = parser.parse_args()

    from pyspark.sql import SparkSession

    started = time.monotonic()
    spark = SparkSession.builder.appName("reference-notebook-pipeline").getOrCreate()
    args.output.mkdir(parents=True, exist_ok=True)
    summary = {**run(spark, args.images, args.output), "seconds": round(time.monotonic() - started, 2)}
    print(f"reference pipeline done in {summary['seconds']} s: {json.dumps(summary)}")
    if args.metrics:
        args.metrics.write_text(json.dumps(summary, indent=2))
    spark.stop()


if __name__ == "__main__":
    main()
