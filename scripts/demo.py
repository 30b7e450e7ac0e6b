"""`make demo`: one run of the fruits_features DAG on this machine, on the local target.

Real Airflow (its embedded SQLite metadata DB, `airflow dags test`), real Spark in local
mode, real TensorFlow. Settings come from the environment (the Makefile passes them on):

    IMAGES   folder of <class>/<image>.jpg to featurise (default: generate COUNT sample images)
    COUNT    sample images to generate when IMAGES is not set (default 200)
    WEIGHTS  imagenet (default), random, or the path of a Keras MobileNetV2 .h5 weights file
    ENGINE   onnx (default), openvino, openvino-bf16 or tensorflow
    CONF     the trigger's conf for the other params, as JSON (as for `make plan`), such as
             '{"max_error_share": 0.2}'; checked like the trigger form before anything runs
    DATA_DIR where sample images and results go (default: data/ in the repository)
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from airflow.sdk.exceptions import ParamValidationError  # noqa: E402

from fruitflow.contract import DEFAULT_ENGINE, ENGINES  # noqa: E402
from fruitflow.sample_images import FRUITS, generate_images  # noqa: E402
from fruitflow_pipeline.params import InvalidParams  # noqa: E402
from fruitflow_pipeline.plan import conf_from_json, plan_for_conf  # noqa: E402
from fruitflow_pipeline.retention import run_folders_of  # noqa: E402
from fruitflow_pipeline.run import REPORT_FILE  # noqa: E402
from fruitflow_pipeline.settings import SettingError, Settings  # noqa: E402
from fruitflow_pipeline.storage import LocalStorage  # noqa: E402

DAG_ID = "fruits_features"
# The params the commands' own variables set: CONF leaves them to those.
SAMPLE_IMAGES = "sample_images"  # under DATA_DIR
SET_BY_VARIABLES = {"images_uri": "IMAGES", "results_uri": "DATA_DIR", "weights": "WEIGHTS", "engine": "ENGINE"}

# What the terminal shows of Airflow's log: each task as it starts, the jobs' summaries and errors.
PROGRESS = (
    re.compile(r"\[DAG TEST\] starting task_id=(?P<text>\w+)"),
    re.compile(r"fruitflow: (?P<text>\w+ done: .*?)\s+\[airflow"),
    re.compile(r"fruitflow: (?P<text>featurize progress: .*?)\s+\[airflow"),
    re.compile(r"(?P<text>\w+: error: .*?)\s+\[airflow"),
    re.compile(r"(?P<text>(invalid params|step \w+ failed|the CSV has|\d+ of \d+ images could not).*?)\s+\[airflow"),
    re.compile(r"^airflow\.sdk\.exceptions\.AirflowFailException: (?P<text>.+)"),  # a task's traceback, its last line
)


def progress(line: str) -> str | None:
    for pattern in PROGRESS:
        if match := pattern.search(line):
            return match["text"]
    return None


def airflow_environment(airflow_home: Path) -> dict[str, str]:
    return {
        **os.environ,
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{airflow_home / 'airflow.db'}",
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "FRUITFLOW_TARGET": "local",
        "PYTHONPATH": os.pathsep.join([str(ROOT / "plugins"), os.environ.get("PYTHONPATH", "")]),
    }


def deployment_defaults(images_uri: str, results_uri: str, weights: str) -> dict[str, str]:
    """The settings of a deployment whose nightly run is this run: FRUITFLOW_ALLOWED_URIS, unset,
    then lets runs read and write these locations and no others (docs/deploy/aws.md)."""
    return {
        "FRUITFLOW_IMAGES_URI": images_uri,
        "FRUITFLOW_RESULTS_URI": results_uri,
        "FRUITFLOW_WEIGHTS": weights,
        "FRUITFLOW_ALLOWED_URIS": "",
    }


def sample_images(data_dir: Path, count: int) -> Path:
    folder = data_dir / SAMPLE_IMAGES
    if len(list(folder.glob("*/*/*.jpg"))) != count:
        subprocess.run(["rm", "-rf", str(folder)], check=True)
        generate_images(folder, count, seed=0)
        print(f"Generated {count} sample images in {len(FRUITS)} classes under {folder}")
    return folder


def run_dag(env: dict[str, str], logical_date: str, conf: dict, log_path: Path) -> int:
    airflow = str(Path(sys.executable).parent / "airflow")
    with log_path.open("w") as log:
        migrate = subprocess.run([airflow, "db", "migrate"], env=env, stdout=log, stderr=subprocess.STDOUT)
        if migrate.returncode:
            return migrate.returncode
        command = [airflow, "dags", "test", DAG_ID, logical_date, "-c", json.dumps(conf)]
        process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in process.stdout:
            log.write(line)
            if shown := progress(line):
                print(f"  {shown}")
        return process.wait()


def folder_claimed_since(results: Path, started: datetime) -> Path | None:
    """The run folder of the DAG run that started at ``started``: the one it claimed, which is the
    day's key only for the day's first run (later ones take longer names, run_folder.py). `airflow
    dags test` names its DAG run itself, so the claim's time tells it apart."""
    since = started.replace(microsecond=0)  # claims are written to the second
    claimed = [folder for folder in run_folders_of(LocalStorage(), str(results), DAG_ID) if folder.claimed_at >= since]
    return results / max(claimed, key=lambda folder: (folder.claimed_at, folder.key)).key if claimed else None


