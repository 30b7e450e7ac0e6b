"""fruits_features: MobileNetV2 + PCA features for every fruit image, every night.

What it does and what to do when a task fails (the DAG page's documentation, and the docs' runbook)
is in fruits_features.md beside this file.
"""

from __future__ import annotations

import json
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from airflow.providers.amazon.aws.hooks.emr import EmrHook
from airflow.providers.amazon.aws.operators.emr import EmrAddStepsOperator, EmrTerminateJobFlowOperator
from airflow.sdk import DAG, Asset, AssetAlias, chain, task
from airflow.sdk.configuration import conf
from airflow.sdk.exceptions import AirflowFailException

from fruitflow_pipeline.alerts import NightAlerts, late_night_deadline
from fruitflow_pipeline.cluster import job_flow_spec
from fruitflow_pipeline.cluster_usage import launch_entry, run_clusters_for_report
from fruitflow_pipeline.code_bundle import build_bundle, code_version
from fruitflow_pipeline.nightly import (
    RunInputs,
    ToFeaturize,
    asset_extra,
    images_to_featurize,
    keep_listing,
    kept_listing,
    list_images,
    read_latest,
    record_good_run,
    run_inputs,
    weights_fingerprint,
)
from fruitflow_pipeline.oncall import on_call_facts
from fruitflow_pipeline.operators import (
    FAILURE_XCOM_KEY,
    STEP_LOGS_XCOM_KEY,
    EmrRunClusterOperator,
    EmrStepWatcher,
    LocalSparkStepOperator,
    record_failure,
)
from fruitflow_pipeline.params import InvalidParams, dag_params, plan_cluster, validate_run
from fruitflow_pipeline.report import OutputCheckFailed, problems_in, run_report, steps_so_far, summarise_outputs
from fruitflow_pipeline.report_html import report_html_for
from fruitflow_pipeline.retention import apply_retention
from fruitflow_pipeline.run import PipelineRun
from fruitflow_pipeline.run_folder import RunFolderTaken, claim_run_folder, ensure_own, mark
from fruitflow_pipeline.settings import Settings, Target
from fruitflow_pipeline.steps import PIPELINE, emr_step
from fruitflow_pipeline.storage import storage_for

SETTINGS = Settings.from_env()
NIGHT_ALERTS = NightAlerts(SETTINGS)  # FRUITFLOW_ALERT_*: fruitflow_pipeline.alerts lists the notifiers
# The provider's operators bind this default when their module is first imported; reading it
# at parse time makes every wait of this DAG follow the deployment's setting.
DEFER_WAITS = conf.getboolean("operators", "default_deferrable", fallback=False)
OUTPUTS_XCOM_KEY = "outputs"
INPUTS_XCOM_KEY = "inputs"
CHANGES_XCOM_KEY = "changes"
TO_FEATURIZE_XCOM_KEY = "to_featurize"
UNCHANGED_XCOM_KEY = "unchanged_since"
ACTIVE_STATES = ["queued", "running"]
# One asset, the same name and URI in every deployment and on both targets (Airflow allows one
# URI per asset name in its database); each event's extra says where that run's outputs are.
FEATURES_ASSET = Asset(name="fruitflow_features", uri="x-fruitflow://fruits_features/features")
# write_report runs after every run, good or not, and after the cluster's end, which the event's
# extra tells: through an alias it emits the features event for good runs only (an outlet asset
# would have one for every run whose report was written).
FEATURES_EVENTS = AssetAlias(name="fruitflow_features_of_good_runs")


def storage():
    return storage_for(SETTINGS.target, SETTINGS.aws_conn_id)


@task(multiple_outputs=True)
def validate_params(params=None, logical_date=None, dag_run=None) -> dict:
    """Check the params and the trigger's conf against the world (images exist, outputs do not
    overwrite inputs, no unknown key, a cluster the form's types can make), claim the run's folder,
    and hand on the run."""
    store, moment = storage(), logical_date or dag_run.run_after
    try:
        run = validate_run(
            params,
            dag_run.conf or {},
            SETTINGS,
            store,
            code_version(SETTINGS.jobs_dir),
            claim_key=lambda results_uri: claim_run_folder(store, results_uri, moment, dag_run.run_id, dag_run.dag_id),
        )
    except InvalidParams as problem:
        raise AirflowFailException(f"invalid params: {problem}") from None
    return {"run": run.to_xcom()}


