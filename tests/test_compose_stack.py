"""docker-compose.yaml run as far as this machine allows (scripts/compose_stack.py): its services'
own commands and environment as processes, on a real PostgreSQL, running the DAG through the REST
API (`make test-stack`, marked ``stack``: opt-in). The mapping's pieces are tested here too, in
every tier, without a server."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
from pathlib import Path

import pandas as pd
import pytest
import yaml

from scripts.compose_stack import (
    APT_INSTALL,
    COMPOSE_FILE,
    LISTENS,
    STATE_MOUNTS,
    AirflowApi,
    ComposeStack,
    StackError,
    base_environment,
    bind_mounts,
    healthcheck_command,
    interpolate,
    localise_paths,
    localise_urls,
    log_line,
    marked_processes,
    missing_programs,
    parse_duration,
    plan_services,
    problem_lines,
    read_compose,
    run_folder_of,
    scheduled_run,
    start_order,
    trigger_and_wait,
    unpause,
    wait_for_dag,
    wait_until,
)

ROOT = Path(__file__).resolve().parents[1]
LOCAL_ROOT = Path("/tmp/stack")
PORTS = {  # each container port of LISTENS on a local one
    "postgres": {5432: 40000},
    "airflow-apiserver": {8080: 40001},
    "airflow-scheduler": {8974: 40002, 8793: 40003},
    "airflow-triggerer": {8794: 40004},
}


def planned(as_root: bool = True):
    return plan_services(read_compose(COMPOSE_FILE, {}), PORTS, LOCAL_ROOT, as_root)


# --- Interpolation, as compose does it ----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "variables", "expected"),
    [
        ("${UID:-50000}:0", {}, "50000:0"),
        ("${UID:-50000}:0", {"UID": "1000"}, "1000:0"),
        ("${UID:-50000}", {"UID": ""}, "50000"),  # :- also replaces an empty value
        ("${UID-50000}", {"UID": ""}, ""),  # - only a missing one
        ("$UID and ${UID}", {"UID": "7"}, "7 and 7"),
        ("${UNSET}", {}, ""),
        ("${UID:+set}|${NONE:+set}", {"UID": "1"}, "set|"),
        ('echo $$(id -u) "$${HOSTNAME}"', {"HOSTNAME": "x"}, 'echo $(id -u) "${HOSTNAME}"'),  # $$ is a literal $
    ],
)
def test_interpolation_follows_compose(text, variables, expected):
    assert interpolate(text, variables) == expected


def test_a_required_variable_that_is_missing_is_refused_with_its_message():
    with pytest.raises(StackError, match="SECRET: set it in .env"):
        interpolate("${SECRET:?set it in .env}", {})


def test_the_compose_file_resolves_with_its_defaults():
    compose = read_compose(COMPOSE_FILE, {})
    env = compose["services"]["airflow-scheduler"]["environment"]
    assert env["AIRFLOW__API_AUTH__JWT_SECRET"].startswith("fruitflow-local-jwt-secret-")
    assert env["FRUITFLOW_SPARK_DRIVER_MEMORY"] == "4g"
    assert compose["services"]["airflow-scheduler"]["user"] == "50000:0"
    init_script = compose["services"]["airflow-init"]["command"][-1]
    assert 'if [[ -z "" ]]; then' in init_script  # ${AIRFLOW_UID:-} is compose's, resolved before bash runs
    assert "$(id -u)" in init_script and "$$" not in init_script
    dag_processor_check = compose["services"]["airflow-dag-processor"]["healthcheck"]["test"][1]
    assert '--hostname "${HOSTNAME}"' in dag_processor_check  # the container's shell expands it


@pytest.mark.parametrize(("text", "seconds"), [("30s", 30), ("1m30s", 90), ("500ms", 0.5), ("1h", 3600)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


# --- The containers' addresses and file system, mapped onto this machine ----------------------


def test_service_urls_point_at_the_local_ports_of_their_container_ports():
    ports = {"postgres": {5432: 6000}, "airflow-apiserver": {8080: 6001}}
    assert (
        localise_urls("postgresql+psycopg2://airflow:airflow@postgres/airflow", ports)
        == "postgresql+psycopg2://airflow:airflow@127.0.0.1:6000/airflow"
    )
    assert localise_urls("http://airflow-apiserver:8080/execution/", ports) == "http://127.0.0.1:6001/execution/"
    assert localise_urls("https://example.com:8080/x", ports) == "https://example.com:8080/x"  # not a service
    with pytest.raises(StackError, match="airflow-apiserver listens on \\[8080\\], not on 9090"):
        localise_urls("http://airflow-apiserver:9090/", ports)


def test_image_paths_move_under_the_local_root():
    assert localise_paths("/opt/airflow/data/images", LOCAL_ROOT) == "/tmp/stack/opt/airflow/data/images"
    assert localise_paths("mkdir -p /opt/airflow/logs /opt/airflow", LOCAL_ROOT) == (
        "mkdir -p /tmp/stack/opt/airflow/logs /tmp/stack/opt/airflow"
    )
    assert localise_paths("/opt/airflowish /usr/opt/airflow", LOCAL_ROOT) == "/opt/airflowish /usr/opt/airflow"


def test_the_ports_the_stack_moves_are_airflows_defaults_and_the_published_one():
    """LISTENS names the container ports the services listen on: they must be the defaults the
    compose file relies on, or a moved setting would move nothing."""
    package = Path(importlib.util.find_spec("airflow").submodule_search_locations[0])
    config = yaml.safe_load((package / "config_templates" / "config.yml").read_text())
    for listens in LISTENS.values():
        for port, setting in listens.items():
            if setting:
                section, key = setting.removeprefix("AIRFLOW__").lower().split("__")
                assert config[section]["options"][key]["default"] == str(port), setting
    published = read_compose(COMPOSE_FILE, {})["services"]["airflow-apiserver"]["ports"]
    assert [int(mapping.split(":")[1]) for mapping in published] == list(LISTENS["airflow-apiserver"])


def test_every_airflow_service_runs_its_own_command_with_the_files_environment_mapped():
    services = planned()
    declared = read_compose(COMPOSE_FILE, {})["services"]
    for name in ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer"):
        service = services[name]
        assert service.command == ["airflow", declared[name]["command"]]  # what the image's entrypoint runs
        assert service.environment.keys() == declared[name]["environment"].keys()  # nothing added, nothing lost
        moved = [value.replace("/tmp/stack/opt/airflow", "") for value in service.environment.values()]
        assert not any("/opt/airflow" in value for value in moved), name
        assert not any(re.search(r"@postgres\b|//airflow-apiserver", v) for v in service.environment.values())
    env = services["airflow-scheduler"].environment
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == "postgresql+psycopg2://airflow:airflow@127.0.0.1:40000/airflow"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:40001/execution/"
    assert env["FRUITFLOW_IMAGES_URI"] == "/tmp/stack/opt/airflow/data/images"
    assert env["FRUITFLOW_JOBS_DIR"] == "/tmp/stack/opt/airflow/spark_jobs"


def test_the_health_checks_are_the_files_with_the_containers_localhost_mapped():
    services = planned()
    assert services["airflow-apiserver"].healthcheck.command == [
        "curl", "--fail", "http://127.0.0.1:40001/api/v2/monitor/health",
    ]  # fmt: skip
    assert services["airflow-scheduler"].healthcheck.command == ["curl", "--fail", "http://127.0.0.1:40002/health"]
    dag_processor = services["airflow-dag-processor"].healthcheck
    assert dag_processor.command == [
        "/bin/sh", "-c", 'airflow jobs check --job-type DagProcessorJob --hostname "${HOSTNAME}"',
    ]  # fmt: skip
    assert (dag_processor.interval, dag_processor.retries, dag_processor.deadline) == (30, 5, 180)
    assert services["postgres"].healthcheck.command == ["pg_isready", "-U", "airflow", "-d", "airflow"]
    assert services["postgres"].stop_signal == signal.SIGINT  # the postgres image's STOPSIGNAL
    assert healthcheck_command(["NONE"]) is None
    assert healthcheck_command("curl -f x") == ["/bin/sh", "-c", "curl -f x"]


def test_the_init_service_runs_its_own_script_on_the_local_folders():
    (bash, flag, script) = planned().get("airflow-init").command
    assert (bash, flag) == ("/bin/bash", "-c")
    assert "mkdir -p /tmp/stack/opt/airflow/logs /tmp/stack/opt/airflow/data/images" in script
    assert "\nairflow db migrate\n" in script  # the image's entrypoint runs its arguments
    assert 'chown -R "50000:0" /tmp/stack/opt/airflow/logs /tmp/stack/opt/airflow/data' in script
    not_root = planned(as_root=False)["airflow-init"].command[2]
    assert not_root.startswith('chown() { echo "not root: skipped chown $*"; }\n')


def test_services_start_after_what_they_depend_on():
    order = start_order(planned())
    assert order.index("postgres") < order.index("airflow-init") < order.index("airflow-apiserver")
    assert order.index("airflow-apiserver") < order.index("airflow-scheduler")


def test_code_mounts_are_copied_and_state_mounts_start_empty_as_the_files_header_says():
    mounts = {mount.source: mount for mount in bind_mounts(read_compose(COMPOSE_FILE, {}))}
    assert {source for source, mount in mounts.items() if mount.is_state} == set(STATE_MOUNTS)
    assert {source for source, mount in mounts.items() if not mount.is_state} == {"./dags", "./plugins", "./spark_jobs"}
    assert "mkdir -p data/images logs" in COMPOSE_FILE.read_text()  # how its users create the state folders


def test_a_service_sees_the_images_environment_not_this_shells():
    environ = {"PATH": "/usr/bin", "HOME": "/root", "AIRFLOW_HOME": "/elsewhere", "PYTHONPATH": "/x",
               "FRUITFLOW_TARGET": "emr", "AWS_PROFILE": "prod"}  # fmt: skip
    env = base_environment(environ, LOCAL_ROOT, Path("/venv/bin/python"))
    assert env["AIRFLOW_HOME"] == "/tmp/stack/opt/airflow"
    assert env["PATH"] == "/venv/bin:/usr/bin"
    assert {"PYTHONPATH", "FRUITFLOW_TARGET", "AWS_PROFILE"}.isdisjoint(env)


def test_a_log_event_reads_as_a_line():
    event = {"timestamp": "2026-12-02T20:33:40Z", "level": "info", "event": "Running command", "logger": "task"}
    assert log_line(event) == "2026-12-02T20:33:40Z INFO    Running command  [task]"
    assert log_line("::endgroup::") == "::endgroup::"
    failed = {"event": "Task failed with exception", "error_detail": [{"exc_type": "AirflowFailException",
              "exc_value": "invalid params: no images"}]}  # fmt: skip
    assert log_line(failed) == "Task failed with exception: AirflowFailException: invalid params: no images"


def test_a_failing_stack_shows_what_its_services_said_went_wrong():
    output = "\n".join([
        "2026-12-02T20:49:48.97Z [info     ] Worker starting up pid=1 [airflow.executors.LocalExecutor]",
        "2026-12-02T20:49:48.97Z [error    ] Workload execution failed. [airflow.executors.LocalExecutor]",
        "Traceback (most recent call last):",
        '  File "client.py", line 197, in get_json_error',
        "airflow.sdk.api.client.ServerResponseError: Method Not Allowed",
        "2026-12-02T20:49:48.95Z [info     ] request finished [http.access] client_addr=127.0.0.1:1 method=PATCH "
        "path=/executions/task-instances/01a2/run query= status_code=405",
        "2026-12-02T20:49:49.00Z [info     ] request finished [http.access] method=GET path=/health status_code=200",
        '2026-12-02 20:27:51.271 UTC [8060] FATAL:  password authentication failed for user "airflow"',
    ])  # fmt: skip
    assert problem_lines(output) == [
        "2026-12-02T20:49:48.97Z [error    ] Workload execution failed. [airflow.executors.LocalExecutor]",
        "airflow.sdk.api.client.ServerResponseError: Method Not Allowed",
        "2026-12-02T20:49:48.95Z refused PATCH /executions/task-instances/01a2/run: 405",
        '2026-12-02 20:27:51.271 UTC [8060] FATAL:  password authentication failed for user "airflow"',
    ]


# --- The Dockerfile installs what the stack ran with -----------------------------------------


def pip_install_files(text: str) -> tuple[set[str], set[str]]:
    """The requirement and constraint files (names only) of the pip install lines in ``text``."""
    lines = [line for line in text.replace("\\\n", " ").splitlines() if re.search(r"(pip|\$\(PIP\)) install", line)]
    requirements = {Path(name).name for line in lines for name in re.findall(r"-r (\S+)", line)}
    constraints = {Path(name).name for line in lines for name in re.findall(r"-c (\S+)", line)}
    return requirements, constraints


def test_the_dockerfile_installs_the_files_the_stacks_environment_was_installed_from():
    """The image's pip install and the Makefile's (which the stack's .venv comes from) install the same
    packages under the same constraints: the image requirements.txt, the Makefile the project's [local]
    extra, whose packages requirements.txt pins (tests/test_packaging.py); and every requirement of the
    stack is pinned there."""
    dockerfile = pip_install_files((ROOT / "Dockerfile").read_text())
    makefile = (ROOT / "Makefile").read_text()
    venv_recipes = re.findall(r"^\$\(VENV\)/\.(?:runtime|stack)-installed:.*\n((?:\t.*\n)+)", makefile, re.MULTILINE)
    assert len(venv_recipes) == 2
    assert dockerfile == ({"requirements.txt", "requirements-stack.txt"}, {"constraints.txt"})
    assert pip_install_files("".join(venv_recipes)) == ({"requirements-stack.txt"}, {"constraints.txt"})
    assert '-e ".[local]" -c constraints.txt' in venv_recipes[0]
    assert re.search(r"^COPY .*requirements-stack\.txt", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    pins = set((ROOT / "constraints.txt").read_text().splitlines())
    lines = (line.split("#")[0].strip() for line in (ROOT / "requirements-stack.txt").read_text().splitlines())
    stack_requirements = [line for line in lines if line]
    assert {requirement.split("==")[0] for requirement in stack_requirements} >= {"asyncpg", "psycopg2-binary"}
    assert all(requirement in pins for requirement in stack_requirements)
    assert "-r requirements-stack.txt" in makefile.split("\nlock:")[1].split("\n\n")[0]  # `make lock` keeps the pins


def test_the_docs_and_ci_install_what_the_skip_message_names():
    assert APT_INSTALL in (ROOT / "docs" / "getting-started" / "docker-compose.md").read_text()
    assert APT_INSTALL in (ROOT / ".ci" / "run").read_text()


# --- The stack itself ---------------------------------------------------------------------------

DAG_ID = "fruits_features"
CONSUMER_DAG = ROOT / "examples" / "train_fruit_classifier.py"  # the docs' DAG scheduled on the features asset
CONSUMER_DAG_ID = CONSUMER_DAG.stem
IMAGES = 6  # one in each of six classes: the smallest folder PCA and the checks take
PIPELINE_TASKS = ["validate_params", "find_changes", "empty_run_folder", "upload_code",
                  "featurize", "pca", "export_csv", "check_outputs", "remove_old_runs", "write_report"]  # fmt: skip


def test_the_example_consumer_dag_is_scheduled_on_the_features_asset():
    assert f'dag_id="{CONSUMER_DAG_ID}", schedule=[FRUIT_FEATURES]' in CONSUMER_DAG.read_text()


LATE_AFTER = "20s"  # FRUITFLOW_ALERT_LATE_AFTER: shorter than the triggered run, which is then late


def logged_line(folders: list[Path], text: str) -> str | None:
    """The first line holding ``text`` in the files under ``folders`` (services' output, Airflow's logs)."""
    for folder in folders:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                for line in path.read_text(errors="replace").splitlines():
                    if text in line:
                        return line
    return None


@pytest.mark.stack
@pytest.mark.spark  # its scheduler's tasks start JVMs (spark-submit)
def test_the_compose_services_run_the_dag_on_postgresql():
    if missing := missing_programs():
        pytest.skip(f"needs {', '.join(missing)}: {APT_INSTALL}")
    from fruitflow.sample_images import generate_images

    with ComposeStack(variables={"AIRFLOW_UID": str(os.getuid()), "FRUITFLOW_ALERT_LATE_AFTER": LATE_AFTER}) as stack:
        stack.prepare_mounts()
        shutil.copy(CONSUMER_DAG, stack.home / "dags")
        stack.up()
        api = AirflowApi(stack.api_url)
        api.log_in()
        assert wait_for_dag(api, DAG_ID, 180, stack.alive())["is_paused"]  # DAGS_ARE_PAUSED_AT_CREATION
        wait_for_dag(api, CONSUMER_DAG_ID, 60, stack.alive())
        unpause(api, CONSUMER_DAG_ID)
        # Unpausing starts the run of the last interval at once, with the file's settings: on the
        # empty images folder (mkdir -p data/images) it stops in validate_params, as the README says.
        unpause(api, DAG_ID)
        nightly = scheduled_run(api, DAG_ID, 300, stack.alive())
        nightly_states = {ti["task_id"]: ti["state"] for ti in api.task_instances(DAG_ID, nightly["dag_run_id"])}
        nightly_log = "\n".join(api.task_log(DAG_ID, nightly["dag_run_id"], "validate_params", 1))

        images = generate_images(stack.home / "data" / "images", IMAGES, seed=0)
        # ImageNet's download is out of reach here: the random weights (the form's only other non-file choice).
        run = trigger_and_wait(api, DAG_ID, {"weights": "random"}, 900, stack.alive())
        run_id = run["dag_run_id"]
        states = {ti["task_id"]: ti["state"] for ti in api.task_instances(DAG_ID, run_id)}
        featurize_log = api.task_log(DAG_ID, run_id, "featurize", 1)
        stack.timings["run finished"] = stack.elapsed()
        # Airflow's deadline alert, for real: the scheduler saw the run pass its deadline, and the
        # triggerer ran the DAG's callback (no notifier is configured here: it logs the alert's subject).
        late = f"fruitflow LATE: run {run_id} not finished after {LATE_AFTER}"
        late_line = wait_until(
            lambda: logged_line([stack.logs, stack.home / "logs"], late), 120, "the late alert", stack.alive()
        )
        consumer = scheduled_run(api, CONSUMER_DAG_ID, 120, stack.alive(), run_type="asset_triggered")
        consumer_log = "\n".join(api.task_log(CONSUMER_DAG_ID, consumer["dag_run_id"], "train", 1))
        stack.timings["asset-triggered run finished"] = stack.elapsed()
        results = stack.home / "data" / "results"
        folder = run_folder_of(results, run_id)
        report = json.loads((folder / "report.json").read_text())
        csv = pd.read_csv(folder / "pca_features.csv")
        features = pd.read_parquet(folder / "features")
        latest = json.loads((results / "latest.json").read_text())
        marker = str(stack.root)

    assert nightly["state"] == "failed" and nightly_states["validate_params"] == "failed"
    assert late in late_line
    assert f"no .jpg, .jpeg, .png files under {stack.home / 'data' / 'images'}" in nightly_log
    assert run["state"] == "success"
    assert states == dict.fromkeys(PIPELINE_TASKS, "success")
    assert report["status"] == "succeeded" and report["target"] == "local" and report["failed_task"] is None
    assert report["counts"] == {
        "images": IMAGES, "featurised": IMAGES, "errors": 0, "error_share": 0.0, "pca_rows": IMAGES, "csv_rows": IMAGES,
        "reused": 0, "new": IMAGES, "changed": 0, "removed": 0, "through_network": IMAGES,
    }  # fmt: skip
    assert report["inputs"]["images_uri"] == str(stack.home / "data" / "images")  # the file's FRUITFLOW_IMAGES_URI
    assert sorted(csv["path"]) == sorted(f"file:{path}" for path in images) == sorted(features["path"])
    assert len(csv.columns) == report["pca"]["k"] + 2 and features["features"].map(len).eq(1280).all()
    assert latest["run_key"] == folder.name  # the last good run, for the next night
    # The good run's asset event started the example consumer DAG, which read the event's extra (the failed
    # scheduled run before it emitted none).
    assert consumer["state"] == "success"
    assert f"run {folder.name}: {IMAGES} images, {IMAGES} new, k = {report['pca']['k']}" in consumer_log
    assert any(f"featurize done: images={IMAGES} featurised={IMAGES} errors=0" in line for line in featurize_log)
    assert stack.swept == [], "processes outlived their service's stop"
    assert marked_processes(marker) == []  # nothing the stack started is left

    print("\n".join([
        f"timings (s): {json.dumps(stack.timings)}",
        f"DAG run {run_id}: {run['state']}, report.json: {report['status']}, k = {report['pca']['k']}",
        "the first lines of its featurize log, and the job's own:",
        *featurize_log[:12], "...", *[line for line in featurize_log if "fruitflow: featurize" in line],
    ]))  # fmt: skip
