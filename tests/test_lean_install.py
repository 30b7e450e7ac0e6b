"""The Airflow side where a team installs it (docs/getting-started/existing-airflow.md): a fresh
virtual environment with only the lean install, at the lowest Airflow and Amazon provider versions
pyproject.toml declares and at the pinned ones, and one from `make airflow-bundle`'s files. In each,
the DAG passes its integrity and alert tests and a full EMR night runs against moto (the steps driven by the
test's fake cluster, as the fast moto tests do), and the cluster's software is not there.

Slow: each environment installs from the package index (minutes)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from scripts.airflow_bundle import build as build_bundle
from scripts.airflow_bundle import build_wheel

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
LEAN_CHECK = [
    "tests/dags/test_dag_integrity.py",
    "tests/dags/test_oncall.py",
    "tests/dags/test_emr_control_plane.py::test_completed_steps_finish_the_run_and_terminate_the_cluster",
]
CLUSTER_SOFTWARE = ("pyspark", "tensorflow", "onnxruntime", "openvino")
RANGED = ("apache-airflow", "apache-airflow-providers-amazon")
# constraints.txt's pins that Airflow 3.2.0 refuses (apache-airflow-core 3.2.0: aiosqlite<0.22, starlette<1):
# there pip picks them, as the team's own Airflow constraints would.
REFUSED_BY_THE_LOWEST = ("aiosqlite", "starlette")


def declared(name: str) -> Requirement:
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return next(requirement for requirement in map(Requirement, dependencies) if requirement.name == name)


def lowest(name: str) -> str:
    """``name==<its declared lower bound>``, with the declared extras."""
    requirement = declared(name)
    (floor,) = [spec.version for spec in requirement.specifier if spec.operator == ">="]
    extras = f"[{','.join(sorted(requirement.extras))}]" if requirement.extras else ""
    return f"{name}{extras}=={floor}"


def constraints_without(prefixes: tuple[str, ...], into: Path) -> Path:
    kept = [line for line in (ROOT / "constraints.txt").read_text().splitlines() if not line.startswith(prefixes)]
    into.write_text("\n".join(kept) + "\n")
    return into


def fresh_venv(path: Path, *install: str) -> Path:
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    python = path / "bin" / "python"
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *install]
    done = subprocess.run(pip, env=clean_environment(), capture_output=True, text=True)  # pip sees only the venv
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return python


def clean_environment(**extra: str) -> dict[str, str]:
    """This process's environment without its Python path (spark_jobs/: the jobs' package must come
    from the install) and its Airflow settings (the check's own conftest sets them)."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH" and not key.startswith("AIRFLOW")}
    return env | extra


def missing_modules(python: Path, env: dict[str, str]) -> list[str]:
    probe = f"import importlib.util; print(*[m for m in {CLUSTER_SOFTWARE!r} if importlib.util.find_spec(m) is None])"
    return subprocess.run(
        [str(python), "-c", probe], env=env, capture_output=True, text=True, check=True
    ).stdout.split()


def where_imported(python: Path, env: dict[str, str]) -> list[str]:
    probe = "import fruitflow, fruitflow_pipeline as p; print(fruitflow.__file__, p.__file__, p.DEFAULT_JOBS_DIR)"
    return subprocess.run(
        [str(python), "-c", probe], env=env, capture_output=True, text=True, check=True
    ).stdout.split()


def run_check(python: Path, env: dict[str, str]) -> str:
    command = [str(python), "-m", "pytest", "-n", "0", "-p", "no:cacheprovider", "-q", *LEAN_CHECK]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    return done.stdout


def site_packages_megabytes(python: Path) -> int:
    (site,) = python.parents[1].glob("lib/python3*/site-packages")
    return round(sum(path.stat().st_size for path in site.rglob("*") if path.is_file()) / 1e6)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("wheel"))


@pytest.mark.parametrize("versions", ["lowest", "pinned"])
def test_the_lean_install_runs_the_emr_night_without_the_clusters_software(versions, wheel, tmp_path):
    if versions == "lowest":
        constraints = constraints_without(("apache-airflow", *REFUSED_BY_THE_LOWEST), tmp_path / "constraints.txt")
        pins = [lowest(name) for name in RANGED]
    else:
        constraints, pins = ROOT / "constraints.txt", []
    python = fresh_venv(tmp_path / "venv", f"{wheel}[dev]", *pins, "-c", str(constraints))
    env = clean_environment()

    installed = subprocess.run(
        [str(python), "-m", "pip", "list", "--format=freeze"], env=env, capture_output=True, text=True
    )
    for pin in pins:
        assert re.sub(r"\[.*\]", "", pin) in installed.stdout.splitlines()
    assert missing_modules(python, env) == list(CLUSTER_SOFTWARE)
    contract, pipeline, jobs_dir = where_imported(python, env)
    assert all(path.startswith(str(tmp_path / "venv")) for path in (contract, pipeline, jobs_dir))
    assert (Path(jobs_dir) / "featurize.py").is_file() and (Path(jobs_dir) / "cluster" / "bootstrap.sh").is_file()
    assert " passed" in run_check(python, env)
    print(f"{versions}: lean site-packages {site_packages_megabytes(python)} MB")


def test_the_bundle_runs_the_emr_night_from_its_plugins_zip(tmp_path):
    bundle = tmp_path / "bundle"
    build_bundle(bundle)
    for name in ("fruits_features.py", "fruits_features.md"):  # the DAG and its runbook
        assert (bundle / "dags" / name).read_bytes() == (ROOT / "dags" / name).read_bytes()
    assert '"fruitflow.results_uri"' in (bundle / "airflow_configuration_options.json").read_text()
    requirements = [line for line in (bundle / "requirements.txt").read_text().splitlines() if not line.startswith("#")]
    assert {Requirement(line).name for line in requirements} >= set(RANGED)
    plugins = tmp_path / "plugins"  # what Airflow's plugins folder holds once plugins.zip is unpacked (MWAA does)
    with zipfile.ZipFile(bundle / "plugins.zip") as archive:
        archive.extractall(plugins)
    assert (plugins / ".airflowignore").read_text().split() == ["fruitflow_pipeline/", "fruitflow/"]

    test_tools = ["moto[server]", "pytest", "pytest-xdist"]
    python = fresh_venv(
        tmp_path / "venv", "-r", str(bundle / "requirements.txt"), *test_tools, "-c", str(ROOT / "constraints.txt")
    )
    # Airflow puts its plugins folder on the path; the tests import the packages before Airflow starts.
    env = clean_environment(PYTHONPATH=str(plugins))
    assert missing_modules(python, env) == list(CLUSTER_SOFTWARE)
    contract, pipeline, jobs_dir = where_imported(python, env)
    assert all(path.startswith(str(plugins)) for path in (contract, pipeline, jobs_dir))
    assert " passed" in run_check(python, env)
    print(f"bundle: site-packages {site_packages_megabytes(python)} MB")
