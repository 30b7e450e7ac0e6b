"""Nightly runs that cost only what changed.

``<results_uri>/latest.json`` points at the last run whose outputs passed ``check_outputs``, with
what it was computed from: the images' listing (paths, sizes, modification times), the params
that shape the outputs, the weights' content, the jobs' code version, and its features' identity.
A run for which all of these are the same has nothing to do; any other run hands that run's
outputs to the featurize job, which carries over the rows whose features' identity still matches.
Each listing a run went ahead with is kept under ``<results_uri>/_listings/<its digest>/``, so the
next night knows, before any step, how many images it sends through the network.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
from dataclasses import dataclass

from fruitflow.contract import (
    FEATURES_IDENTITY_FILE,
    PREPROCESSING,
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
LISTINGS_FOLDER = "_listings"
LISTING_FILE = "listing.tsv.gz"


def latest_uri(results_uri: str) -> str:
    return join_uri(results_uri, LATEST_FILE)


def output_shaping(run: PipelineRun) -> dict:
    """The params that change the outputs of the same images; the others (batch size, cluster
    shape, error tolerance) only change how they are computed or judged."""
    return {"variance": run.variance, "weights": run.weights, "engine": run.engine}


@dataclass(frozen=True, kw_only=True)
class ImagesListing:
    lines: tuple[str, ...]  # one "path, size, modification time" line per image, sorted

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    @property
    def images(self) -> int:
        return len(self.lines)


def list_images(storage: Storage, images_uri: str) -> ImagesListing:
    """The featurize job's view of ``images_uri``: a file is the same image while its path, size and
    modification time are, so any image added, removed, rewritten or touched changes the listing's
    digest. One listing of the prefix (S3: a request per 1,000 keys)."""
    lines = sorted(
        f"{listed.path}\t{listed.size}\t{listed.modified}"
        for listed in storage.files_under(images_uri)
        if is_image_path(listed.path)
    )
    return ImagesListing(lines=tuple(lines))


def listing_folder(results_uri: str, digest: str) -> str:
    return join_uri(results_uri, LISTINGS_FOLDER, digest)


def keep_listing(storage: Storage, results_uri: str, listing: ImagesListing) -> None:
    """Keep the listing a run goes ahead with, under its digest (the same listing is written once)."""
    uri = join_uri(listing_folder(results_uri, listing.digest), LISTING_FILE)
    if not storage.exists(uri):
        storage.write_bytes(uri, gzip.compress(listing.text.encode(), mtime=0))


def kept_listing(storage: Storage, results_uri: str, digest: str) -> ImagesListing | None:
    """The listing kept under ``digest``; None when there is none or it is not what its digest says."""
    uri = join_uri(listing_folder(results_uri, digest), LISTING_FILE)
    if not storage.exists(uri):
        return None
    try:
        text = gzip.decompress(storage.read_bytes(uri)).decode()
    except (OSError, EOFError, UnicodeDecodeError) as problem:
        log.warning("%s is unreadable (%s)", uri, problem)
        return None
    listing = ImagesListing(lines=tuple(text.split("\n")) if text else ())
    return listing if listing.digest == digest else None


def forget_listings(storage: Storage, results_uri: str, keep_digest: str) -> None:
    """Delete the kept listings but the last good run's: the runs that went ahead and failed left theirs."""
    digests = {listed.path.split("/")[0] for listed in storage.files_under(join_uri(results_uri, LISTINGS_FOLDER))}
    for digest in sorted(digests - {keep_digest}):
        storage.delete_folder(listing_folder(results_uri, digest))


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


def run_inputs(run: PipelineRun, listing: ImagesListing, weights: str) -> RunInputs:
    """What ``run`` computes from: ``listing`` of its images and ``weights``, their fingerprint."""
    return RunInputs(
        listing_digest=listing.digest,
        images=listing.images,
        weights_fingerprint=weights,
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


@dataclass(frozen=True, kw_only=True)
class ToFeaturize(JsonRecord):
    """How many images a run that goes ahead sends through the network, and why that many."""

    images: int
    why: str


def images_to_featurize(
    run: PipelineRun,
    inputs: RunInputs,
    listing: ImagesListing,
    latest: LatestRun | None,
    previous_listing: ImagesListing | None,
    full_refresh: bool,
) -> ToFeaturize:
    """The images the featurize job will compute rather than carry over: those new or changed since
    the last good run, or every one when there is none to carry over from or its features were
    computed otherwise (weights, engine, preprocessing). Known from the listings alone."""
    every = inputs.images
    if full_refresh:
        return ToFeaturize(images=every, why=f"full_refresh: all {every:,} images")
    if latest is None:
        return ToFeaturize(images=every, why=f"no earlier good run: all {every:,} images")
    if run.previous_key != latest.run_key:  # a cleared rerun of the last good run empties what it would carry over
        return ToFeaturize(images=every, why=f"nothing is carried over from {latest.run_key}: all {every:,} images")
    otherwise = [name for name in ("weights", "engine") if latest.output_shaping.get(name) != getattr(run, name)]
    if latest.weights_fingerprint != inputs.weights_fingerprint and "weights" not in otherwise:
        otherwise.append("weights' content")
    if latest.features_identity.get("preprocessing") != PREPROCESSING:
        otherwise.append("the images' preprocessing")
    if otherwise:
        return ToFeaturize(
            images=every, why=f"{' and '.join(otherwise)} changed since {latest.run_key}: all {every:,} images"
        )
    if previous_listing is None:
        return ToFeaturize(
            images=every, why=f"the listing of {latest.run_key} is not kept: all {every:,} images counted"
        )
    fresh = len(set(listing.lines) - set(previous_listing.lines))
    return ToFeaturize(images=fresh, why=f"{fresh:,} of {every:,} images new or changed since {latest.run_key}")


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
    forget_listings(storage, run.results_uri, inputs.listing_digest)
    return latest


def asset_extra(run: PipelineRun, summary: dict, cluster_usage: dict | None, clusters: list[dict] = ()) -> dict:
    """What a features asset event tells the DAGs it triggers: where the outputs are, k, the
    counts, each step's seconds and, on EMR, the cluster's phases, instance time and cost
    (``cluster_usage``, as in report.json) and every cluster the run started (``clusters``)."""
    counts = summary["counts"]
    return {
        "run": run.key,
        "csv": run.csv_uri,
        "features": run.features_uri,
        "k": summary["pca"]["k"],
        **{name: counts[name] for name in ("images", "new", "changed", "removed", "reused", "errors")},
        "seconds": summary["seconds"],
        **({"cluster": cluster_usage} if cluster_usage is not None else {}),
        **({"clusters": list(clusters)} if clusters else {}),
    }
