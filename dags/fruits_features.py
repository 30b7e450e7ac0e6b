"""
### fruits_features: MobileNetV2 + PCA features for every fruit image

Every night (and on demand: **Trigger** with the form) this DAG turns the images under
`images_uri` (`<class>/<image>.jpg|jpeg|png`) into, under `<results_uri>/<run key>/`:

| output | what |
|---|---|
| `features/` | Parquet: `path`, `label`, `features` (1280 floats, MobileNetV2) |
| `errors/` | Parquet: `path`, `label`, `error`: images that could not be featurised |
| `pca/`, `pca_features.csv` | PCA-reduced vectors; the CSV has `path,label,pc_1..pc_k` |
| `explained_variance.json` / `.png` | how many components (k) were kept and why |
| `report.json` | counts, k, timings, cluster id, and the checks' verdict |

The run key is the run's logical date (`20261125T020000Z`); rerunning a date replaces only its folder.

**Target** (`FRUITFLOW_TARGET`): `emr` creates a transient EMR cluster, runs the three steps on
it and always terminates it (`terminate_cluster` is a teardown; EMR's idle auto-termination
is the second safety net). `local` runs the same steps with spark-submit on this machine.

#### When it fails (on call)
- **validate_params**: a param is wrong; the log names the field. Trigger again with a fixed form.
- **empty_run_folder / upload_code / create_cluster**: AWS access (the `aws_default` connection,
  IAM roles, bucket policy). `empty_run_folder` deletes what an earlier try of this run left in its folder.
- **watch_featurize / watch_pca / watch_export_csv** (EMR) or **featurize / pca / export_csv** (local):
  the log says the step's state, EMR's reason and the S3 folder of the step's logs
  (`stderr.gz` has the Spark driver's error). A cancelled step only means an earlier one failed.
- **check_outputs**: the steps ran but the outputs are off (row counts, too many unreadable
  images). `report.json` in the run folder has the numbers; `errors/` lists each bad image and why.
- The cluster is terminated in every case: check that `terminate_cluster` is green. If it is not,
  terminate the cluster named in its log by hand (EMR console); it would stop itself after the idle timeout.
"""

from __future__ import annotations

import tempfile
from datetime import datetime, timedelta
from pathlib import Path

from airflow.providers.amazon.aws.operators.emr import (
    EmrAddStepsOperator,
    EmrCreateJobFlowOperator,
    EmrTerminateJobFlowOperator,
)
from airflow.sdk import DAG, chain, task
from airflow.sdk.configuration import conf
from airflow.sdk.exceptions import AirflowFailException

from fruitflow_pipeline.cluster import job_flow_spec
from fruitflow_pipeline.code_bundle import build_bundle, code_version
from fruitflow_pipeline.operators import EmrStepWatcher, LocalSparkStepOperator
from fruitflow_pipeline.params import InvalidParams, dag_params, validate_run
from fruitflow_pipeline.report import OutputCheckFailed, check_and_write_report
from fruitflow_pipeline.run import PipelineRun, run_key
from fruitflow_pipeline.settings import Settings, Target
from fruitflow_pipeline.steps import PIPELINE, emr_step
from fruitflow_pipeline.storage import storage_for

SETTINGS = Settings.from_env()
# The provider's operators bind this default when their module is first imported; reading it
# at parse time makes every wait of this DAG follow the deployment's setting.
DEFER_WAITS = conf.getboolean("operators", "default_deferrable", fallback=False)


def storage():
    return storage_for(SETTINGS.target, SETTINGS.aws_conn_id)


@task(multiple_outputs=True)
def validate_params(params=None, logical_date=None, dag_run=None) -> dict:
    """Check the params against the world (the images exist, outputs do not overwrite inputs)
    and plan the run: ``run`` (its folder and code version) and, on EMR, ``cluster_request``
    and ``emr_steps``. Each downstream task takes only the part it needs."""
    version = code_version(SETTINGS.jobs_dir)
    try:
        validated = validate_run(params, SETTINGS, storage(), run_key(logical_date or dag_run.run_after), version)
    except InvalidParams as problem:
        raise AirflowFailException(f"invalid params: {problem}") from None
    plan = {"run": validated.run.to_xcom()}
    if SETTINGS.target is Target.EMR:
        plan["cluster_request"] = job_flow_spec(validated.run, validated.cluster, SETTINGS.emr)
        plan["emr_steps"] = [emr_step(step, validated.run) for step in PIPELINE]
    return plan


