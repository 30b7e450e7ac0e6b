"""The DAG as Airflow parses it: imports under both targets, the graph, the teardown, the params."""

from __future__ import annotations

import pytest

EMR_ORDER = [
    "validate_params", "find_changes", "empty_run_folder", "upload_code", "size_cluster", "create_cluster", "add_steps",
    "watch_featurize", "watch_pca", "watch_export_csv", "check_outputs", {"terminate_cluster", "remove_old_runs"},
    "write_report",
]  # fmt: skip
LOCAL_ORDER = [
    "validate_params", "find_changes", "empty_run_folder", "upload_code", "featurize", "pca", "export_csv",
    "check_outputs", "remove_old_runs", "write_report",
]  # fmt: skip


def assert_chain(dag, order):
    """``order``'s tasks run one after the other; a set's tasks run side by side, after the task
    before it and before the one after it."""
    stages = [{stage} if isinstance(stage, str) else stage for stage in order]
    assert sorted(dag.task_ids) == sorted(task_id for stage in stages for task_id in stage)
    for before, after in zip(stages, stages[1:], strict=False):
        for upstream in before:
            assert after <= dag.get_task(upstream).downstream_task_ids, (upstream, after)
    sorted_ids = iter(task.task_id for task in dag.topological_sort())
    assert [{next(sorted_ids) for _ in stage} for stage in stages] == stages


@pytest.mark.parametrize("target", ["emr", "local"])
def test_dag_imports_and_is_scheduled_nightly_one_run_at_a_time(load_dag, target):
    dag = load_dag(target)
    assert dag.dag_id == "fruits_features"
    assert dag.schedule == "0 2 * * *"
    assert dag.catchup is False
    assert dag.max_active_runs == 1
    assert {"fruitflow", target} <= set(dag.tags)
    assert dag.owner == "data-platform"
    assert "When it fails" in dag.doc_md


@pytest.mark.parametrize("target", ["emr", "local"])
def test_every_run_past_validation_ends_with_a_report_whose_failure_changes_nothing(load_dag, target):
    from fruitflow_pipeline.operators import record_failure

    dag = load_dag(target)
    validate, report = dag.get_task("validate_params"), dag.get_task("write_report")
    assert validate.is_setup and report.is_teardown
    assert report.upstream_task_ids >= {"validate_params"}
    assert report.trigger_rule == "all_done_setup_success"  # runs after failures too, not after a refused param
    assert report.on_failure_fail_dagrun is False
    assert all(task.on_failure_callback == [record_failure] for task in dag.tasks)


def test_local_graph_is_one_line_along_which_the_run_flows(load_dag):
    dag = load_dag("local")
    upstream = {task.task_id: task.upstream_task_ids for task in dag.tasks}
    for before, after in zip(LOCAL_ORDER, LOCAL_ORDER[1:-2], strict=False):
        assert upstream[after] == {before}, after
    assert upstream["remove_old_runs"] == {"check_outputs", "validate_params"}
    assert upstream["write_report"] == {"remove_old_runs", "validate_params"}  # its setup, and the run to report


def test_emr_graph_edges_are_the_data_each_task_reads(load_dag):
    dag = load_dag("emr")
    assert {task.task_id: task.upstream_task_ids for task in dag.tasks} == {
        "validate_params": set(),
        "find_changes": {"validate_params"},
        "empty_run_folder": {"find_changes"},
        "upload_code": {"empty_run_folder"},
        "size_cluster": {"upload_code"},  # after the code, with the run; find_changes' count by XCom
        "create_cluster": {"size_cluster"},  # the cluster request
        "add_steps": {"create_cluster", "size_cluster"},  # the cluster id, the steps
        "watch_featurize": {"add_steps", "create_cluster"},  # the step ids, the cluster id
        "watch_pca": {"watch_featurize", "add_steps", "create_cluster"},
        "watch_export_csv": {"watch_pca", "add_steps", "create_cluster"},
        "check_outputs": {"watch_export_csv", "size_cluster"},  # after the last step, with the run
        "terminate_cluster": {"check_outputs", "create_cluster"},
        "remove_old_runs": {"check_outputs", "validate_params"},  # after the good outputs, with the run
        "write_report": {"terminate_cluster", "remove_old_runs", "validate_params"},
    }