@task.short_circuit(multiple_outputs=False, ignore_downstream_trigger_rules=False)
def find_changes(run: dict, params=None, ti=None) -> dict | bool:
    """List the images and fingerprint the weights. Same images, output-shaping params, weights
    and jobs' code as the last good run: skip every step (no cluster, no Spark; the report still
    runs and says so). Otherwise say what changed and how many images featurize will compute
    (keeping this listing for the next night's count), and hand the run on."""
    pipeline_run, store = PipelineRun.from_xcom(run), storage()
    listing = list_images(store, pipeline_run.images_uri)
    inputs = run_inputs(pipeline_run, listing, weights_fingerprint(store, pipeline_run.weights))
    ti.xcom_push(INPUTS_XCOM_KEY, inputs.to_dict())
    latest = None if params["full_refresh"] else read_latest(store, pipeline_run.results_uri)
    if latest is None:
        changes = ["full_refresh: every image is computed"] if params["full_refresh"] else ["no earlier good run"]
    elif not (changes := latest.changes_for(pipeline_run, inputs)):
        ti.xcom_push(UNCHANGED_XCOM_KEY, latest.run_key)
        print(f"unchanged since {latest.run_key}: the same {inputs.images} images, params, weights and jobs' code")
        return False
    ti.xcom_push(CHANGES_XCOM_KEY, changes)
    print("this run goes ahead: " + "; ".join(changes))
    previous = latest and kept_listing(store, pipeline_run.results_uri, latest.listing_digest)
    to_featurize = images_to_featurize(pipeline_run, inputs, listing, latest, previous, params["full_refresh"])
    ti.xcom_push(TO_FEATURIZE_XCOM_KEY, to_featurize.to_dict())
    print(f"images to featurize: {to_featurize.why}")
    keep_listing(store, pipeline_run.results_uri, listing)
    return run


@task(multiple_outputs=False)
def empty_run_folder(run: dict, run_id=None, dag=None) -> dict:
    """Delete what an earlier try of this DAG run left in its folder; never another run's folder.
    Hands the run on, its folder ready."""
    folder, store = PipelineRun.from_xcom(run).uri, storage()
    try:
        ensure_own(store, folder, run_id)
    except RunFolderTaken as problem:
        raise AirflowFailException(str(problem)) from None
    store.delete_folder(folder)
    mark(store, folder, run_id, dag.dag_id)
    return run


@task(multiple_outputs=False)
def upload_code(run: dict) -> dict:
    """Upload the job code under its version (runs of unchanged code share one upload).
    Hands the run on, its code in place."""
    pipeline_run = PipelineRun.from_xcom(run)
    with tempfile.TemporaryDirectory(prefix="fruitflow-code-") as staging:
        bundle = build_bundle(SETTINGS.jobs_dir, Path(staging), pipeline_run.code_version)
        storage().upload(bundle, pipeline_run.code_uri)
    return run


@task(multiple_outputs=True, retries=0)  # the same inputs plan the same cluster
def size_cluster(run: dict, params=None, dag_run=None, ti=None) -> dict:
    """Choose the cluster for the images this night computes (find_changes' count): the fewest core
    nodes on which featurize fits FRUITFLOW_EMR_TARGET_MINUTES, or the trigger's core_instance_count.
    Hands on ``run`` with its executor layout, ``cluster_request``, ``emr_steps`` and ``size``."""
    to_featurize = ToFeaturize(**ti.xcom_pull(task_ids="find_changes", key=TO_FEATURIZE_XCOM_KEY))
    cluster = plan_cluster(params, SETTINGS, to_featurize)  # every size it may choose passed validate_params
    sized_run = cluster.sized(PipelineRun.from_xcom(run))
    print(f"cluster: {cluster.size.why}")
    return {
        "run": sized_run.to_xcom(),
        "cluster_request": job_flow_spec(sized_run, cluster.shape, SETTINGS.emr, dag_run.run_id, cluster.executors),
        "emr_steps": [emr_step(step, sized_run) for step in PIPELINE],
        "size": cluster.size.to_dict(),
    }


@task
def check_outputs(run: dict, ti=None) -> str:
    """CSV rows = featurised images, error share under the limit. Keeps the outputs' summary for
    the report, also when a check fails. Outputs that pass become the last good run
    (latest.json); returns the CSV's URI."""
    pipeline_run, store = PipelineRun.from_xcom(run), storage()
    try:
        summary = summarise_outputs(pipeline_run, store)
    except OutputCheckFailed as problem:
        raise AirflowFailException(str(problem)) from None
    ti.xcom_push(OUTPUTS_XCOM_KEY, summary)
    if problems := problems_in(summary, pipeline_run.max_error_share):
        raise AirflowFailException("; ".join(problems))
    inputs = RunInputs(**ti.xcom_pull(task_ids="find_changes", key=INPUTS_XCOM_KEY))
    record_good_run(store, pipeline_run, inputs)
    return pipeline_run.csv_uri


