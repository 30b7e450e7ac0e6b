"""One pipeline run: its validated inputs and where each of its outputs goes."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime

REPORT_FILE = "report.json"


def run_key(moment: datetime) -> str:
    """Name of a run's folder: its logical date in ISO basic form, safe in S3 keys and Hadoop paths."""
    return moment.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def join_uri(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts])


@dataclass(frozen=True)
class PipelineRun:
    key: str
    images_uri: str
    results_uri: str
    code_version: str
    variance: float
    weights: str
    batch_size: int
    max_error_share: float
    engine: str
    partitions: int | None = None  # featurize tasks: set on EMR from the executor plan, Spark's default locally
    executor_plan: str | None = None  # EMR: the executors' layout, for the log and the report
    previous_key: str | None = None  # the last good run, whose unchanged rows featurize carries over

    @property
    def uri(self) -> str:
        return join_uri(self.results_uri, self.key)

    @property
    def code_uri(self) -> str:
        """Job code is stored by version, beside the run folders: runs of unchanged code share it."""
        return join_uri(self.results_uri, "_code", self.code_version)

    @property
    def model_cache_uri(self) -> str:
        """Converted models, beside the run folders: every run of the same weights and engine reuses one."""
        return join_uri(self.results_uri, "_models")

    @property
    def features_uri(self) -> str:
        return join_uri(self.uri, "features")

    @property
    def previous_features_uri(self) -> str | None:
        return join_uri(self.results_uri, self.previous_key, "features") if self.previous_key else None

    @property
    def previous_errors_uri(self) -> str | None:
        return join_uri(self.results_uri, self.previous_key, "errors") if self.previous_key else None

    @property
    def errors_uri(self) -> str:
        return join_uri(self.uri, "errors")

    @property
    def pca_uri(self) -> str:
        return join_uri(self.uri, "pca")

    @property
    def csv_uri(self) -> str:
        return join_uri(self.uri, "pca_features.csv")

    @property
    def explained_variance_uri(self) -> str:
        return join_uri(self.uri, "explained_variance.json")

    @property
    def plot_uri(self) -> str:
        return join_uri(self.uri, "explained_variance.png")

    @property
    def scatter_uri(self) -> str:
        return join_uri(self.uri, "pca_scatter.png")

    @property
    def report_uri(self) -> str:
        return join_uri(self.uri, REPORT_FILE)

    @property
    def report_html_uri(self) -> str:
        return join_uri(self.uri, "report.html")

    def metrics_uri(self, step_name: str) -> str:
        return join_uri(self.uri, "metrics", f"{step_name}.json")

    def to_xcom(self) -> dict:
        return asdict(self)

    @classmethod
    def from_xcom(cls, value: dict) -> PipelineRun:
        return cls(**value)