@task
def empty_run_folder(run: dict) -> str:
    """A rerun of this run starts from an empty run folder: delete what an earlier try left there."""
    folder = PipelineRun.from_xcom(run).uri
    storage().delete_folder(folder)
    return folder


@task
def upload_code(run: dict) -> str:
    """Upload the job code under its version (runs of unchanged code share one upload)."""
    pipeline_run = PipelineRun.from_xcom(run)
    with tempfile.TemporaryDirectory(prefix="fruitflow-code-") as staging:
        bundle = build_bundle(SETTINGS.jobs_dir, Path(staging), pipeline_run.code_version)
        storage().upload(bundle, pipeline_run.code_uri)
    return pipeline_run.code_uri


@task
def check_outputs(run: dict, cluster_id: str | None = None) -> str:
    """CSV rows = featurised images, error share under the limit; writes report.json either way
    and returns its URI."""
    pipeline_run = PipelineRun.from_xcom(run)
    try:
        check_and_write_report(pipeline_run, storage(), SETTINGS.target, cluster_id)
    except OutputCheckFailed as problem:
        raise AirflowFailException(str(problem)) from None
    return pipeline_run.report_uri


def step_timeout(step_name: str) -> timedelta:
    return timedelta(minutes=SETTINGS.timeout_minutes[step_name])


with DAG(
    dag_id="fruits_features",
    description="Nightly MobileNetV2 embeddings and PCA of the fruit images, as Parquet and CSV",
    schedule=SETTINGS.schedule,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    params=dag_params(SETTINGS),
    default_args={"owner": "data-platform", "retries": 1, "retry_delay": timedelta(minutes=2)},
    tags=["fruitflow", "features", SETTINGS.target.value],
    doc_md=__doc__,
) as dag:
    plan = validate_params()
    folder_emptied = empty_run_folder(plan["run"])
    code_uploaded = upload_code(plan["run"])

    if SETTINGS.target is Target.EMR:
        create_cluster = EmrCreateJobFlowOperator(
            task_id="create_cluster",
            job_flow_overrides=plan["cluster_request"],
            aws_conn_id=SETTINGS.aws_conn_id,
            emr_conn_id=None,
        )
        add_steps = EmrAddStepsOperator(
            task_id="add_steps",
            job_flow_id=create_cluster.output,
            steps=plan["emr_steps"],
            aws_conn_id=SETTINGS.aws_conn_id,
            retries=0,  # a retried add would queue the steps twice
            deferrable=False,  # deferred, it would wait for all the steps; the watchers wait for each
        )
        watch_steps = [
            EmrStepWatcher(
                task_id=f"watch_{step.name}",
                job_flow_id=create_cluster.output,
                step_ids=add_steps.output,
                step_index=index,
                aws_conn_id=SETTINGS.aws_conn_id,
                poke_interval=SETTINGS.poke_interval_seconds,
                timeout=step_timeout(step.name).total_seconds(),
                max_attempts=int(step_timeout(step.name).total_seconds() // SETTINGS.poke_interval_seconds) + 1,
                retries=0,  # a failed step stays failed: asking again only delays the teardown
                deferrable=DEFER_WAITS,
            )
            for index, step in enumerate(PIPELINE)
        ]
        outputs_checked = check_outputs(plan["run"], create_cluster.output)
        terminate_cluster = EmrTerminateJobFlowOperator(
            task_id="terminate_cluster",
            job_flow_id=create_cluster.output,
            aws_conn_id=SETTINGS.aws_conn_id,
            deferrable=DEFER_WAITS,
        ).as_teardown(setups=create_cluster)
        chain(
            folder_emptied, code_uploaded, create_cluster, add_steps, *watch_steps, outputs_checked, terminate_cluster
        )
    else:
        run_steps = [
            LocalSparkStepOperator(
                task_id=step.name,
                step=step.name,
                run=plan["run"],
                local=SETTINGS.local,
                execution_timeout=step_timeout(step.name),
                retries=0,
            )
            for step in PIPELINE
        ]
        outputs_checked = check_outputs(plan["run"])
        chain(folder_emptied, code_uploaded, *run_steps, outputs_checked)
