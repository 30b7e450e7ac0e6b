"""Where a trigger may point: FRUITFLOW_ALLOWED_URIS, the canonical URIs it is compared on, and the
runs refused before they claim a folder or start a cluster."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

import boto3
import pytest

from fruitflow_pipeline.params import InvalidParams, dag_params, plan_run, validate_run
from fruitflow_pipeline.plan import render_plan
from fruitflow_pipeline.settings import (
    SettingError,
    Settings,
    Target,
    UriError,
    allowed_prefix,
    canonical_uri,
    lies_under_any,
    resolved_location,
)
from fruitflow_pipeline.storage import LocalStorage
from rehearsal.buckets import create_bucket
from scripts.demo import deployment_defaults

ROOT = Path(__file__).resolve().parents[2]
MOMENT = datetime(2026, 11, 26, 2, 0, tzinfo=UTC)


def allowed(uri: str, prefix: str, target: Target) -> bool:
    location = resolved_location(canonical_uri(uri, target), target)
    return lies_under_any(location, (allowed_prefix(prefix, target),))


@pytest.mark.parametrize(
    ("uri", "canonical"),
    [
        ("s3://bucket/images", "s3://bucket/images"),
        ("s3://bucket/images/", "s3://bucket/images"),
        ("s3a://bucket/images", "s3://bucket/images"),
        ("S3N://bucket//images///Training/", "s3://bucket/images/Training"),
        ("s3://bucket/images/./a/../b", "s3://bucket/images/b"),
        ("s3://bucket/images/kiwi%20slice", "s3://bucket/images/kiwi slice"),
        ("s3://bucket/images%2F..%2Fother", "s3://bucket/other"),
        ("s3://bucket/../../x", "s3://bucket/x"),  # '..' never climbs out of the bucket
        ("s3://bucket", "s3://bucket"),
        (" s3://bucket/ ", "s3://bucket"),
    ],
)
def test_s3_uris_have_one_spelling(uri, canonical):
    assert canonical_uri(uri, Target.EMR) == canonical


@pytest.mark.parametrize(
    ("uri", "canonical"),
    [
        ("/data/images", "/data/images"),
        ("/data/images/", "/data/images"),
        ("file:/data/images", "/data/images"),
        ("file:///data/images/", "/data/images"),
        ("file:////data//images", "/data/images"),
        ("/data/results/../../etc", "/etc"),
        ("/data/images/%2e%2e/%2E%2E/etc", "/etc"),
        ("/data/kiwi%20slice", "/data/kiwi slice"),
        ("/../../etc", "/etc"),
    ],
)
def test_local_paths_have_one_spelling(uri, canonical):
    assert canonical_uri(uri, Target.LOCAL) == canonical


@pytest.mark.parametrize(
    ("uri", "target", "problem"),
    [
        ("/data/images", Target.EMR, "is not an s3:// URI"),
        ("https://bucket.s3.amazonaws.com/images", Target.EMR, "is not an s3:// URI"),
        ("s3:///images", Target.EMR, "has no valid bucket name"),
        ("s3://user@bucket/images", Target.EMR, "has no valid bucket name"),
        ("s3://bucket/images%00x", Target.EMR, "holds a control character"),
        ("s3://bucket/images", Target.LOCAL, "is not an absolute path"),
        ("data/images", Target.LOCAL, "is not an absolute path"),
        ("file:data/images", Target.LOCAL, "is not an absolute path"),
        ("file://etc/passwd", Target.LOCAL, "names a host"),
        ("/data/images\n", Target.LOCAL, None),  # surrounding whitespace is no part of a URI
        ("/data/im%0Aages", Target.LOCAL, "holds a control character"),
    ],
)
def test_uris_of_no_location_on_the_target_are_refused(uri, target, problem):
    if problem is None:
        assert canonical_uri(uri, target) == "/data/images"
        return
    with pytest.raises(UriError, match=problem):
        canonical_uri(uri, target)


@pytest.mark.parametrize(
    "uri",
    [
        "s3://bucket/allowed/../other",
        "s3://bucket/allowed/sub/../../other",
        "s3://bucket/allowed/..",
        "s3://bucket/allowed-not/",
        "s3://bucket/allowed-not",
        "s3://bucket/allowedx",
        "s3://bucket/Allowed",
        "s3://bucket//other",
        "s3://bucket//allowed/../other",
        "s3a://bucket/allowed/../other",
        "s3n://bucket/other",
        "s3a://other-bucket/allowed",
        "s3://bucket-other/allowed",
        "s3://bucket.example/allowed",
        "s3://bucket/allowed%2F..%2Fother",
        "s3://bucket/allowed/%2e%2e/other",
        "s3://bucket/allowed/%2E%2E%2Fother",
        "s3://bucket/allowed%2F%2E%2E",
        "s3://bucket",
    ],
)
def test_s3_spellings_that_step_out_of_the_prefix_are_refused(uri):
    assert not allowed(uri, "s3://bucket/allowed/", Target.EMR)


@pytest.mark.parametrize(
    "uri",
    [
        "s3://bucket/allowed",
        "s3://bucket/allowed/",
        "s3://bucket/allowed/Training",
        "s3a://bucket/allowed/Training/",
        "s3n://bucket//allowed//Training",
        "s3://bucket/allowed/a/../b",
        "s3://bucket/allowed%2FTraining",
        "s3://bucket/allowed/kiwi%20slice",
    ],
)
def test_s3_spellings_of_locations_in_the_prefix_are_allowed(uri):
    assert allowed(uri, "s3a://bucket//allowed", Target.EMR)


def test_a_bucket_prefix_allows_the_whole_bucket_and_no_other():
    assert allowed("s3://bucket/any/key", "s3://bucket", Target.EMR)
    assert allowed("s3://bucket", "s3://bucket/", Target.EMR)
    assert not allowed("s3://bucket2/any/key", "s3://bucket", Target.EMR)


@pytest.fixture
def disk(tmp_path) -> Path:
    """``allowed/`` with ``link`` inside, pointing out at ``other/``; ``alias`` outside, pointing in."""
    (tmp_path / "allowed" / "images").mkdir(parents=True)
    (tmp_path / "other").mkdir()
    (tmp_path / "allowed" / "link").symlink_to(tmp_path / "other")
    (tmp_path / "alias").symlink_to(tmp_path / "allowed")
    return tmp_path


LOCAL_ESCAPES = [
    "{root}/allowed/../other",
    "{root}/allowed/images/../../other",
    "{root}/allowed/..",
    "{root}/allowed-not",
    "{root}/allowed-not/images",
    "{root}/allowedx",
    "{root}//allowed/../other",
    "file:{root}/allowed/../other",
    "file://{root}/allowed/../other",
    "file:///{root}/other",
    "{root}/allowed%2F..%2Fother",
    "{root}/allowed/%2e%2e/other",
    "file:{root}/allowed/%2E%2E%2Fother",
    "{root}/allowed/link",
    "{root}/allowed/link/results",
    "file://{root}/allowed/link/results",
    "{root}/allowed/images/../link/results",
    "{root}/allowed/../../../../../../../../etc",
    "/etc",
]


@pytest.mark.parametrize("spelling", LOCAL_ESCAPES)
def test_local_spellings_that_step_out_of_the_prefix_are_refused(disk, spelling):
    assert not allowed(spelling.format(root=disk), f"{disk}/allowed", Target.LOCAL)


@pytest.mark.parametrize(
    "spelling",
    [
        "{root}/allowed",
        "{root}/allowed/",
        "{root}/allowed/images",
        "file:{root}/allowed/images",
        "file://{root}/allowed/images/",
        "file:///{root}//allowed//images",
        "{root}/allowed/link/../images",  # '..' resolved as written: the run is handed allowed/images
        "{root}/allowed/results-to-be",  # a folder that does not exist yet
        "{root}/allowed%2Fimages",
        "{root}/alias/images",  # a link from outside into the allowed folder
    ],
)
def test_local_spellings_of_locations_in_the_prefix_are_allowed(disk, spelling):
    assert allowed(spelling.format(root=disk), f"{disk}/allowed", Target.LOCAL)


def test_a_symlinked_prefix_allows_where_it_points(disk):
    assert allowed(f"{disk}/allowed/images", f"{disk}/alias", Target.LOCAL)
    assert allowed(f"{disk}/alias/images", f"file://{disk}/alias/", Target.LOCAL)
    assert not allowed(f"{disk}/alias/link", f"{disk}/alias", Target.LOCAL)


# The deployment settings: FRUITFLOW_ALLOWED_URIS and its default.


def test_unset_the_deployment_allows_the_locations_of_its_own_defaults():
    assert Settings.from_env({}).allowed_uris == ("s3://fruitflow-data/images", "s3://fruitflow-data/results")
    emr = Settings.from_env(
        {
            "FRUITFLOW_IMAGES_URI": "s3a://acme-fruits/in/",
            "FRUITFLOW_RESULTS_URI": "s3://acme-fruits/out",
            "FRUITFLOW_WEIGHTS": "s3://acme-models/mobilenet.h5",
        }
    )
    # The weights file itself, not its folder: a file at a bucket's root would allow the bucket.
    assert emr.allowed_uris == ("s3://acme-fruits/in", "s3://acme-fruits/out", "s3://acme-models/mobilenet.h5")
    local = Settings.from_env({"FRUITFLOW_TARGET": "local", "FRUITFLOW_WEIGHTS": "random"})
    assert local.allowed_uris == (local.images_uri, local.results_uri)  # 'random' names no location
    assert Settings.from_env({"FRUITFLOW_ALLOWED_URIS": " "}).allowed_uris == Settings.from_env({}).allowed_uris


def test_allowed_uris_are_parsed_once_into_canonical_prefixes(disk):
    settings = Settings.from_env({"FRUITFLOW_ALLOWED_URIS": "s3a://acme-fruits/in/, s3://acme-fruits//out,,"})
    assert settings.allowed_uris == ("s3://acme-fruits/in", "s3://acme-fruits/out")
    local = Settings.from_env({"FRUITFLOW_TARGET": "local", "FRUITFLOW_ALLOWED_URIS": f"file://{disk}/alias/"})
    assert local.allowed_uris == (f"{disk}/allowed",)
    assert Settings.from_env({"FRUITFLOW_ALLOWED_URIS": "*"}).allowed_uris == ("*",)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"FRUITFLOW_ALLOWED_URIS": "fruits/images"}, "FRUITFLOW_ALLOWED_URIS: 'fruits/images' is not an s3:// URI"),
        ({"FRUITFLOW_ALLOWED_URIS": "s3://fruits, /data"}, "FRUITFLOW_ALLOWED_URIS: '/data' is not an s3:// URI"),
        ({"FRUITFLOW_ALLOWED_URIS": "s3://x/images"}, "FRUITFLOW_ALLOWED_URIS: 's3://x/images' has no valid bucket"),
        ({"FRUITFLOW_ALLOWED_URIS": "*, s3://fruitflow-data"}, r"FRUITFLOW_ALLOWED_URIS: \* allows everything"),
        ({"FRUITFLOW_TARGET": "local", "FRUITFLOW_ALLOWED_URIS": "data/results"}, "'data/results' is not an absolute"),
        ({"FRUITFLOW_TARGET": "local", "FRUITFLOW_ALLOWED_URIS": "file://srv/data"}, "'file://srv/data' names a host"),
        ({"FRUITFLOW_TARGET": "local", "FRUITFLOW_ALLOWED_URIS": "/data/.."}, r"is the whole disk: .* say so with \*"),
        ({"FRUITFLOW_IMAGES_URI": "/data/images"}, "FRUITFLOW_IMAGES_URI: '/data/images' is not an s3:// URI"),
    ],
)  # fmt: skip
def test_malformed_allowed_uris_name_the_variable(env, message):
    with pytest.raises(SettingError, match=message):
        Settings.from_env(env)


def test_a_malformed_prefix_is_an_import_error_of_the_dag(monkeypatch):
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("FRUITFLOW_TARGET", "emr")
    monkeypatch.setenv("FRUITFLOW_ALLOWED_URIS", "fruits/results")
    (error,) = DagBag(dag_folder=str(ROOT / "dags")).import_errors.values()
    assert "SettingError: FRUITFLOW_ALLOWED_URIS: 'fruits/results' is not an s3:// URI" in error


# validate_params and make plan refuse what lies outside.


def local_params(images, results, **overrides) -> dict:
    return {"images_uri": str(images), "results_uri": str(results), "variance": 0.95, "weights": "random",
            "batch_size": 64, "max_error_share": 0.05, "engine": "onnx", "full_refresh": False,
            **overrides}  # fmt: skip


class ListingStorage(LocalStorage):
    """Local storage that remembers which folders it was asked to list."""

    def __init__(self):
        self.listed = []

    def files_under(self, uri):
        self.listed.append(uri)
        return super().files_under(uri)


@pytest.fixture
def allowed_disk(disk) -> Path:
    (disk / "allowed" / "images" / "Kiwi").mkdir(parents=True)
    (disk / "allowed" / "images" / "Kiwi" / "1.jpg").write_bytes(b"jpeg")
    (disk / "other" / "Kiwi").mkdir(parents=True)
    (disk / "other" / "Kiwi" / "1.jpg").write_bytes(b"jpeg")
    (disk / "allowed" / "weights.h5").write_bytes(b"h5")
    (disk / "other" / "weights.h5").write_bytes(b"h5")
    return disk


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"images_uri": "{r}/other"}, "images_uri: {r}/other is not allowed: "),
        ({"images_uri": "{r}/allowed/link"}, "images_uri: {r}/allowed/link .that is {r}/other. is not"),
        ({"results_uri": "{r}/allowed/../other/x"}, "results_uri: {r}/allowed/../other/x .that is {r}/other/x."),
        ({"results_uri": "file://{r}/allowed-not"}, "results_uri: file://{r}/allowed-not .that is {r}/allowed-not."),
        ({"results_uri": "{r}/allowed%2F..%2Fother"}, "results_uri: {r}/allowed%2F..%2Fother .that is {r}/other."),
        ({"weights": "{r}/other/weights.h5"}, "weights: {r}/other/weights.h5 is not allowed"),
        ({"weights": "{r}/allowed/link/weights.h5"}, "weights: {r}/allowed/link/weights.h5 .that is {r}/other/w"),
    ],
)  # fmt: skip
def test_a_local_run_outside_the_allowed_folder_is_refused_naming_the_param_and_the_prefixes(
    allowed_disk, overrides, message
):
    root = allowed_disk
    settings = Settings(target=Target.LOCAL, allowed_uris=(f"{root}/allowed",))
    params = local_params(root / "allowed" / "images", root / "allowed" / "results")
    params |= {key: value.format(r=root) for key, value in overrides.items()}
    storage = ListingStorage()
    with pytest.raises(InvalidParams) as refused:
        validate_run(params, {}, settings, storage, "v1", claim_key=pytest.fail)
    assert refused.match(message.format(r=root))
    assert refused.match(f"this deployment's runs read and write only under {root}/allowed .FRUITFLOW_ALLOWED_URIS.")
    assert all(listed.startswith(f"{root}/allowed/") for listed in storage.listed)  # nothing outside is listed
    assert sorted(path.name for path in (root / "other").iterdir()) == ["Kiwi", "weights.h5"]  # no folder claimed
    assert not (root / "allowed" / "results").exists()
    with pytest.raises(InvalidParams, match=message.format(r=root)):
        plan_run(params, {}, settings, "v1", "K")  # make plan refuses the same


def test_a_file_uri_with_a_host_is_refused_rather_than_read_as_a_relative_path(allowed_disk):
    # The form's pattern lets file://results through; it used to become the relative path 'results'.
    root = allowed_disk
    settings = Settings(target=Target.LOCAL, allowed_uris=(f"{root}/allowed",))
    params = local_params(root / "allowed" / "images", "file://results")
    with pytest.raises(InvalidParams, match="results_uri: file://results names a host: a local file URI is file:///"):
        validate_run(params, {}, settings, LocalStorage(), "v1", claim_key=pytest.fail)


def test_an_allowed_run_gets_the_canonical_locations_and_keeps_its_model_cache_inside(allowed_disk):
    root = allowed_disk
    settings = Settings(target=Target.LOCAL, allowed_uris=(f"file://{root}/alias/",))
    params = local_params(
        f"file://{root}/allowed//images/", f"{root}/allowed/x/../results", weights=f"file:{root}/alias/weights.h5"
    )
    run = validate_run(params, {}, settings, LocalStorage(), "v1", claim_key=lambda results: "K")
    assert (run.images_uri, run.results_uri) == (f"{root}/allowed/images", f"{root}/allowed/results")
    assert run.weights == f"{root}/alias/weights.h5"  # checked where it really is, run as spelt without '..'
    assert run.model_cache_uri == f"{root}/allowed/results/_models"
    assert lies_under_any(run.model_cache_uri, settings.allowed_uris)


@pytest.mark.parametrize("weights", ["imagenet", "random"])
def test_weights_that_name_no_location_are_not_restricted(allowed_disk, weights):
    root = allowed_disk
    settings = Settings(target=Target.LOCAL, allowed_uris=(f"{root}/allowed",))
    params = local_params(root / "allowed" / "images", root / "allowed" / "results", weights=weights)
    assert validate_run(params, {}, settings, LocalStorage(), "v1", claim_key=lambda results: "K").weights == weights


def test_star_allows_everything_and_says_so_in_every_run_and_plan(allowed_disk, caplog):
    root = allowed_disk
    settings = Settings(target=Target.LOCAL, allowed_uris=("*",))
    params = local_params(root / "other", root / "results", weights=str(root / "other" / "weights.h5"))
    with caplog.at_level(logging.WARNING, logger="fruitflow_pipeline.params"):
        run = validate_run(params, {}, settings, LocalStorage(), "v1", claim_key=lambda results: "K")
    assert run.images_uri == f"{root}/other"
    assert "FRUITFLOW_ALLOWED_URIS=*: whoever triggers a run may point it at any location" in caplog.text
    plan = render_plan(Settings.from_env({"FRUITFLOW_ALLOWED_URIS": "*"}), {"images_uri": "s3://anyone/x"}, MOMENT)
    assert "Warning: FRUITFLOW_ALLOWED_URIS=*: whoever triggers" in plan
    assert "This deployment's runs read and write anywhere (FRUITFLOW_ALLOWED_URIS=*)." in str(
        dag_params(settings)["images_uri"].description
    )


def test_make_plan_refuses_a_location_outside_the_defaults(capsys, monkeypatch):
    from fruitflow_pipeline.plan import main

    monkeypatch.delenv("FRUITFLOW_ALLOWED_URIS", raising=False)
    monkeypatch.setenv("FRUITFLOW_TARGET", "emr")
    assert main(["--conf", '{"results_uri": "s3://fruitflow-data/results/../billing"}']) == 2
    assert capsys.readouterr().err == (
        "a run with these params would be refused: results_uri: s3://fruitflow-data/results/../billing "
        "(that is s3://fruitflow-data/billing) is not allowed: this deployment's runs read and write only under "
        "s3://fruitflow-data/images, s3://fruitflow-data/results (FRUITFLOW_ALLOWED_URIS)\n"
    )


def test_the_demo_and_the_rehearsal_pass_with_the_variable_unset(tmp_path):
    """`make demo` and `make rehearse` run as deployments whose defaults are their runs' locations."""
    data = tmp_path / "data"
    demo = Settings.from_env(
        {"FRUITFLOW_TARGET": "local", "FRUITFLOW_ALLOWED_URIS": "/elsewhere"}  # a user's shell's: replaced
        | deployment_defaults(str(data / "sample_images"), str(data / "results"), str(tmp_path / "w.h5"))
    )
    plan = render_plan(demo, {"engine": "onnx"}, MOMENT)
    assert f"--images {data / 'sample_images'} " in plan and f"--weights {tmp_path / 'w.h5'} " in plan
    rehearsal = Settings.from_env(
        {"FRUITFLOW_TARGET": "emr"}
        | deployment_defaults("s3://fruitflow-rehearsal/images", "s3://fruitflow-rehearsal/results", "random")
    )
    plan = render_plan(rehearsal, {"engine": "onnx"}, MOMENT)
    assert "Outputs: s3://fruitflow-rehearsal/results/20261126T020000Z/" in plan


