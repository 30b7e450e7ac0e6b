"""`make rehearse`: one run of the fruits_features DAG on the EMR target, against moto, its steps run
for real on local Spark by the rehearsal cluster. Not an AWS run (docs/develop/rehearsal.md).

The images are uploaded to a bucket of a moto server started here, the DAG runs with
`airflow dags test` against it (the same RunJobFlow and AddJobFlowSteps requests as on AWS), and
the rehearsal cluster executes each step it adds. Settings, as for `make demo`:

    IMAGES   folder of <class>/<image>.jpg to featurise (default: generate COUNT sample images)
    COUNT    sample images to generate when IMAGES is not set (default 200)
    WEIGHTS  imagenet (default), random, or the path of a Keras MobileNetV2 .h5 weights file
             (uploaded to the bucket, as a deployment would keep it on S3)
    ENGINE   onnx (default), openvino, openvino-bf16 or tensorflow
    CONF     the trigger's conf for the other params, as JSON (as for `make plan`), such as
             '{"max_error_share": 0.2}' or '{"core_instance_count": 3}'; checked like the trigger form
    REHEARSE_BOOTSTRAP=1  run the bootstrap action for real into a throwaway venv (minutes: it
             installs the cluster's requirements) instead of only checking that it resolves
    REHEARSE_LAUNCH_FAILURES=<n>  the first n clusters end TERMINATED_WITH_ERRORS while starting with
             a transient reason (INTERNAL_ERROR): the DAG launches a replacement (FRUITFLOW_EMR_LAUNCH_ATTEMPTS)
    WHEELHOUSE  with it, a folder `make wheelhouse` filled: uploaded to the bucket and given to the
             cluster as FRUITFLOW_EMR_WHEELHOUSE_URI, so the bootstrap installs with --no-index
    DATA_DIR where sample images go, and the bucket's local copy (<DATA_DIR>/rehearsal/<bucket>/)
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from fruitflow.contract import WEIGHTS_IMAGENET, WEIGHTS_RANDOM  # noqa: E402
from fruitflow_pipeline.run import run_key  # noqa: E402
from rehearsal.buckets import create_bucket, upload_folder  # noqa: E402
from rehearsal.cluster import RehearsalCluster  # noqa: E402
from scripts.demo import (  # noqa: E402
    Deployment,
    airflow_environment,
    deployment_defaults,
    explain_failure,
    read_inputs,
    run_dag,
    summary,
    today,
)

BUCKET = "fruitflow-rehearsal"
REGION = "eu-west-1"
POKE_INTERVAL_SECONDS = "2"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "rehearsal", "AWS_SECRET_ACCESS_KEY": "rehearsal", "AWS_DEFAULT_REGION": REGION}


def emr_environment(airflow_home: Path, endpoint: str, wheelhouse_uri: str) -> dict[str, str]:
    """The DAG's environment on the EMR target, its AWS connection pointed at the moto server."""
    connection = {"conn_type": "aws", "extra": {"region_name": REGION, "endpoint_url": endpoint}}
    return {
        **airflow_environment(airflow_home),
        **CREDENTIALS,
        "FRUITFLOW_TARGET": "emr",
        "FRUITFLOW_POKE_INTERVAL_SECONDS": POKE_INTERVAL_SECONDS,
        "AIRFLOW_CONN_AWS_DEFAULT": json.dumps(connection),
        "FRUITFLOW_EMR_WHEELHOUSE_URI": wheelhouse_uri,
    }


def weights_in_bucket(weights: str) -> str:
    """Where the rehearsal keeps a weights file: in its bucket, as a deployment would on S3."""
    return weights if weights in (WEIGHTS_IMAGENET, WEIGHTS_RANDOM) else f"s3://{BUCKET}/weights/{Path(weights).name}"


def bucket_deployment(data_dir: Path) -> Deployment:
    """The rehearsal's deployment: the EMR target on its bucket (``data_dir`` holds only its local copy)."""
    return lambda images, weights: {
        "FRUITFLOW_TARGET": "emr",  # as emr_environment says: the form's checks follow the target
        **deployment_defaults(f"s3://{BUCKET}/images", f"s3://{BUCKET}/results", weights_in_bucket(weights)),
    }


