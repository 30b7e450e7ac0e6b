"""The boundary between the DAG and the jobs, written once: each job's command line, what its
metrics file holds, the explained-variance report, and the defaults both sides share.

The jobs parse their arguments with the parsers built here; the Airflow side
(``plugins/fruitflow_pipeline``) builds the same command lines and reads the same files with
these classes. Pure Python on purpose: importable without Spark, Airflow, NumPy or TensorFlow.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from typing import Any, ClassVar, Self

DEFAULT_VARIANCE = 0.95
# As fast as larger batches, in less memory per Python worker (docs/decisions/0006-featurize-batch-size.md).
DEFAULT_BATCH_SIZE = 16
WEIGHTS_IMAGENET = "imagenet"
WEIGHTS_RANDOM = "random"
# The same MobileNetV2 run by ONNX Runtime or OpenVINO (both run the model converted to ONNX on the
# driver) or by TensorFlow (the reference). OpenVINO in bf16 is an engine of its own, never a default:
# its features differ from f32's, and the engine is in their identity (docs/decisions/0010-default-engine.md).
ENGINE_ONNX = "onnx"
ENGINE_OPENVINO = "openvino"
ENGINE_OPENVINO_BF16 = "openvino-bf16"
ENGINE_TENSORFLOW = "tensorflow"
ENGINES = (ENGINE_ONNX, ENGINE_OPENVINO, ENGINE_OPENVINO_BF16, ENGINE_TENSORFLOW)
# The engines whose workers run the converted ONNX model (one cache, one key) and never import TensorFlow.
ONNX_MODEL_ENGINES = (ENGINE_ONNX, ENGINE_OPENVINO, ENGINE_OPENVINO_BF16)
DEFAULT_ENGINE = ENGINE_ONNX  # the faster f32 engine (docs/decisions/0010-default-engine.md)
# Beside the features Parquet (readers skip "_" files): what computed them, so that a later run
# knows whether their rows can be carried over.
FEATURES_IDENTITY_FILE = "_model.json"
# Decode to RGB, resize with Pillow's default filter, scale like Keras' MobileNetV2 (fruitflow.images):
# change the name with any of them, so that no features computed before are carried over. Here, not
# in fruitflow.images, so that the DAG knows it before a night without importing Pillow.
PREPROCESSING = "pillow-rgb/resize-224-default-filter/mobilenet_v2-tf-float32"
# Featurize tasks per core: a few waves rather than one, so progress shows task by task and
# stragglers even out; each Python worker keeps its network between tasks.
TASKS_PER_CORE = 4
# What the featurize job reads as an image (any case); the DAG checks for them before starting a cluster.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
# The file Keras' MobileNetV2(weights="imagenet") downloads: what to copy for a machine without internet.
IMAGENET_WEIGHTS_FILE = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5"
# --model-cache's word for no cache: convert the network on every run.
MODEL_CACHE_OFF = "none"


def is_image_path(relative_path: str) -> bool:
    """Whether the featurize job reads the file at this path under --images: an image extension,
    and no hidden part (Spark's file listing skips files and folders starting with '.' or '_')."""
    parts = relative_path.strip("/").split("/")
    return parts[-1].lower().endswith(IMAGE_EXTENSIONS) and not any(part.startswith((".", "_")) for part in parts)


def variance_share(text: str) -> float:
    """argparse type for a share of explained variance, in (0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"{value} is outside (0, 1]; 0.95 keeps 95% of the variance")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def engine_name(text: str) -> str:
    """argparse type for --engine."""
    if text not in ENGINES:
        raise argparse.ArgumentTypeError(f"{text!r} is not an engine: use {', '.join(ENGINES)}")
    return text


def flag(help: str, *, default: Any = MISSING, parse: Callable[[str], Any] = str, metavar: str = "URI") -> Any:
    """A command-line flag as a dataclass field: field ``batch_size`` is ``--batch-size``.
    Without a default the flag is required."""
    return field(default=default, metadata={"help": help, "parse": parse, "metavar": metavar})


def flag_name(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


@dataclass(frozen=True, kw_only=True)
class JobArguments:
    """A job's command line as typed fields; ``to_argv`` and ``parser`` are two views of the same fields."""

    job: ClassVar[str]
    description: ClassVar[str]

    metrics: str | None = flag(
        "also write the job's summary as JSON to this URI (read by the DAG's report)", default=None
    )

    def to_argv(self) -> list[str]:
        argv = []
        for spec in fields(self):
            value = getattr(self, spec.name)
            if value is not None:
                argv += [flag_name(spec.name), str(value)]
        return argv

    @classmethod
    def parser(cls) -> argparse.ArgumentParser:
        parser = argparse.ArgumentParser(prog=f"{cls.job}.py", description=cls.description)
        for spec in fields(cls):
            required = spec.default is MISSING
            shown_default = "" if required or spec.default is None else " (default %(default)s)"
            parser.add_argument(
                flag_name(spec.name),
                dest=spec.name,
                required=required,
                default=None if required else spec.default,
                type=spec.metadata["parse"],
                metavar=spec.metadata["metavar"],
                help=spec.metadata["help"] + shown_default,
            )
        return parser

    @classmethod
    def parse(cls, argv: Sequence[str] | None = None) -> Self:
        """The arguments in ``argv``; bad ones make argparse print the usage and exit with 2."""
        return cls(**vars(cls.parser().parse_args(argv)))


@dataclass(frozen=True, kw_only=True)
class FeaturizeArguments(JobArguments):
    job = "featurize"
    description = "Turn every image under a folder into a 1280-d MobileNetV2 embedding."

    images: str = flag("folder of <class>/<image> files, searched recursively")
    output: str = flag("Parquet output: path, label, features")
    errors: str = flag("Parquet output: path, label, error, one row per image that could not be featurised")
    weights: str = flag(
        f"'{WEIGHTS_IMAGENET}' (downloaded on the driver), '{WEIGHTS_RANDOM}' (seeded, for tests) "
        "or the URI of a Keras .h5 weights file",
        default=WEIGHTS_IMAGENET,
        metavar=f"{WEIGHTS_IMAGENET}|{WEIGHTS_RANDOM}|URI",
    )
    batch_size: int = flag("images per forward pass", default=DEFAULT_BATCH_SIZE, parse=positive_int, metavar="N")
    partitions: int | None = flag(
        f"about how many tasks share the images (default: {TASKS_PER_CORE} per core of Spark's parallelism)",
        default=None,
        parse=positive_int,
        metavar="N",
    )
    engine: str = flag(
        f"'{ENGINE_ONNX}' (ONNX Runtime; the network is converted once on the driver), "
        f"'{ENGINE_OPENVINO}' (OpenVINO, f32, on the same converted network), '{ENGINE_OPENVINO_BF16}' (OpenVINO "
        f"in bf16 where the CPU has it, else f32, and says so) or '{ENGINE_TENSORFLOW}' (the reference)",
        default=DEFAULT_ENGINE,
        parse=engine_name,
        metavar="|".join(ENGINES),
    )
    model_cache: str | None = flag(
        "folder (any Hadoop URI) keeping converted models between runs, for the "
        f"{', '.join(ONNX_MODEL_ENGINES)} engines, or '{MODEL_CACHE_OFF}' to convert on every run (default: a "
        "per-user folder, $XDG_CACHE_HOME/fruitflow/models or ~/.cache/fruitflow/models, when Spark's master "
        "is local; none on a cluster)",
        default=None,
        metavar=f"URI|{MODEL_CACHE_OFF}",
    )
    previous_features: str | None = flag(
        "a previous run's --output: images whose path, size and modification time are unchanged keep "
        "their rows instead of going through the network again (with --previous-errors)",
        default=None,
    )
    previous_errors: str | None = flag("that previous run's --errors", default=None)


@dataclass(frozen=True, kw_only=True)
class PcaArguments(JobArguments):
    job = "pca"
    description = "Standardise the embeddings and reduce them with PCA."

    features: str = flag("featurize output (Parquet)")
    output: str = flag("Parquet output: path, label, pca")
    explained_variance: str = flag("JSON output: k and the explained variance ratios")
    plot: str = flag("PNG output: the cumulative explained variance, with the threshold and k marked")
    scatter: str | None = flag(
        "PNG output: every image (a sample on big runs) on the first two principal components, one colour per label",
        default=None,
    )
    variance: float = flag(
        "share of variance the kept components must explain, in (0, 1]",
        default=DEFAULT_VARIANCE,
        parse=variance_share,
        metavar="SHARE",
    )


def csv_columns(k: int) -> list[str]:
    """The CSV's header: path, label, then one column per kept component."""
    return ["path", "label", *[f"pc_{index}" for index in range(1, k + 1)]]


@dataclass(frozen=True, kw_only=True)
class ExportCsvArguments(JobArguments):
    job = "export_csv"
    description = "Write the PCA output as one CSV file: path,label,pc_1..pc_k."

    pca: str = flag("pca output (Parquet)")
    output: str = flag("the CSV file to write (replaced if present)")


@dataclass(frozen=True, kw_only=True)
class JsonRecord:
    """A small JSON file one side writes and the other reads: a key missing on read is an error,
    unless its field has a default (a field added later, absent from files written before)."""

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> Self:
        data = json.loads(text)
        return cls(**{spec.name: data[spec.name] for spec in fields(cls) if spec.name in data or _required(spec)})


def _required(spec) -> bool:
    return spec.default is MISSING and spec.default_factory is MISSING


@dataclass(frozen=True, kw_only=True)
class JobMetrics(JsonRecord):
    """What a job's ``--metrics`` file holds: its counts, plus the seconds the job ran."""

    seconds: float = 0.0

    def timed(self, seconds: float) -> Self:
        return replace(self, seconds=round(seconds, 2))

    def summary(self) -> str:
        counts = {key: value for key, value in asdict(self).items() if key != "seconds"}
        return " ".join(f"{key}={value}" for key, value in {**counts, "seconds": self.seconds}.items())


@dataclass(frozen=True, kw_only=True)
class FeaturizeMetrics(JobMetrics):
    images: int  # files listed
    featurised: int
    errors: int  # images + errors == images listed
    model_rows: int  # rows that went through the network: new + changed
    reused: int  # unchanged since the previous outputs: rows carried over
    new: int
    changed: int  # same path, another size or modification time
    removed: int  # in the previous outputs, gone from the images
    weights: str
    engine: str


@dataclass(frozen=True, kw_only=True)
class FeaturesIdentity(JsonRecord):
    """What decides a features row besides the image: the featurize job's ``_model.json``."""

    engine: str
    weights_digest: str
    preprocessing: str


@dataclass(frozen=True, kw_only=True)
class PcaMetrics(JobMetrics):
    images: int
    k: int
    variance: float  # the share the k components explain


@dataclass(frozen=True, kw_only=True)
class ExportCsvMetrics(JobMetrics):
    rows: int
    components: int
    bytes: int  # the CSV's size as written: the DAG checks the file against it without reading its rows


@dataclass(frozen=True, kw_only=True)
class ExplainedVariance(JsonRecord):
    """The PCA job's ``--explained-variance`` file: how many components were kept and why."""

    k: int
    variance_threshold: float
    explained_variance: float  # cumulative share of the k kept components
    explained_variance_ratio: list[float]  # every component with variance, in decreasing order
    cumulative_explained_variance_ratio: list[float]
