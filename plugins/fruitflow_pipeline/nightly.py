"""Nightly runs that cost only what changed.

``<results_uri>/latest.json`` points at the last run whose outputs passed ``check_outputs``, with
what it was computed from: the images' listing (paths, sizes, modification times), the params
that shape the outputs, the weights' content, the jobs' code version, and its features' identity.
A run for which all of these are the same has nothing to do; any other run hands that run's
outputs to the featurize job, which carries over the rows whose features' identity still matches.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

from fruitflow.contract import (
    FEATURES_IDENTITY_FILE,
    WEIGHTS_IMAGENET,
    WEIGHTS_RANDOM,
    FeaturesIdentity,
    JsonRecord,
    is_image_path,
)
from fruitflow_pipeline.run import PipelineRun, join_uri
from fruitflow_pipeline.storage import Storage

log = logging.getLogger(__name__)

LATEST_FILE = "latest.json"


def latest_uri(results_uri: str) -> str:
    return join_uri(results_uri, LATEST_FILE)


def output_shaping(run: PipelineRun) -> dict:
    """The params that change the outputs of the same images; the others (batch size, cluster
    shape, error tolerance) only change how they are computed or judged."""
    return {"variance": run.variance, "weights": run.weights, "engine": run.engine}


@dataclass(frozen=True, kw_only=True)
class ImagesListing:
    digest: str  # sha256 of the sorted "path, size, modification time" lines of the images
    images: int


def list_images(storage: Storage, images_uri: str) -> ImagesListing:
    """The featurize job's view of ``images_uri``, as one digest: any image added, removed,
    rewritten or touched changes it. One listing of the prefix (S3: a request per 1,000 keys)."""
    lines = sorted(
        f"{listed.path}\t{listed.size}\t{listed.modified}"
        for listed in storage.files_under(images_uri)
        if is_image_path(listed.path)
    )
    return ImagesListing(digest=hashlib.sha256("\n".join(lines).encode()).hexdigest(), images=len(lines))


def weights_fingerprint(storage: Storage, weights: str) -> str:
    """What identifies the weights' content without downloading them: a named set stands for itself,
    a file is fingerprinted by the store (S3: ETag and size; a local file: its SHA-256)."""
    return weights if weights in (WEIGHTS_IMAGENET, WEIGHTS_RANDOM) else storage.fingerprint(weights)


@dataclass(frozen=True, kw_only=True)
class RunInputs(JsonRecord):
    """Everything a run's outputs are computed from besides the params: what find_changes saw
    before any step ran, and what latest.json keeps of the last good run."""

    listing_digest: str
    images: int
    weights_fingerprint: str
    code_version: str


def run_inputs(storage: Storage, run: PipelineRun) -> RunInputs:
    listing = list_images(storage, run.images_uri)
    return RunInputs(
        listing_digest=listing.digest,
        images=listing.images,
        weights_fingerprint=weights_fingerprint(storage, run.weights),
        code_version=run.code_version,
    )


@dataclass(frozen=True, kw_only=True)
class LatestRun(JsonRecord):
    """``latest.json``: the last good run and what its outputs were computed from."""

    run_key: str
    run_uri: str
    csv_uri: str
    features_identity: dict  # the features' _model.json: engine, weights digest, preprocessing
    output_shaping: dict
    listing_digest: str
    images: int
    # Absent from a latest.json written before they were recorded: then they count as changed.
    weights_fingerprint: str | None = None
    code_version: str | None = None

    def changes_for(self, run: PipelineRun, inputs: RunInputs) -> list[str]:
        """What differs between this good run's inputs and ``run``'s, one line each; none when
        ``run`` would compute the same outputs."""
        since, changes = f"since {self.run_key}", []
        older = f"not recorded by {self.run_key} (an older latest.json): taken as changed"
        if self.listing_digest != inputs.listing_digest:
            changes.append(f"images changed {since} ({self.images} then, {inputs.images} now)")
        params = {name: value for name, value in output_shaping(run).items() if self.output_shaping.get(name) != value}
        changes += [
            f"param {name} changed {since} ({self.output_shaping.get(name)!r} then, {value!r} now)"
            for name, value in params.items()
        ]
        if self.weights_fingerprint is None:
            changes.append(f"weights {older}")
        elif self.weights_fingerprint != inputs.weights_fingerprint and "weights" not in params:
            changes.append(f"weights changed {since}: {run.weights} was rewritten")
        if self.code_version is None:
            changes.append(f"jobs' code version {older}")
        elif self.code_version != inputs.code_version:
            changes.append(f"jobs' code changed {since} (version {self.code_version} then, {inputs.code_version} now)")
        return changes


def read_latest(storage: Storage, results_uri: str) -> LatestRun | None:
    """The last good run under ``results_uri``; None when there is none or its pointer is unreadable
    (then the run computes everything, as a first run does)."""
    uri = latest_uri(results_uri)
    if not storage.exists(uri):
        return None
    try:
        return LatestRun.from_json(storage.read_text(uri))
    except (ValueError, KeyError, TypeError) as problem:
        log.warning("%s is unreadable (%s): this run computes every image", uri, problem)
        return None


def record_good_run(storage: Storage, run: PipelineRun, inputs: RunInputs) -> LatestRun:
    """Make ``run``, whose outputs passed the checks, the last good run: write latest.json.
    ``inputs`` are what find_changes saw, before the steps ran."""
    identity = FeaturesIdentity.from_json(storage.read_text(join_uri(run.features_uri, FEATURES_IDENTITY_FILE)))
    latest = LatestRun(
        run_key=run.key,
        run_uri=run.uri,
        csv_uri=run.csv_uri,
        features_identity=identity.to_dict(),
        output_shaping=output_shaping(run),
        listing_digest=inputs.listing_digest,
        images=inputs.images,
        weights_fingerprint=inputs.weights_fingerprint,
        code_version=inputs.code_version,
    )
    storage.write_text(latest_uri(run.results_uri), latest.to_json())
    return latest


def asset_extra(run: PipelineRun, summary: dict, cluster_usage: dict | None) -> dict:
    """What a features asset event tells the DAGs it triggers: where the outputs are, k, the
    counts, each step's seconds and, on EMR, the cluster's phases, instance time and cost
    (``cluster_usage``, as in report.json)."""
    counts = summary["counts"]
    return {
        "run": run.key,
        "csv": run.csv_uri,
        "features": run.features_uri,
        "k": summary["pca"]["k"],
        **{name: counts[name] for name in ("images", "new", "changed", "removed", "reused", "errors")},
        "seconds": summary["seconds"],
        **({"cluster": cluster_usage} if cluster_usage is not None else {}),
    }