def launch_failures_from(raw: str) -> int:
    """REHEARSE_LAUNCH_FAILURES: how many clusters fail to launch; unset or empty, none."""
    if not raw.strip():
        return 0
    if not (raw.strip().isascii() and raw.strip().isdigit()):
        raise SystemExit(f"REHEARSE_LAUNCH_FAILURES={raw!r} must be a whole number (0 or more)")
    return int(raw)


def main() -> int:
    launch_failures = launch_failures_from(os.environ.get("REHEARSE_LAUNCH_FAILURES", ""))
    data_dir, inputs = read_inputs(bucket_deployment)
    images, weights, engine = inputs.images, inputs.weights, inputs.engine
    os.environ.update(CREDENTIALS)  # for this process's own clients: the moto server takes any
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("  rehearsal: %(message)s"))
    rehearsal_log = logging.getLogger("fruitflow.rehearsal")
    rehearsal_log.addHandler(handler)
    rehearsal_log.setLevel(logging.INFO)

    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        import boto3

        s3 = boto3.client("s3", endpoint_url=endpoint, region_name=REGION)
        create_bucket(s3, BUCKET, REGION)
        count = upload_folder(s3, images, BUCKET, "images")
        deployment = bucket_deployment(data_dir)(images, weights)
        if weights_in_bucket(weights) != weights:
            s3.upload_file(weights, BUCKET, f"weights/{Path(weights).name}")
            weights = weights_in_bucket(weights)
        wheelhouse_uri = ""
        if os.environ.get("WHEELHOUSE"):
            upload_folder(s3, Path(os.environ["WHEELHOUSE"]), BUCKET, "wheelhouse")
            wheelhouse_uri = f"s3://{BUCKET}/wheelhouse/"
        mirror_root = data_dir / "rehearsal"
        # A new bucket: the last rehearsal's copy of it is stale, but for its converted models,
        # which a deployment's bucket keeps from night to night (a warm featurize saves TensorFlow).
        last_models = mirror_root / BUCKET / "results" / "_models"
        kept_models = upload_folder(s3, last_models, BUCKET, "results/_models") if last_models.is_dir() else 0
        shutil.rmtree(mirror_root / BUCKET, ignore_errors=True)

        airflow_home = Path(os.environ.get("AIRFLOW_HOME") or ROOT / ".airflow" / "rehearsal")
        airflow_home.mkdir(parents=True, exist_ok=True)
        logical_date = today()
        log_path = airflow_home / "rehearse.log"
        print(f"Rehearsing fruits_features on the EMR target: {count} files of {images} in s3://{BUCKET}/images "
              f"(moto at {endpoint}), weights={weights}, engine={engine} (full log: {log_path})")  # fmt: skip
        if kept_models:
            print(f"model cache: {kept_models} file(s) kept from the last rehearsal in s3://{BUCKET}/results/_models")
        run_bootstrap = os.environ.get("REHEARSE_BOOTSTRAP") == "1"
        with RehearsalCluster(
            endpoint, mirror_root, run_bootstrap=run_bootstrap, launch_failures=launch_failures
        ) as cluster:
            environment = emr_environment(airflow_home, endpoint, wheelhouse_uri) | deployment
            code = run_dag(environment, logical_date.isoformat(), {"engine": engine, **inputs.conf}, log_path)
            cluster.pull()  # what the DAG wrote after the last step (report.json, latest.json) too

        key = run_key(logical_date)
        local_copy = mirror_root / BUCKET / "results" / key
        if code or not (local_copy / "report.json").exists():
            explain_failure(log_path, weights, "make rehearse")
            return code or 1
        print(summary(json.loads((local_copy / "report.json").read_text()), f"s3://{BUCKET}/results/{key}"))
        print(f"\nlocal copy of the run folder: {local_copy}/")
        return 0
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
