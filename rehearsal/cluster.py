"""The rehearsal cluster: plays EMR for the clusters of a moto server, running their steps on local Spark.

moto accepts RunJobFlow and AddJobFlowSteps but never runs a step. Inside a ``RehearsalCluster``
block, each step added to a cluster of the moto server is executed, in order, from exactly what
was sent: the step's ``HadoopJarStep.Args`` and the cluster's RunJobFlow ``Configurations`` as
DescribeCluster reports them. The ``spark-submit`` command runs with the master switched to
local and the deploy mode to client, nothing else changed; the ``spark-defaults``
classification becomes ``spark-defaults.conf`` (as EMR writes it on the nodes) and the
``spark-env`` ``export`` classification the step's environment, the cluster's Python mapped
to this one. ``s3://`` URIs reach Spark as ``s3://``: Hadoop's ViewFileSystemOverloadScheme
serves each bucket from a local mirror (``s3_mirror``), pulled before and pushed after every step.

Steps end as EMR reports them: COMPLETED on exit 0; otherwise FAILED with FailureDetails carrying
the driver's last error line and the log file, and the steps after it CANCELLED (CANCEL_AND_WAIT)
or the cluster terminated (TERMINATE_CLUSTER). Each step's controller, stdout and stderr go
gzipped under the cluster's LogUri in EMR's layout (``<log uri>/<cluster id>/steps/<step id>/``).
When the cluster starts (after ``startup_seconds``, or with a first step that comes sooner), its
bootstrap actions are checked to resolve: the script, the S3 URIs among its arguments and the files
it copies from them exist; a cluster whose bootstrap cannot resolve ends TERMINATED_WITH_ERRORS
(BOOTSTRAP_FAILURE) with its steps cancelled, as on EMR. With ``run_bootstrap`` the actions also
run for real, into a throwaway venv. With ``launch_failures=n`` the first n clusters end
TERMINATED_WITH_ERRORS while starting with a transient reason (INTERNAL_ERROR, as EMR reports
insufficient capacity), as a night whose first launch meets no capacity. DescribeCluster reports
each reason's code, which moto leaves out.

This is a rehearsal, not EMR: no YARN, IAM, network, instance capacity or EMRFS (docs/develop/rehearsal.md).
"""

from __future__ import annotations

import gzip
import logging
import os
import queue
import re
import shlex
import subprocess
import sys
import tempfile
import threading
import venv
from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from unittest import mock

import boto3

from fruitflow_pipeline.step_logs import ERROR_LINES  # what the DAG's watcher reads as the reason, too
from rehearsal.node import node_environment, run_bootstrap
from rehearsal.s3_mirror import BucketMirror

log = logging.getLogger("fruitflow.rehearsal")

LOCAL_MASTER = "local[*]"
BOOTSTRAP_FAILURE = "BOOTSTRAP_FAILURE"  # the StateChangeReason code of a cluster whose bootstrap failed
LAUNCH_FAILURE = "INTERNAL_ERROR"  # the code of EMR's capacity errors (fruitflow_pipeline.launch cites the page)
LAUNCH_FAILURE_MESSAGE = "rehearsed launch failure (REHEARSE_LAUNCH_FAILURES): no EC2 capacity in the zone"
# The one node that plays the primary and every core node: its bootstrap runs as the primary's (the
# full package set), since the steps' driver and executors share one Python here.
BOOTSTRAP_NODE = "i-rehearsal"
STILL_WAITING = object()  # no step yet when the cluster finished starting
# Settings that only mean something to executors on a cluster manager: local mode runs every
# task in the driver's JVM and ignores them.
IGNORED_IN_LOCAL_MODE = ("spark.executor.", "spark.dynamicAllocation.", "spark.yarn.", "spark.shuffle.service.")
PYTHON_SETTINGS = ("spark.pyspark.python", "spark.pyspark.driver.python")


