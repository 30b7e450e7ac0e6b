"""The images' listings a night keeps, and what the next night counts from them before any step:
images_to_featurize's branches, and keep/kept/forget_listings on a local folder and on S3 (moto)."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import pytest

from fruitflow.contract import (
    ENGINE_ONNX,
    ENGINE_TENSORFLOW,
    FEATURES_IDENTITY_FILE,
    PREPROCESSING,
    WEIGHTS_IMAGENET,
    WEIGHTS_RANDOM,
    FeaturesIdentity,
)
from fruitflow_pipeline.nightly import (
    LISTING_FILE,
    ImagesListing,
    LatestRun,
    ToFeaturize,
    forget_listings,
    images_to_featurize,
    keep_listing,
    kept_listing,
    latest_uri,
    list_images,
    listing_folder,
    output_shaping,
    read_latest,
    record_good_run,
    run_inputs,
)
from fruitflow_pipeline.run import PipelineRun, join_uri
from fruitflow_pipeline.storage import LocalStorage, S3Storage

GOOD_KEY = "20261205T020000Z"  # the last good run
TONIGHT = "20261206T020000Z"
BUCKET = "fruits"


def pipeline_run(results_uri: str = "/results", key: str = TONIGHT, **changes) -> PipelineRun:
    values = {
        "key": key,
        "images_uri": "/images",
        "results_uri": results_uri,
        "code_version": "c0de",
        "variance": 0.95,
        "weights": WEIGHTS_IMAGENET,
        "batch_size": 16,
        "max_error_share": 0.05,
        "engine": ENGINE_ONNX,
        "previous_key": GOOD_KEY,
    }
    return PipelineRun(**(values | changes))


def listing(*lines: str) -> ImagesListing:
    return ImagesListing(lines=tuple(sorted(lines)))


def last_good(previous: ImagesListing, preprocessing: str = PREPROCESSING, **output_shaping_changes) -> LatestRun:
    """latest.json of the good run GOOD_KEY that saw ``previous``, made with the default params."""
    good = pipeline_run(key=GOOD_KEY, previous_key=None)
    return LatestRun(
        run_key=GOOD_KEY,
        run_uri=good.uri,
        csv_uri=good.csv_uri,
        features_identity={"engine": ENGINE_ONNX, "weights_digest": "sha256:0", "preprocessing": preprocessing},
        output_shaping=output_shaping(good) | output_shaping_changes,
        listing_digest=previous.digest,
        images=previous.images,
        weights_fingerprint=WEIGHTS_IMAGENET,
        code_version="c0de",
    )


BEFORE = listing("Kiwi/1.jpg\t100\tt1", "Kiwi/2.jpg\t100\tt1", "Lemon/3.jpg\t100\tt1")
NOW = listing("Kiwi/1.jpg\t100\tt1", "Kiwi/2.jpg\t100\tt1", "Lemon/3.jpg\t100\tt1", "Lemon/4.jpg\t100\tt2")


def counted(run: PipelineRun, latest: LatestRun | None, previous: ImagesListing | None, full_refresh=False):
    inputs = run_inputs(run, NOW, run.weights)
    return images_to_featurize(run, inputs, NOW, latest, previous, full_refresh)


def test_a_full_refresh_counts_every_image_even_after_a_good_run():
    assert counted(pipeline_run(), last_good(BEFORE), BEFORE, full_refresh=True) == ToFeaturize(
        images=4, why="full_refresh: all 4 images"
    )


def test_features_of_another_preprocessing_count_every_image():
    older = last_good(BEFORE, preprocessing="pillow-rgb/resize-224-bilinear/mobilenet_v2-tf-float32")
    assert counted(pipeline_run(), older, BEFORE) == ToFeaturize(
        images=4, why=f"the images' preprocessing changed since {GOOD_KEY}: all 4 images"
    )


def test_a_first_night_counts_every_image():
    assert counted(pipeline_run(previous_key=None), None, None) == ToFeaturize(
        images=4, why="no earlier good run: all 4 images"
    )


@pytest.mark.parametrize(
    ("run_changes", "changed"),
    [
        ({"weights": WEIGHTS_RANDOM}, "weights"),
        ({"engine": ENGINE_TENSORFLOW}, "engine"),
        ({"weights": WEIGHTS_RANDOM, "engine": ENGINE_TENSORFLOW}, "weights and engine"),
    ],
)
def test_other_weights_or_another_engine_count_every_image(run_changes, changed):
    assert counted(pipeline_run(**run_changes), last_good(BEFORE), BEFORE) == ToFeaturize(
        images=4, why=f"{changed} changed since {GOOD_KEY}: all 4 images"
    )


def test_weights_rewritten_under_the_same_name_count_every_image():
    run = pipeline_run(weights="/weights/mobilenet.h5")
    latest = last_good(BEFORE, weights="/weights/mobilenet.h5")  # the same param, another fingerprint
    inputs = run_inputs(run, NOW, "sha256:rewritten")

    assert images_to_featurize(run, inputs, NOW, latest, BEFORE, False) == ToFeaturize(
        images=4, why=f"weights' content changed since {GOOD_KEY}: all 4 images"
    )


def test_a_missing_previous_listing_counts_every_image():
    assert counted(pipeline_run(), last_good(BEFORE), None) == ToFeaturize(
        images=4, why=f"the listing of {GOOD_KEY} is not kept: all 4 images counted"
    )


def test_a_variance_change_alone_counts_only_the_new_images():
    """Variance shapes the PCA, not the features: every unchanged row is carried over."""
    assert counted(pipeline_run(variance=0.5), last_good(BEFORE), BEFORE) == ToFeaturize(
        images=1, why=f"1 of 4 images new or changed since {GOOD_KEY}"
    )


def write_image(path: Path, content: bytes, mtime: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    os.utime(path, (mtime, mtime))


def test_added_and_rewritten_images_are_counted_and_removed_ones_are_not(tmp_path):
    store, images = LocalStorage(), tmp_path / "images"
    for name in ("Kiwi/1.jpg", "Kiwi/2.jpg", "Kiwi/3.jpg", "Lemon/4.jpg", "Lemon/5.jpg"):
        write_image(images / name, b"jpeg", 1_700_000_000)
    (images / "Lemon" / "notes.txt").write_text("not an image")
    before = list_images(store, str(images))

    write_image(images / "Kiwi/1.jpg", b"longer jpeg", 1_700_000_000)  # rewritten: another size
    write_image(images / "Kiwi/2.jpg", b"jpeg", 1_700_000_500)  # rewritten: the same size, touched
    (images / "Lemon" / "5.jpg").unlink()  # removed: nothing to compute
    write_image(images / "Lemon/6.jpg", b"jpeg", 1_700_000_000)  # added
    now = list_images(store, str(images))
    run = pipeline_run()
    inputs = run_inputs(run, now, WEIGHTS_IMAGENET)

    assert (before.images, now.images) == (5, 5)
    assert images_to_featurize(run, inputs, now, last_good(before), before, False) == ToFeaturize(
        images=3, why=f"3 of 5 images new or changed since {GOOD_KEY}"
    )


def test_a_rerun_of_the_last_good_run_counts_every_image():
    # A cleared rerun of the last good run empties the folder it would carry over from (previous_key None).
    rerun = pipeline_run(key=GOOD_KEY, previous_key=None)  # what validate_run plans for it

    counted_images = counted(rerun, last_good(BEFORE), BEFORE)
    assert counted_images.images == 4
    assert counted_images.why == f"nothing is carried over from {GOOD_KEY}: all 4 images"


@pytest.fixture
def s3_results(aws) -> tuple[S3Storage, str]:
    """A results folder in a bucket in moto."""
    import boto3

    from rehearsal.buckets import create_bucket

    s3 = boto3.client("s3")
    create_bucket(s3, BUCKET, s3.meta.region_name)
    return S3Storage("aws_default"), f"s3://{BUCKET}/results"


@pytest.fixture(params=["local", "s3"])
def results(request, tmp_path) -> tuple[LocalStorage | S3Storage, str]:
    """A store and an empty results folder in it: a local folder, or a bucket in moto."""
    if request.param == "local":
        return LocalStorage(), str(tmp_path / "results")
    return request.getfixturevalue("s3_results")


def kept_uri(results_uri: str, listing: ImagesListing) -> str:
    return join_uri(listing_folder(results_uri, listing.digest), LISTING_FILE)


def kept_digests(store, results_uri: str) -> set[str]:
    return {listed.path.split("/")[0] for listed in store.files_under(join_uri(results_uri, "_listings"))}


def test_a_kept_listing_is_read_back_as_it_was(results):
    store, results_uri = results
    keep_listing(store, results_uri, NOW)

    assert kept_listing(store, results_uri, NOW.digest) == NOW
    assert gzip.decompress(store.read_bytes(kept_uri(results_uri, NOW))).decode() == NOW.text
    assert kept_listing(store, results_uri, BEFORE.digest) is None


def test_a_listing_that_is_not_what_its_digest_says_is_not_read(results):
    store, results_uri = results
    keep_listing(store, results_uri, NOW)
    keep_listing(store, results_uri, BEFORE)
    store.write_bytes(kept_uri(results_uri, NOW), gzip.compress(BEFORE.text.encode()))  # another listing's content
    store.write_bytes(kept_uri(results_uri, BEFORE), b"not gzip")

    assert kept_listing(store, results_uri, NOW.digest) is None
    assert kept_listing(store, results_uri, BEFORE.digest) is None


def test_an_empty_listing_is_kept_too(results):
    store, results_uri = results
    empty = listing()
    keep_listing(store, results_uri, empty)

    assert kept_listing(store, results_uri, empty.digest) == empty


def test_a_listing_is_written_once(tmp_path):
    store, results_uri = LocalStorage(), str(tmp_path / "results")
    keep_listing(store, results_uri, NOW)
    kept = Path(kept_uri(results_uri, NOW))
    os.utime(kept, (1_700_000_000, 1_700_000_000))
    written = kept.read_bytes()

    keep_listing(store, results_uri, NOW)
    assert (kept.stat().st_mtime, kept.read_bytes()) == (1_700_000_000, written)


def test_a_listing_kept_on_s3_is_put_once(s3_results, aws_calls):
    store, results_uri = s3_results
    keep_listing(store, results_uri, NOW)
    keep_listing(store, results_uri, NOW)

    puts = [params["Key"] for operation, params in aws_calls if operation == "PutObject"]
    assert puts == [f"results/_listings/{NOW.digest}/{LISTING_FILE}"]


def test_forgetting_listings_keeps_only_the_one_named(results):
    store, results_uri = results
    third = listing("Pear/9.jpg\t1\tt")
    for kept in (BEFORE, NOW, third):
        keep_listing(store, results_uri, kept)

    forget_listings(store, results_uri, NOW.digest)
    assert kept_digests(store, results_uri) == {NOW.digest}
    assert kept_listing(store, results_uri, NOW.digest) == NOW
    forget_listings(store, results_uri, NOW.digest)
    assert kept_digests(store, results_uri) == {NOW.digest}


def test_forgetting_listings_where_none_was_kept_does_nothing(results):
    store, results_uri = results

    forget_listings(store, results_uri, NOW.digest)
    assert kept_digests(store, results_uri) == set()


def test_a_good_run_leaves_only_its_own_listing(results):
    store, results_uri = results
    run = pipeline_run(results_uri)
    identity = FeaturesIdentity(engine=ENGINE_ONNX, weights_digest="sha256:w", preprocessing="p1")
    store.write_text(join_uri(run.features_uri, FEATURES_IDENTITY_FILE), identity.to_json())
    keep_listing(store, results_uri, BEFORE)  # the last good run's
    keep_listing(store, results_uri, listing("Kiwi/1.jpg\t100\tt1"))  # a night that failed
    keep_listing(store, results_uri, NOW)  # tonight's
    inputs = run_inputs(run, NOW, WEIGHTS_IMAGENET)

    latest = record_good_run(store, run, inputs)
    assert kept_digests(store, results_uri) == {NOW.digest}
    assert read_latest(store, results_uri) == latest
    assert (latest.run_key, latest.listing_digest, latest.images) == (TONIGHT, NOW.digest, 4)
    assert latest.features_identity == identity.to_dict()
    assert store.exists(latest_uri(results_uri))
    # the next night counts from what this one kept
    assert kept_listing(store, results_uri, latest.listing_digest) == NOW