@pytest.mark.parametrize("target", ["emr", "local"])
def test_a_run_with_nothing_to_do_skips_the_steps_but_still_reports_and_publishes_only_good_outputs(load_dag, target):
    dag = load_dag(target)
    find_changes = dag.get_task("find_changes")
    # Only its direct downstream is skipped at once; the rest follow their trigger rules, so the
    # report (a teardown of validate_params) still runs and the cluster's teardown skips with its setup.
    assert find_changes.ignore_downstream_trigger_rules is False
    assert find_changes.downstream_task_ids == {"empty_run_folder"}
    # The features asset's event comes from the report, after the cluster's end, for good runs only
    # (tests/dags/test_nightly.py and the EMR cost test read the events themselves).
    assert not dag.get_task("check_outputs").outlets
    (alias,) = dag.get_task("write_report").outlets
    assert alias.name == "fruitflow_features_of_good_runs"


def test_schedule_follows_the_setting(load_dag):
    assert load_dag("local", schedule="15 4 * * *").schedule == "15 4 * * *"


def test_emr_graph_ends_with_the_cluster_teardown(load_dag):
    dag = load_dag("emr")
    assert_chain(dag, EMR_ORDER)
    create, terminate = dag.get_task("create_cluster"), dag.get_task("terminate_cluster")
    assert terminate.is_teardown and create.is_setup
    assert terminate.trigger_rule == "all_done_setup_success"
    # A cluster left running fails the night. The failures before it still count: they reach
    # remove_old_runs, a leaf of the run (test_outputs_that_do_not_add_up_fail_the_check_and_still_terminate).
    assert terminate.on_failure_fail_dagrun is True
    assert dag.get_task("remove_old_runs").downstream_task_ids == {"write_report"}
    # The report's own failure leaves the outcome alone (the runbook says so).
    assert dag.get_task("write_report").is_teardown and dag.get_task("write_report").on_failure_fail_dagrun is False
    assert "terminate_cluster" in create.downstream_task_ids
    assert dag.get_task("add_steps").retries == 0
    for name in ("featurize", "pca", "export_csv"):
        sensor = dag.get_task(f"watch_{name}")
        assert sensor.retries == 0
    assert dag.get_task("watch_featurize").timeout == 240 * 60
    assert dag.get_task("watch_pca").timeout == 60 * 60


def test_local_graph_runs_the_same_steps_without_a_cluster(load_dag):
    dag = load_dag("local")
    assert_chain(dag, LOCAL_ORDER)
    assert not [task for task in dag.tasks if "cluster" in task.task_id]
    assert [dag.get_task(name).step for name in ("featurize", "pca", "export_csv")] == [
        "featurize",
        "pca",
        "export_csv",
    ]
    assert dag.get_task("featurize").execution_timeout.total_seconds() == 240 * 60


@pytest.mark.parametrize("target", ["emr", "local"])
def test_every_param_has_a_default_a_title_a_description_and_a_schema(load_dag, target):
    params = load_dag(target).params
    expected = {
        "images_uri",
        "results_uri",
        "variance",
        "weights",
        "batch_size",
        "max_error_share",
        "engine",
        "full_refresh",
    }
    if target == "emr":
        expected |= {"release_label", "primary_instance_type", "core_instance_type", "core_instance_count",
                     "task_instance_type", "task_instance_count", "task_market"}  # fmt: skip
    assert set(params) == expected
    for name in params:
        param = params.get_param(name)
        assert param.value is not None or name == "core_instance_count", name  # empty: sized to the night
        assert param.schema.get("title"), name  # the form's label; without it the UI shows the raw name
        assert param.description, name
        assert param.schema.get("type"), name
    params.validate()  # the defaults themselves are valid, or scheduled runs could not start
    assert params["variance"] == 0.95 and params["weights"] == "imagenet"


@pytest.mark.parametrize(("target", "weights"), [("emr", "s3://acme-models/mobilenet.h5"), ("local", "/models/m.h5")])
def test_the_weights_setting_is_the_forms_default(load_dag, target, weights):
    params = load_dag(target, weights=weights).params
    assert params["weights"] == weights
    params.validate()


def test_emr_defaults_point_at_s3_and_emr_7(load_dag):
    params = load_dag("emr", images_uri="s3://acme-fruits/in", results_uri="s3://acme-fruits/out").params
    assert params["images_uri"] == "s3://acme-fruits/in"
    assert params["results_uri"] == "s3://acme-fruits/out"
    assert params["release_label"].startswith("emr-7.")
    assert params["core_instance_count"] is None and params["task_market"] == "SPOT"  # None: sized to the night