def test_the_form_says_where_the_deployment_lets_runs_go(load_dag):
    params = load_dag("emr", allowed_uris="s3://fruits/images, s3://fruits/results").params
    for name in ("images_uri", "results_uri", "weights"):
        assert params.get_param(name).description.endswith(
            "This deployment's runs read and write only under s3://fruits/images, s3://fruits/results "
            "(FRUITFLOW_ALLOWED_URIS)."
        ), name


# Through the DAG: a refused run claims no folder and starts no cluster.

BUCKET = "fruits"
CONF = {"images_uri": f"s3://{BUCKET}/images", "results_uri": f"s3://{BUCKET}/results", "weights": "random"}


@pytest.mark.parametrize(
    ("conf", "message"),
    [
        ({"images_uri": "s3://someone-elses/images"}, "images_uri: s3://someone-elses/images is not allowed"),
        ({"images_uri": f"s3://{BUCKET}/images-old"}, "images_uri: s3://fruits/images-old is not allowed"),
        ({"results_uri": f"s3://{BUCKET}/results/../billing"}, "(that is s3://fruits/billing) is not allowed"),
        ({"results_uri": f"s3://{BUCKET}/results%2F..%2Fbilling"}, "(that is s3://fruits/billing) is not allowed"),
        ({"results_uri": f"s3://{BUCKET}//billing"}, "(that is s3://fruits/billing) is not allowed"),
        ({"weights": f"s3://{BUCKET}/models/mobilenet.h5"}, "weights: s3://fruits/models/mobilenet.h5 is not allowed"),
    ],
)
def test_an_emr_run_outside_the_allowed_prefixes_claims_no_folder_and_starts_no_cluster(
    load_dag, aws, airflow_db, aws_calls, capfd, conf, message
):
    s3 = boto3.client("s3")
    create_bucket(s3, BUCKET, s3.meta.region_name)
    s3.put_object(Bucket=BUCKET, Key="images/Kiwi/0.jpg", Body=b"\xff\xd8")
    dag = load_dag("emr", allowed_uris=f"s3://{BUCKET}/images/, s3://{BUCKET}/results/")
    del aws_calls[:]  # the calls of the run only

    run = dag.test(run_conf=CONF | conf)

    assert run.state == "failed"
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states["validate_params"] == "failed" and states["create_cluster"] == "upstream_failed"
    log = capfd.readouterr().out
    assert message in log
    assert "only under s3://fruits/images, s3://fruits/results (FRUITFLOW_ALLOWED_URIS)" in log
    assert not [name for name, _ in aws_calls if name in ("RunJobFlow", "PutObject")]
    listed = [params["Prefix"] for name, params in aws_calls if name == "ListObjectsV2"]
    assert all(prefix.startswith("images/") for prefix in listed)  # only the allowed images, if those
    assert [item["Key"] for item in s3.list_objects_v2(Bucket=BUCKET)["Contents"]] == ["images/Kiwi/0.jpg"]
    assert boto3.client("emr").list_clusters()["Clusters"] == []