def s3_filesystem(buckets: Iterable[str], mirror_root: Path) -> dict[str, str]:
    """Hadoop settings that make ``s3://<bucket>/<key>`` the file ``<mirror_root>/<bucket>/<key>``,
    Spark still naming it ``s3://...`` (listings, the ``path`` column, inputFiles): one ViewFS
    ``linkFallback`` per bucket (docs/decisions/0015-rehearsal-viewfs.md)."""
    settings = {"spark.hadoop.fs.s3.impl": "org.apache.hadoop.fs.viewfs.ViewFileSystemOverloadScheme"}
    for bucket in sorted(buckets):
        target = (mirror_root / bucket).resolve().as_uri()
        settings[f"spark.hadoop.fs.viewfs.mounttable.{bucket}.linkFallback"] = target
    return settings


def classification(configurations: list[dict], name: str) -> dict:
    return next((c for c in configurations if c.get("Classification") == name), {})


def spark_defaults(configurations: list[dict], python: str) -> tuple[dict[str, str], list[str]]:
    """The cluster's ``spark-defaults`` with its Python mapped to ``python``, and the settings
    in it that local mode ignores."""
    properties = dict(classification(configurations, "spark-defaults").get("Properties", {}))
    for name in PYTHON_SETTINGS:
        if name in properties:
            properties[name] = python
    ignored = sorted(name for name in properties if name.startswith(IGNORED_IN_LOCAL_MODE))
    return properties, ignored


def export_variables(configurations: list[dict]) -> dict[str, str]:
    """The ``spark-env`` classification's ``export`` variables: the environment of Spark on the nodes."""
    export = classification(classification(configurations, "spark-env").get("Configurations", []), "export")
    return dict(export.get("Properties", {}))


def spark_environment(configurations: list[dict], python: str) -> dict[str, str]:
    """The ``export`` variables, PYSPARK_PYTHON mapped to ``python``."""
    variables = export_variables(configurations)
    if "PYSPARK_PYTHON" in variables:
        variables["PYSPARK_PYTHON"] = python
    return variables


def local_submit_command(args: list[str], spark_submit: str) -> list[str]:
    """A command-runner.jar step's ``spark-submit ...`` arguments as a local command: the master
    switched to local and the deploy mode to client, every other argument as sent."""
    if not args or args[0] != "spark-submit":
        raise ValueError(f"the rehearsal runs spark-submit steps only, not {shlex.join(args[:1])}")
    kept, skip_value = [], False
    for arg in args[1:]:
        if skip_value:
            skip_value = False
        elif arg in ("--master", "--deploy-mode"):
            skip_value = True
        elif not arg.startswith(("--master=", "--deploy-mode=")):
            kept.append(arg)
    return [spark_submit, "--master", LOCAL_MASTER, "--deploy-mode", "client", *kept]


def driver_error(logs: Mapping[str, str]) -> tuple[str, str]:
    """The line of a failed step's logs (``{"stdout": ..., "stderr": ...}``) that says why, and the log holding it.

    A PySpark driver's own output, its traceback included, is in the step's stdout: Spark's
    PythonRunner copies the Python process's stdout and stderr to the JVM's stdout. Spark's log is in stderr.
    """
    for pattern in ERROR_LINES:
        for name, text in logs.items():
            matching = [line.strip() for line in text.splitlines() if pattern.search(line.strip())]
            if matching:
                return matching[-1][:1000], name
    lines = [line.strip() for line in logs.get("stderr", "").splitlines() if line.strip()]
    return (lines[-1][:1000] if lines else "no output"), "stderr"


def conf_file(properties: Mapping[str, str]) -> str:
    return "".join(f"{name} {value}\n" for name, value in properties.items())