def summary(report: dict, run_folder: str) -> str:
    """What a good run made and where (``run_folder``: a local folder or an s3:// URI)."""
    counts, pca = report["counts"], report["pca"]
    return "\n".join([
        f"\nimages:  {counts['images']} read, {counts['featurised']} featurised",
        f"errors:  {counts['errors']} ({counts['error_share']:.1%}), listed in {run_folder}/errors",
        f"k:       {pca['k']} components explain {pca['explained_variance']:.1%} of the variance",
        f"\nCSV:     {run_folder}/pca_features.csv",
        f"plot:    {run_folder}/explained_variance.png",
        f"scatter: {run_folder}/pca_scatter.png",
        f"report:  {run_folder}/report.json",
        f"page:    {run_folder}/report.html (open it in a browser)",
    ])  # fmt: skip


class BadInput(ValueError):
    """An IMAGES, WEIGHTS, ENGINE, COUNT or CONF the demo cannot run with."""


@dataclass(frozen=True)
class Inputs:
    images: Path
    weights: str
    engine: str
    conf: dict  # the trigger's conf besides the engine, from CONF


# What a command's deployment settings are, for the images folder and weights it runs with.
Deployment = Callable[[Path, str], dict[str, str]]


def local_deployment(data_dir: Path) -> Deployment:
    """`make demo`'s deployment: the local target, results under ``data_dir``."""
    return lambda images, weights: {
        "FRUITFLOW_TARGET": "local",
        **deployment_defaults(str(images), str(data_dir / "results"), weights),
    }


def conf_from_env(deployment: dict[str, str]) -> dict:
    """CONF, checked as the trigger form and validate_params would check it in ``deployment``."""
    try:
        conf = conf_from_json(os.environ.get("CONF") or "{}")
    except ValueError as problem:
        raise BadInput(f"CONF {problem}") from None
    if taken := [name for name in SET_BY_VARIABLES if name in conf]:
        variables = ", ".join(f"{SET_BY_VARIABLES[name]}=" for name in taken)
        raise BadInput(f"CONF sets {', '.join(taken)}: give {variables} instead")
    try:
        plan_for_conf(Settings.from_env(deployment), conf, datetime.now(UTC))
    except (InvalidParams, ParamValidationError, SettingError) as problem:
        reason = str(problem).splitlines()[0]  # jsonschema's own lines after it repeat the schema
        raise BadInput(f"CONF={json.dumps(conf)} would be refused: {reason}") from None
    return conf