def test_unset_an_emr_deployment_refuses_a_bucket_it_did_not_name(load_dag, aws, airflow_db, aws_calls, capfd):
    dag = load_dag("emr", allowed_uris="", images_uri=CONF["images_uri"], results_uri=CONF["results_uri"])

    run = dag.test(run_conf=CONF | {"images_uri": "s3://someone-elses/images"})

    assert run.state == "failed"
    assert (
        "images_uri: s3://someone-elses/images is not allowed: this deployment's runs read and write only under "
        "s3://fruits/images, s3://fruits/results (FRUITFLOW_ALLOWED_URIS)" in capfd.readouterr().out
    )
    # The other bucket is never listed, no folder claimed, no cluster started: the one call is the
    # cleanup listener's look for clusters of the failed run.
    assert [name for name, _ in aws_calls] == ["ListClusters"]


@pytest.mark.parametrize(
    "results",
    ["{root}/allowed/../other/results", "{root}/allowed/link/results", "file://{root}/allowed%2F..%2Fother/results"],
)
def test_a_local_run_outside_the_allowed_folder_creates_no_run_folder(
    load_dag, airflow_db, allowed_disk, capfd, results
):
    root = allowed_disk
    dag = load_dag("local", allowed_uris=f"{root}/allowed")
    conf = {"images_uri": f"{root}/allowed/images", "results_uri": results.format(root=root), "weights": "random"}

    run = dag.test(run_conf=conf)

    assert run.state == "failed"
    assert {ti.task_id: ti.state for ti in run.get_task_instances()}["validate_params"] == "failed"
    assert f"is not allowed: this deployment's runs read and write only under {root}/allowed" in capfd.readouterr().out
    assert not (root / "other" / "results").exists()


def test_star_lets_a_run_go_to_any_bucket_and_its_log_says_so(load_dag, aws, airflow_db, capfd, caplog):
    s3 = boto3.client("s3")
    create_bucket(s3, "someone-elses", s3.meta.region_name)
    s3.put_object(Bucket="someone-elses", Key="images/notes.txt", Body=b"not an image")
    dag = load_dag("emr", allowed_uris="*")

    with caplog.at_level(logging.WARNING, logger="fruitflow_pipeline.params"):
        run = dag.test(run_conf=CONF | {"images_uri": "s3://someone-elses/images"})

    assert run.state == "failed"  # allowed, and listed: it holds no image
    assert "no .jpg, .jpeg, .png files under s3://someone-elses/images, 1 other file(s)" in capfd.readouterr().out
    (warning,) = [record for record in caplog.records if record.name == "fruitflow_pipeline.params"]
    assert (warning.levelname, warning.getMessage()) == (
        "WARNING",
        "FRUITFLOW_ALLOWED_URIS=*: whoever triggers a run may point it at any location the deployment's "
        "credentials reach",
    )