@task(multiple_outputs=False)
def remove_old_runs(run: dict, ti=None) -> dict:
    """Retention (FRUITFLOW_KEEP_RUNS, off by default): now that this run is the last good one,
    delete this DAG's run folders beyond the newest good ones, and failed ones past
    FRUITFLOW_KEEP_FAILED_DAYS. Never latest.json's run, an active run, or a folder this DAG did
    not claim. Each folder's fate is in the log; what went is in the report."""
    pipeline_run = PipelineRun.from_xcom(run)
    return apply_retention(
        storage(),
        pipeline_run.results_uri,
        ti.dag_id,
        SETTINGS.retention,
        latest_key=pipeline_run.key,
        is_active=lambda dag_run_id: ti.get_dr_count(ti.dag_id, run_ids=[dag_run_id], states=ACTIVE_STATES) > 0,
        now=datetime.now(UTC),
    )


@task(outlets=[FEATURES_EVENTS])
def write_report(
    run: dict, checks_task_id: str, cluster_task_id: str | None = None, ti=None, dag_run=None, outlet_events=None
) -> str:
    """report.json for this run, succeeded or failed: every task's state, the first failure and
    its error, what the steps counted so far, and the cluster: its phases, instance time and,
    with FRUITFLOW_EMR_HOURLY_PRICES, an estimated cost; and every cluster the run started
    (a launch that failed and its replacement) with how each ended, and the size chosen for the
    night and why. When the outputs passed their checks,
    the features asset event, with the same counts and cluster time. A teardown: it runs at the
    end of every run that got past validate_params, and its own failure leaves the run's outcome alone."""
    pipeline_run, store = PipelineRun.from_xcom(run), storage()
    cluster_size = None
    if cluster_task_id and (sized_run := ti.xcom_pull(task_ids="size_cluster", key="run")):
        pipeline_run, cluster_size = PipelineRun.from_xcom(sized_run), ti.xcom_pull(task_ids="size_cluster", key="size")
    states = ti.get_task_states(dag_id=ti.dag_id, run_ids=[ti.run_id])[ti.run_id]
    tasks = [task for task in ti.task.dag.topological_sort() if task.task_id != ti.task_id]
    ordered = {task.task_id: states.get(task.task_id) for task in tasks}
    failures = {
        task_id: ti.xcom_pull(task_ids=task_id, key=FAILURE_XCOM_KEY)
        for task_id, state in ordered.items()
        if state == "failed"
    }
    outputs = ti.xcom_pull(task_ids=checks_task_id, key=OUTPUTS_XCOM_KEY)
    cluster_id = ti.xcom_pull(task_ids=cluster_task_id) if cluster_task_id else None
    launched = []  # every cluster the run started, the one that ran the steps among them
    if cluster_task_id and ordered[cluster_task_id] in ("success", "failed"):
        emr = EmrHook(aws_conn_id=SETTINGS.aws_conn_id).conn
        prices, now = SETTINGS.emr.hourly_prices, datetime.now(UTC)
        launched = run_clusters_for_report(emr, ti.run_id, dag_run.start_date, prices, now)
    usage = next((cluster for cluster in launched if cluster["id"] == cluster_id), None)
    clusters = [launch_entry(cluster) for cluster in launched]
    report = run_report(
        pipeline_run,
        SETTINGS.target.value,
        ordered,
        failures,
        outputs,
        steps={} if outputs else steps_so_far(pipeline_run, store),
        cluster_id=cluster_id,
        cluster_usage=usage,
        clusters=clusters,
        cluster_size=cluster_size,
        # Teardowns whose failure leaves the run's outcome alone (write_report); terminate_cluster's fails it.
        teardowns={task.task_id for task in tasks if task.is_teardown and not task.on_failure_fail_dagrun},
        unchanged_since=ti.xcom_pull(task_ids="find_changes", key=UNCHANGED_XCOM_KEY),
        changes=ti.xcom_pull(task_ids="find_changes", key=CHANGES_XCOM_KEY),
        retention=ti.xcom_pull(task_ids="remove_old_runs"),
        bytes_written=sum(listed.size for listed in store.files_under(pipeline_run.uri)),
    )
    report |= on_call_facts(
        report,
        ti.xcom_pull(task_ids=report["failed_task"], key=STEP_LOGS_XCOM_KEY) if report["failed_task"] else None,
    )
    store.write_text(pipeline_run.report_uri, json.dumps(report, indent=2))
    store.write_text(pipeline_run.report_html_uri, report_html_for(report, pipeline_run, store))
    NIGHT_ALERTS.after_report(report, pipeline_run.report_html_uri)
    if ordered[checks_task_id] == "success":
        extra = asset_extra(pipeline_run, outputs, usage, clusters)
        outlet_events[FEATURES_EVENTS].add(FEATURES_ASSET, extra=extra)
        print(f"{FEATURES_ASSET.name} event: {json.dumps(extra)}")
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
    default_args={
        "owner": "data-platform",
        "retries": 1,
        "retry_delay": timedelta(minutes=2),
        "on_failure_callback": record_failure,
    },
    tags=["fruitflow", "features", SETTINGS.target.value],
    doc_md=str(Path(__file__).with_name("fruits_features.md")),  # read by Airflow when the DAG is parsed
    on_failure_callback=NIGHT_ALERTS.on_run_failed,
    deadline=late_night_deadline(SETTINGS),
) as dag:
    # The validated run flows from task to task, so each edge of the graph is data a task reads.
    plan = validate_params()
    run_with_code = upload_code(empty_run_folder(find_changes(plan["run"])))
    old_runs_removed = remove_old_runs(plan["run"])

    if SETTINGS.target is Target.EMR:
        sized = size_cluster(run_with_code)
        create_cluster = EmrRunClusterOperator(
            task_id="create_cluster",
            job_flow_overrides=sized["cluster_request"],
            aws_conn_id=SETTINGS.aws_conn_id,
            emr_conn_id=None,
            max_launches=SETTINGS.emr.launch_attempts,
            ready_timeout=timedelta(minutes=SETTINGS.emr.ready_timeout_minutes),
            poll_seconds=SETTINGS.poke_interval_seconds,
            deferrable=DEFER_WAITS,
        )
        add_steps = EmrAddStepsOperator(
            task_id="add_steps",
            job_flow_id=create_cluster.output,
            steps=sized["emr_steps"],
            execution_role_arn=SETTINGS.emr.step_role or None,
            aws_conn_id=SETTINGS.aws_conn_id,
            retries=0,  # a retried add would queue the steps twice
            deferrable=False,  # deferred, it would wait for all the steps; the watchers wait for each
        )
        run_steps = [
            EmrStepWatcher(
                task_id=f"watch_{step.name}",
                job_flow_id=create_cluster.output,
                step_ids=add_steps.output,
                step_index=index,
                aws_conn_id=SETTINGS.aws_conn_id,
                poke_interval=SETTINGS.poke_interval_seconds,
                log_wait_seconds=SETTINGS.emr.step_log_wait_seconds,
                timeout=step_timeout(step.name).total_seconds(),
                max_attempts=int(step_timeout(step.name).total_seconds() // SETTINGS.poke_interval_seconds) + 1,
                retries=0,  # a failed step stays failed: asking again only delays the teardown
                deferrable=DEFER_WAITS,
            )
            for index, step in enumerate(PIPELINE)
        ]
        terminate_cluster = EmrTerminateJobFlowOperator(
            task_id="terminate_cluster",
            job_flow_id=create_cluster.output,
            aws_conn_id=SETTINGS.aws_conn_id,
            deferrable=DEFER_WAITS,
        ).as_teardown(setups=create_cluster, on_failure_fail_dagrun=True)  # a cluster left running fails the night
        outputs_checked = check_outputs(sized["run"])
        report_written = write_report(plan["run"], outputs_checked.operator.task_id, create_cluster.task_id)
        pipeline_tasks = [
            sized["run"], create_cluster, add_steps, *run_steps, outputs_checked, [terminate_cluster, old_runs_removed]
        ]  # fmt: skip
    else:
        run_steps = []
        for step in PIPELINE:
            run_steps.append(
                LocalSparkStepOperator(
                    task_id=step.name,
                    step=step.name,
                    run=run_steps[-1].output if run_steps else run_with_code,
                    local=SETTINGS.local,
                    execution_timeout=step_timeout(step.name),
                    retries=0,
                )
            )
        outputs_checked = check_outputs(run_steps[-1].output)
        report_written = write_report(plan["run"], outputs_checked.operator.task_id)
        pipeline_tasks = [*run_steps, outputs_checked, old_runs_removed]

    chain(*pipeline_tasks, report_written.as_teardown(setups=plan))