def inputs_from_env(data_dir: Path, deployment: Deployment) -> Inputs:
    """The images folder (IMAGES, or COUNT sample images generated under ``data_dir``), the
    weights, the engine and the conf a run uses, from the environment the Makefile passes on."""
    engine = os.environ.get("ENGINE") or DEFAULT_ENGINE
    if engine not in ENGINES:
        raise BadInput(f"ENGINE={engine} is not an engine: use {', '.join(ENGINES)}")
    weights = os.environ.get("WEIGHTS") or "imagenet"
    if weights not in ("imagenet", "random"):
        weights = str(Path(weights).resolve())
    images = Path(os.environ["IMAGES"]).resolve() if os.environ.get("IMAGES") else None
    count = os.environ.get("COUNT") or "200"
    if images is None and (not count.isdigit() or int(count) < 1):
        raise BadInput(f"COUNT={count} is not a number of images: use a whole number of at least 1")
    if images is not None and not images.is_dir():
        raise BadInput(f"IMAGES={images} is not a folder")
    conf = conf_from_env(deployment(images or data_dir / SAMPLE_IMAGES, weights))
    if images is None:  # last: generating is the slow part, wasted if another input is bad
        images = sample_images(data_dir, int(count))
    return Inputs(images, weights, engine, conf)


def explain_failure(log_path: Path, weights: str, command: str) -> None:
    print(f"\nThe run failed. See {log_path}.", file=sys.stderr)
    if weights == "imagenet" and "could not download the ImageNet weights" in log_path.read_text():
        print(
            f"This machine cannot download the ImageNet weights. Run `{command} WEIGHTS=random` "
            f"(meaningless features, working pipeline) or `{command} WEIGHTS=/path/to/"
            "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5`.",
            file=sys.stderr,
        )


def today() -> datetime:
    """The logical date of a demo or rehearsal run: midnight UTC, the one a nightly schedule gives the day's run."""
    return datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def read_inputs(deployment_for: Callable[[Path], Deployment]) -> tuple[Path, Inputs]:
    """DATA_DIR and the run's inputs, checked in the deployment ``deployment_for(DATA_DIR)`` gives;
    a bad one ends the program with its message."""
    sys.stdout.reconfigure(line_buffering=True)  # progress lines interleave with errors in order
    data_dir = Path(os.environ.get("DATA_DIR") or ROOT / "data").resolve()
    try:
        return data_dir, inputs_from_env(data_dir, deployment_for(data_dir))
    except BadInput as problem:
        print(problem, file=sys.stderr)
        sys.exit(2)


def main() -> int:
    data_dir, inputs = read_inputs(local_deployment)
    images, weights, engine = inputs.images, inputs.weights, inputs.engine

    airflow_home = Path(os.environ.get("AIRFLOW_HOME") or ROOT / ".airflow")
    airflow_home.mkdir(parents=True, exist_ok=True)
    results = data_dir / "results"
    environment = airflow_environment(airflow_home) | local_deployment(data_dir)(images, weights)
    log_path = airflow_home / "demo.log"
    given = f", conf {json.dumps(inputs.conf)}" if inputs.conf else ""
    print(f"Running {DAG_ID} on {images} with weights={weights}, engine={engine}{given} (full log: {log_path})")
    started = datetime.now(UTC)
    code = run_dag(environment, today().isoformat(), {"engine": engine, **inputs.conf}, log_path)

    run_folder = folder_claimed_since(results, started)
    if code or run_folder is None or not (run_folder / REPORT_FILE).exists():
        explain_failure(log_path, weights, "make demo")
        return code or 1
    report = json.loads((run_folder / REPORT_FILE).read_text())
    if report["status"] == "unchanged":
        # Nothing ran: the last good run's outputs are this run's.
        print(f"\n{report['message']}; its outputs are current (this run's report: {run_folder / REPORT_FILE})")
        run_folder = results / report["unchanged_since"]
        report = json.loads((run_folder / REPORT_FILE).read_text())
    elif report.get("changes"):
        print("\nWhy this run computed: " + "; ".join(report["changes"]))
    print(summary(report, str(run_folder)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
