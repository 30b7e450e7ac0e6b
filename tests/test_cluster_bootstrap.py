"""The EMR nodes' Python packages: pinned tree-wide, installable from a wheelhouse without PyPI.

bootstrap.sh runs here with stand-ins for what only an EMR node has: `aws` copies from a
folder playing S3, `sudo` runs its command as this user.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from rehearsal.node import executable, node_environment

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "spark_jobs" / "cluster"
CODE_URI = "s3://fruits/results/_code/abc123"
WHEELHOUSE_URI = "s3://fruits/wheelhouse"

RECORDING_PYTHON = '#!/bin/bash\necho "python $*" >> "$CALLS"\n'


@pytest.fixture
def node(tmp_path):
    """An 'EMR node': fake aws and sudo on PATH, S3 holding the run's code version."""
    s3 = tmp_path / "s3"
    code = s3 / CODE_URI.removeprefix("s3://")
    code.mkdir(parents=True)
    for name in ("requirements.txt", "constraints.txt"):
        shutil.copy(CLUSTER / name, code / name)
    return tmp_path, s3, node_environment(tmp_path, s3)


def run_bootstrap(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(CLUSTER / "bootstrap.sh"), *args], env=env, capture_output=True, text=True, timeout=600
    )


def test_cluster_constraints_pin_the_whole_tree_of_the_cluster_requirements():
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "cluster_constraints.py"), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    pins = dict(line.split("==") for line in (CLUSTER / "constraints.txt").read_text().splitlines() if "==" in line)
    # The packages the issue saw floating are pinned, at the versions installed for the tests.
    from importlib import metadata

    for package in ("keras", "protobuf", "h5py", "ml_dtypes", "grpcio", "tensorflow_cpu", "numpy"):
        assert pins[package] == metadata.version(package), package
    repo_pins = set((ROOT / "constraints.txt").read_text().splitlines())
    assert {f"{name}=={version}" for name, version in pins.items()} <= repo_pins


def test_bootstrap_installs_from_pypi_under_the_constraints_with_temp_files_on_mnt(node):
    tmp_path, _, env = node
    python = executable(tmp_path / "python3.11", RECORDING_PYTHON)
    result = run_bootstrap(env, CODE_URI, str(python))
    assert result.returncode == 0, result.stderr
    work = Path(env["FRUITFLOW_BOOTSTRAP_DIR"])
    calls = (tmp_path / "calls.log").read_text().splitlines()
    install = next(call for call in calls if call.startswith("sudo env"))
    assert install == (
        f"sudo env TMPDIR={work}/tmp {python} -m pip install --quiet --no-cache-dir "
        f"-r {work}/requirements.txt -c {work}/constraints.txt"
    )
    assert f"aws s3 cp --only-show-errors {CODE_URI}/constraints.txt {work}/constraints.txt" in calls
    assert (work / "constraints.txt").read_text() == (CLUSTER / "constraints.txt").read_text()
    assert not any("--no-index" in call or "--recursive" in call for call in calls)


def test_bootstrap_refuses_a_missing_constraints_file(node):
    tmp_path, s3, env = node
    (s3 / CODE_URI.removeprefix("s3://") / "constraints.txt").unlink()
    python = executable(tmp_path / "python3.11", RECORDING_PYTHON)
    result = run_bootstrap(env, CODE_URI, str(python))
    assert result.returncode != 0
    assert not any("pip install" in call for call in (tmp_path / "calls.log").read_text().splitlines())


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory) -> Path:
    """`make wheelhouse`, as a user runs it: manylinux x86_64 CPython 3.11 wheels from PyPI."""
    folder = tmp_path_factory.mktemp("wheelhouse")
    result = subprocess.run(
        ["make", "--no-print-directory", "wheelhouse", f"WHEELHOUSE={folder}"],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return folder


@pytest.mark.slow
def test_wheelhouse_holds_a_wheel_for_every_pinned_package(wheelhouse):
    from packaging.utils import canonicalize_name, parse_wheel_filename

    wheels = {}
    for wheel in wheelhouse.glob("*.whl"):
        name, version, _, tags = parse_wheel_filename(wheel.name)
        wheels[canonicalize_name(name)] = (str(version), {tag.platform for tag in tags})
    for line in (CLUSTER / "constraints.txt").read_text().splitlines():
        if "==" in line:
            name, version = line.split("==")
            assert wheels[canonicalize_name(name)][0] == version
    platforms = {platform for _, tag_platforms in wheels.values() for platform in tag_platforms}
    assert all(platform == "any" or platform.endswith("x86_64") for platform in platforms)


@pytest.mark.slow
def test_bootstrap_installs_from_the_wheelhouse_alone_into_a_fresh_python(node, wheelhouse):
    tmp_path, s3, env = node
    shutil.copytree(wheelhouse, s3 / WHEELHOUSE_URI.removeprefix("s3://"))
    fresh = tmp_path / "node-python"
    venv.create(fresh, with_pip=True)
    # No index at all: a pip that tried PyPI would fail here rather than quietly download.
    env |= {"PIP_INDEX_URL": "http://127.0.0.1:9/simple", "PIP_EXTRA_INDEX_URL": "", "PIP_CONFIG_FILE": os.devnull}
    result = run_bootstrap(env, CODE_URI, str(fresh / "bin" / "python"), WHEELHOUSE_URI)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "fruitflow requirements ready: tensorflow 2.21.0 onnxruntime 1.32.0" in result.stdout
    assert f"installing from the wheelhouse {WHEELHOUSE_URI} only" in result.stdout
    installed = subprocess.run(
        [str(fresh / "bin" / "python"), "-m", "pip", "freeze"], capture_output=True, text=True, check=True
    ).stdout
    for line in (CLUSTER / "constraints.txt").read_text().splitlines():
        if "==" in line:
            name, version = line.split("==")
            assert any(
                entry.lower().replace("_", "-") == f"{name.lower().replace('_', '-')}=={version}"
                for entry in installed.splitlines()
            ), line