def split_s3_uri(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


COPIED_FILE = re.compile(r'aws s3 cp [^"\n]*"\$\{?(\w+)\}?/([^"$]+)"')
POSITIONAL = re.compile(r'^(\w+)="\$\{?(\d)[^"]*"', re.MULTILINE)


def files_a_bootstrap_copies(script: str, args: list[str]) -> list[str]:
    """The S3 URIs a bootstrap script copies with ``aws s3 cp "$var/name"``, ``var`` being one of
    its positional arguments (``var="${1%/}"``)."""
    positional = {name: int(number) for name, number in POSITIONAL.findall(script)}
    uris = []
    for variable, name in COPIED_FILE.findall(script):
        number = positional.get(variable)
        if number and number <= len(args) and args[number - 1].startswith("s3://"):
            uris.append(f"{args[number - 1].rstrip('/')}/{name}")
    return uris


class RehearsalCluster:
    """Runs the steps of every cluster of the moto server at ``endpoint_url``, while the block lasts.

    The moto server must run in this process (``moto.server.ThreadedMotoServer``): the rehearsal
    hooks into its EMR models to hear of new clusters and steps and to settle the steps.
    """

    def __init__(
        self,
        endpoint_url: str,
        mirror_root: Path,
        python: str = sys.executable,
        spark_submit: str = "",
        run_bootstrap: bool = False,
        startup_seconds: float = 10.0,
        launch_failures: int = 0,
    ):
        from fruitflow_pipeline.steps import default_spark_submit

        self.endpoint_url = endpoint_url
        self.mirror_root = mirror_root
        self.python = python
        self.spark_submit = spark_submit or default_spark_submit()
        self.run_bootstrap = run_bootstrap
        self.startup_seconds = startup_seconds
        self.launch_failures = launch_failures
        self.mirrors: dict[str, BucketMirror] = {}
        self.queues: defaultdict[str, queue.Queue] = defaultdict(queue.Queue)
        self.threads: list[threading.Thread] = []
        self.running: dict[str, subprocess.Popen] = {}
        self.lock = threading.Lock()
        self._patches: list = []
        # Made here, once: making a client reads os.environ, which dag.test()'s in-process task runner
        # changes meanwhile (a cluster thread died of KeyError '__AIRFLOW_SUPERVISOR_FD'). Made, a
        # client is safe to share between threads.
        self._clients = {service: boto3.client(service, endpoint_url=endpoint_url) for service in ("emr", "s3")}

    def client(self, service: str):
        return self._clients[service]

    def __enter__(self) -> RehearsalCluster:
        from moto.emr import models
        from moto.emr.exceptions import ValidationException

        rehearsal = self
        add_steps, terminate, run_job_flow, status = (
            models.Cluster.add_steps,
            models.Cluster.terminate,
            models.ElasticMapReduceBackend.run_job_flow,
            models.Cluster.status,
        )

        def steps_added(cluster, steps):
            if terminated(cluster):
                raise ValidationException(
                    "A job flow that is shutting down, terminated, or finished may not be modified."
                )
            state = getattr(cluster, "state", None)  # None: moto is building it (RunJobFlow's own steps)
            added = add_steps(cluster, steps)
            if state is not None:
                cluster.state = "RUNNING" if state == "WAITING" else state  # still starting: runs them once ready
            for step in added:
                step.state = "PENDING"
                rehearsal.enqueue(cluster, step)
            return added

        def terminating(cluster):
            if not terminated(cluster):  # EMR leaves an ended cluster's state as it is
                terminate(cluster)
                rehearsal.stop_steps(cluster)

        def cluster_created(backend, **kwargs):
            cluster = run_job_flow(backend, **kwargs)
            cluster.state = "STARTING"  # until its thread has run (or checked) the bootstrap
            rehearsal.start(cluster)
            return cluster

        def status_with_code(cluster):
            answer = status.fget(cluster)
            if code := getattr(cluster, "reason_code", None):
                answer["StateChangeReason"]["Code"] = code
            return answer

        self._patches = [
            mock.patch.object(models.Cluster, "status", property(status_with_code)),
            mock.patch.object(models.Cluster, "add_steps", steps_added),
            mock.patch.object(models.Cluster, "terminate", terminating),
            mock.patch.object(models.ElasticMapReduceBackend, "run_job_flow", cluster_created),
        ]
        for patch in self._patches:
            patch.start()
        return self

    def __exit__(self, *exc_info) -> None:
        for patch in reversed(self._patches):
            patch.stop()
        with self.lock:
            for process in self.running.values():
                process.kill()
        for work in self.queues.values():
            work.put(None)
        for thread in self.threads:
            thread.join(timeout=60)

    # Bootstrap

    def bootstrap_problems(self, cluster) -> list[str]:
        """What a node would miss: the script, an s3:// argument, a file the script copies."""
        problems = []
        for action in cluster.bootstrap_actions:
            path, args = action.script_path, action.args
            try:
                script = self.read_object(path)
            except Exception:
                problems.append(f"bootstrap action {action.name!r}: no script at {path}")
                continue
            wanted = [arg for arg in args if arg.startswith("s3://")] + files_a_bootstrap_copies(script, args)
            problems += [
                f"bootstrap action {action.name!r}: nothing at {uri}" for uri in wanted if not self.exists(uri)
            ]
        return problems

    def bootstrap(self, cluster) -> None:
        """Run the cluster's bootstrap actions for real, as a node would, into a throwaway venv
        standing for the node's Python (fake ``aws`` reading the mirror, fake ``sudo``)."""
        description = self.client("emr").describe_cluster(ClusterId=cluster.id)["Cluster"]
        node_python = export_variables(description.get("Configurations", [])).get("PYSPARK_PYTHON")
        cluster.state = "BOOTSTRAPPING"
        self.pull()
        with tempfile.TemporaryDirectory(prefix=f"rehearsal-node-{cluster.id}-") as work:
            venv.create(Path(work) / "node-python", with_pip=True)
            python = str(Path(work) / "node-python" / "bin" / "python")
            env = node_environment(Path(work), self.mirror_root)
            for number, action in enumerate(cluster.bootstrap_actions, start=1):
                bucket, key = split_s3_uri(action.script_path)
                args = [python if arg == node_python else arg for arg in action.args]
                log.info(
                    "cluster %s: bootstrap action %d: %s", cluster.id, number, shlex.join([action.script_path, *args])
                )
                result = run_bootstrap(self.mirror_root / bucket / key, args, env)
                folder = f"node/{BOOTSTRAP_NODE}/bootstrap-actions/{number}/"
                self.write_logs(description, folder, {"stdout": result.stdout, "stderr": result.stderr})
                if result.returncode:
                    last = (result.stderr.strip().splitlines() or ["no output"])[-1]
                    fail_cluster(cluster, f"bootstrap action {number} returned a non-zero return code: {last}")
                    return
        log.info("cluster %s: bootstrap actions ran", cluster.id)

    def read_object(self, uri: str) -> str:
        bucket, key = split_s3_uri(uri)
        return self.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read().decode()

    def exists(self, uri: str) -> bool:
        bucket, key = split_s3_uri(uri)
        listed = self.client("s3").list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1)
        return listed.get("KeyCount", 0) > 0

    # Steps

    def start(self, cluster) -> None:
        """The cluster's own thread: its bootstrap, when rehearsed, then its steps in order."""
        with self.lock:
            work = self.queues[cluster.id]
        thread = threading.Thread(target=self.run_cluster, args=(cluster, work), name=f"rehearsal-{cluster.id}")
        thread.daemon = True
        self.threads.append(thread)
        thread.start()

    def enqueue(self, cluster, step) -> None:
        with self.lock:
            self.queues[cluster.id].put(step)

    def stop_steps(self, cluster) -> None:
        with self.lock:
            process = self.running.get(cluster.id)
        if process is not None:
            log.info("cluster %s terminated: stopping its running step", cluster.id)
            process.kill()

    def run_cluster(self, cluster, work: queue.Queue) -> None:
        # A real cluster takes minutes to start, and the DAG adds its steps once it is ready. The
        # rehearsal's starts after a while, or with a first step that comes sooner (added with RunJobFlow).
        try:
            step = work.get(timeout=self.startup_seconds)
        except queue.Empty:
            step = STILL_WAITING
        if step is not None:
            self.start_cluster(cluster)
        if step is STILL_WAITING:
            step = work.get()
        while step is not None:
            if step.state == "PENDING":
                self.run_pending(cluster, step)
            if work.empty() and not terminated(cluster):
                cluster.state = "WAITING"
            step = work.get()

    def start_cluster(self, cluster) -> None:
        """Bootstrap the cluster: check that its actions resolve, and run them when rehearsed."""
        with self.lock:
            fails_to_launch, self.launch_failures = self.launch_failures > 0, max(0, self.launch_failures - 1)
        if fails_to_launch:
            fail_cluster(cluster, LAUNCH_FAILURE_MESSAGE, code=LAUNCH_FAILURE)
            return
        try:
            if problems := self.bootstrap_problems(cluster):
                fail_cluster(cluster, "; ".join(problems))
                return
            log.info("cluster %s: bootstrap actions resolve (%d)", cluster.id, len(cluster.bootstrap_actions))
            if self.run_bootstrap:
                self.bootstrap(cluster)
        except Exception as problem:
            log.exception("cluster %s: the rehearsal's bootstrap failed", cluster.id)
            fail_cluster(cluster, f"rehearsal error: {problem}")
            return
        if not terminated(cluster):
            cluster.state = "WAITING"

    def run_pending(self, cluster, step) -> None:
        if terminated(cluster):
            settle(step, "CANCELLED", reason="the cluster terminated before the step ran")
            return
        cluster.state = "RUNNING"
        try:
            self.run_step(cluster, step)
        except BaseException as problem:  # never leave a step RUNNING: a watcher would wait for hours
            log.exception("step %s of cluster %s: the rehearsal failed", step.name, cluster.id)
            settle(step, "FAILED", details={"Reason": "rehearsal error", "Message": str(problem)})
        if step.state == "FAILED":
            self.after_failure(cluster, step)

    def after_failure(self, cluster, step) -> None:
        if step.action_on_failure == "CONTINUE":
            return
        for other in [other for other in cluster.steps if other.state == "PENDING"]:
            settle(other, "CANCELLED", reason=f"step {step.name} failed")
        if step.action_on_failure in ("TERMINATE_CLUSTER", "TERMINATE_JOB_FLOW"):
            cluster.terminate()

    def run_step(self, cluster, step) -> None:
        description = self.client("emr").describe_cluster(ClusterId=cluster.id)["Cluster"]
        configurations = description.get("Configurations", [])
        args = self.client("emr").describe_step(ClusterId=cluster.id, StepId=step.id)["Step"]["Config"]["Args"]
        step.state, step.start_date_time = "RUNNING", datetime.now(UTC)

        self.pull()
        with tempfile.TemporaryDirectory(prefix=f"rehearsal-{step.id}-") as work_dir:
            command, environment, controller = self.prepare(args, configurations, Path(work_dir))
            for line in controller:
                log.info("step %s (%s): %s", step.name, step.id, line)
            stdout_path, stderr_path = Path(work_dir) / "stdout", Path(work_dir) / "stderr"
            with stdout_path.open("wb") as stdout, stderr_path.open("wb") as stderr:
                process = subprocess.Popen(command, env=environment, stdout=stdout, stderr=stderr)
                with self.lock:
                    self.running[cluster.id] = process
                exit_code = process.wait()
                with self.lock:
                    del self.running[cluster.id]
            pushed = self.push()
            controller += [f"exit code {exit_code}", *pushed]
            log.info("step %s (%s): exit code %d; %s", step.name, step.id, exit_code, "; ".join(pushed))
            logs = {
                "stdout": stdout_path.read_text(errors="replace"),
                "stderr": stderr_path.read_text(errors="replace"),
            }
            log_folder = self.write_logs(
                description, f"steps/{step.id}/", {"controller": "\n".join(controller), **logs}
            )

        if exit_code == 0:
            settle(step, "COMPLETED")
        elif terminated(cluster):
            settle(step, "CANCELLED", reason="the cluster terminated while the step ran")
        else:
            message, log_name = driver_error(logs)
            details = {"Reason": f"spark-submit exited with code {exit_code}", "Message": message}
            if log_folder:
                details["LogFile"] = f"{log_folder}{log_name}.gz"
            settle(step, "FAILED", details=details)

    def prepare(self, args: list[str], configurations: list[dict], work_dir: Path):
        """The local command, its environment, and the controller log's lines saying what was changed."""
        properties, ignored = spark_defaults(configurations, self.python)
        properties |= s3_filesystem(self.mirrors, self.mirror_root)
        conf_dir = work_dir / "conf"
        conf_dir.mkdir()
        (conf_dir / "spark-defaults.conf").write_text(conf_file(properties))
        command = local_submit_command(args, self.spark_submit)
        environment = {
            key: value for key, value in os.environ.items() if not key.startswith(("PYSPARK", "PYTHONPATH", "SPARK"))
        }
        environment |= spark_environment(configurations, self.python) | {
            "SPARK_CONF_DIR": str(conf_dir),
            "SPARK_HOME": str(Path(self.spark_submit).resolve().parents[1]),
        }
        controller = [
            f"spark-submit as run: {shlex.join(command)}",
            f"sent: {shlex.join(args)}",
            f"ignored by local mode: {', '.join(f'{name}={properties[name]}' for name in ignored) or 'nothing'}",
            f"the cluster's Python mapped to {self.python}",
            f"s3:// served from {', '.join(f'{b} -> {self.mirror_root / b}' for b in sorted(self.mirrors))}",
        ]
        return command, environment, controller

    # Mirror

    def pull(self) -> None:
        s3 = self.client("s3")
        for bucket in s3.list_buckets()["Buckets"]:
            self.mirrors.setdefault(bucket["Name"], BucketMirror(s3, bucket["Name"], self.mirror_root))
        log.info(
            "; ".join(
                f"mirrored s3://{bucket} in: {mirror.pull().describe()}" for bucket, mirror in self.mirrors.items()
            )
        )

    def push(self) -> list[str]:
        return [f"mirrored s3://{bucket} back: {mirror.push().describe()}" for bucket, mirror in self.mirrors.items()]

    def write_logs(self, description: dict, folder: str, logs: Mapping[str, str]) -> str | None:
        """Logs gzipped under ``<the cluster's LogUri>/<cluster id>/<folder>``, as EMR lays them
        out (``steps/<step id>/``, ``node/<instance>/bootstrap-actions/<n>/``); returns the folder's URI."""
        log_uri = description.get("LogUri")
        if not log_uri:
            return None
        uri = f"{log_uri.rstrip('/')}/{description['Id']}/{folder}"
        bucket, prefix = split_s3_uri(uri)
        s3 = self.client("s3")
        for name, text in logs.items():
            s3.put_object(Bucket=bucket, Key=f"{prefix}{name}.gz", Body=gzip.compress(text.encode()))
        return uri


def fail_cluster(cluster, message: str, code: str = BOOTSTRAP_FAILURE) -> None:
    """End a moto cluster as EMR ends one that failed to start (by default, its bootstrap failed)
    with the reason ``code`` and ``message``; its pending steps are cancelled."""
    log.error("cluster %s: %s: %s", cluster.id, code, message)
    cluster.state = "TERMINATED_WITH_ERRORS"
    cluster.last_state_change_reason, cluster.reason_code = message, code
    cluster.end_datetime = datetime.now(UTC)
    for step in cluster.steps:
        if step.state == "PENDING":
            settle(step, "CANCELLED", reason="the cluster terminated with errors")


def terminated(cluster) -> bool:
    return (getattr(cluster, "state", None) or "").startswith("TERMINAT")  # not set yet while moto builds it


def settle(step, state: str, reason: str | None = None, details: dict | None = None) -> None:
    """Set a moto step's final state, with what DescribeStep reports of it."""
    step.state, step.end_date_time = state, datetime.now(UTC)
    status = step.status
    if reason:
        status["StateChangeReason"] = {"Message": reason}
    if details:
        status["FailureDetails"] = details
    step.Status = status
