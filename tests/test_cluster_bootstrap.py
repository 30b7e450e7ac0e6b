"""The EMR nodes' Python packages: pinned tree-wide, installable from a wheelhouse without PyPI.

bootstrap.sh runs here with stand-ins for what only an EMR node has: `aws` copies from a
folder playing S3, `sudo` runs its command as this user, instance.json says the node's role.
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
PACKAGE_SETS = {  # requirements file -> constraints file
    "requirements.txt": "constraints.txt",
    "requirements-lean.txt": "constraints-lean.txt",
}
TENSORFLOW_PACKAGES = ("tensorflow", "tensorflow-cpu", "tensorflow_cpu", "keras", "tf2onnx", "onnx")


def make_node(tmp_path: Path, primary: bool):
    """An 'EMR node': fake aws and sudo on PATH, S3 holding the run's code version, its role in instance.json."""
    s3 = tmp_path / "s3"
    code = s3 / CODE_URI.removeprefix("s3://")
    code.mkdir(parents=True)
    for pair in PACKAGE_SETS.items():
        for name in pair:
            shutil.copy(CLUSTER / name, code / name)
    return tmp_path, s3, node_environment(tmp_path, s3, primary=primary)


@pytest.fixture
def node(tmp_path):
    return make_node(tmp_path, primary=True)


@pytest.fixture
def core_node(tmp_path):
    return make_node(tmp_path, primary=False)


def pinned(path: Path) -> dict[str, str]:
    from packaging.utils import canonicalize_name

    pairs = (line.split("==") for line in path.read_text().splitlines() if "==" in line)
    return {canonicalize_name(name): version for name, version in pairs}


def installed_set(tmp_path: Path, env: dict) -> tuple[str, list[str]]:
    """Which requirements file the bootstrap gave pip (by content), and the calls the node logged."""
    work = Path(env["FRUITFLOW_BOOTSTRAP_DIR"])
    calls = (tmp_path / "calls.log").read_text().splitlines()
    assert any(call.startswith("sudo env") and "pip install" in call for call in calls)
    given = (work / "requirements.txt").read_text(), (work / "constraints.txt").read_text()
    (name,) = [
        name for name, pair in PACKAGE_SETS.items() if given == tuple((CLUSTER / n).read_text() for n in (name, pair))
    ]
    return name, calls


def bootstrap_with_recording_python(tmp_path: Path, env: dict, engine: str) -> subprocess.CompletedProcess:
    """bootstrap.sh on a node whose Python only records how it was called."""
    python = executable(tmp_path / "python3.11", RECORDING_PYTHON)
    return run_bootstrap(env, CODE_URI, str(python), engine)


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


def test_cluster_constraints_pin_the_lean_set_without_tensorflow_as_the_full_set_does():
    lean, full = pinned(CLUSTER / "constraints-lean.txt"), pinned(CLUSTER / "constraints.txt")
    assert lean.items() <= full.items()
    assert not set(TENSORFLOW_PACKAGES) & set(lean)
    assert {"onnxruntime", "openvino", "numpy", "pandas", "pyarrow", "pillow", "matplotlib"} <= set(lean)


def test_bootstrap_installs_from_pypi_under_the_constraints_with_temp_files_on_mnt(node):
    tmp_path, _, env = node
    result = bootstrap_with_recording_python(tmp_path, env, "onnx")
    assert result.returncode == 0, result.stderr
    work = Path(env["FRUITFLOW_BOOTSTRAP_DIR"])
    calls = (tmp_path / "calls.log").read_text().splitlines()
    install = next(call for call in calls if call.startswith("sudo env"))
    assert install == (
        f"sudo env TMPDIR={work}/tmp {tmp_path / 'python3.11'} -m pip install --quiet --no-cache-dir "
        f"-r {work}/requirements.txt -c {work}/constraints.txt"
    )
    assert f"aws s3 cp --only-show-errors {CODE_URI}/constraints.txt {work}/constraints.txt" in calls
    assert (work / "constraints.txt").read_text() == (CLUSTER / "constraints.txt").read_text()
    assert not any("--no-index" in call or "--recursive" in call for call in calls)
    assert "primary node" in result.stdout and "installing the full set" in result.stdout


@pytest.mark.parametrize("engine", ["onnx", "openvino", "openvino-bf16"])
def test_a_core_node_of_an_onnx_model_run_installs_the_lean_set_and_never_imports_tensorflow(core_node, engine):
    tmp_path, _, env = core_node
    result = bootstrap_with_recording_python(tmp_path, env, engine)
    assert result.returncode == 0, result.stderr
    name, calls = installed_set(tmp_path, env)
    assert name == "requirements-lean.txt"
    work = Path(env["FRUITFLOW_BOOTSTRAP_DIR"])
    assert f"aws s3 cp --only-show-errors {CODE_URI}/constraints-lean.txt {work}/constraints.txt" in calls
    import_check = "\n".join(calls).split("python -c", 1)[1]  # the recording python logs its script last
    assert "import onnxruntime, openvino," in import_check and "tensorflow" not in import_check
    assert f"engine {engine}, core or task node" in result.stdout and "installing the lean set" in result.stdout


def test_every_node_of_a_tensorflow_run_installs_the_full_set(core_node):
    tmp_path, _, env = core_node
    result = bootstrap_with_recording_python(tmp_path, env, "tensorflow")
    assert result.returncode == 0, result.stderr
    assert installed_set(tmp_path, env)[0] == "requirements.txt"


@pytest.mark.parametrize("instance_info", ["missing", "not a file", "no isMaster"])
def test_a_node_whose_role_cannot_be_read_installs_the_full_set_and_says_so(core_node, instance_info):
    tmp_path, _, env = core_node
    path = Path(env["FRUITFLOW_INSTANCE_INFO"])
    if instance_info == "missing":
        path.unlink()
    elif instance_info == "not a file":
        path.unlink()
        path.mkdir()
    else:
        path.write_text('{"instanceGroupId": "ig-1"}')
    result = bootstrap_with_recording_python(tmp_path, env, "onnx")
    assert result.returncode == 0, result.stderr
    assert installed_set(tmp_path, env)[0] == "requirements.txt"
    assert f"no isMaster in {path}: role unknown, installing the full set" in result.stdout


def test_bootstrap_refuses_an_unknown_engine(node):
    tmp_path, _, env = node
    result = bootstrap_with_recording_python(tmp_path, env, "torch")
    assert result.returncode == 2
    assert "unknown engine 'torch' (onnx, openvino, openvino-bf16 or tensorflow)" in result.stderr
    assert not (tmp_path / "calls.log").exists()


def test_bootstrap_refuses_a_missing_constraints_file(node):
    tmp_path, s3, env = node
    (s3 / CODE_URI.removeprefix("s3://") / "constraints.txt").unlink()
    result = bootstrap_with_recording_python(tmp_path, env, "onnx")
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
def test_wheelhouse_holds_a_wheel_for_every_pinned_package_of_both_sets(wheelhouse):
    from packaging.utils import canonicalize_name, parse_wheel_filename

    wheels = {}
    for wheel in wheelhouse.glob("*.whl"):
        name, version, _, tags = parse_wheel_filename(wheel.name)
        wheels[canonicalize_name(name)] = (str(version), {tag.platform for tag in tags})
    for constraints in PACKAGE_SETS.values():
        for name, version in pinned(CLUSTER / constraints).items():
            assert wheels[name][0] == version, (constraints, name)
    platforms = {platform for _, tag_platforms in wheels.values() for platform in tag_platforms}
    assert all(platform == "any" or platform.endswith("x86_64") for platform in platforms)


def bootstrap_from_wheelhouse(node, wheelhouse: Path) -> tuple[subprocess.CompletedProcess, str]:
    """bootstrap.sh of an onnx run with the wheelhouse on S3, into a fresh Python; and that Python."""
    tmp_path, s3, env = node
    shutil.copytree(wheelhouse, s3 / WHEELHOUSE_URI.removeprefix("s3://"))
    fresh = tmp_path / "node-python"
    venv.create(fresh, with_pip=True)
    # No index at all: a pip that tried PyPI would fail here rather than quietly download.
    env |= {"PIP_INDEX_URL": "http://127.0.0.1:9/simple", "PIP_EXTRA_INDEX_URL": "", "PIP_CONFIG_FILE": os.devnull}
    python = str(fresh / "bin" / "python")
    return run_bootstrap(env, CODE_URI, python, "onnx", WHEELHOUSE_URI), python


@pytest.mark.slow
def test_bootstrap_installs_from_the_wheelhouse_alone_into_a_fresh_python(node, wheelhouse):
    result, python = bootstrap_from_wheelhouse(node, wheelhouse)
    assert result.returncode == 0, result.stdout + result.stderr
    ready = "fruitflow requirements ready (full set): tensorflow 2.21.0 onnxruntime 1.32.0 openvino 2026.4.1"
    assert ready in result.stdout
    assert f"installing from the wheelhouse {WHEELHOUSE_URI} only" in result.stdout
    installed = subprocess.run([python, "-m", "pip", "freeze"], capture_output=True, text=True, check=True).stdout
    for line in (CLUSTER / "constraints.txt").read_text().splitlines():
        if "==" in line:
            name, version = line.split("==")
            assert any(
                entry.lower().replace("_", "-") == f"{name.lower().replace('_', '-')}=={version}"
                for entry in installed.splitlines()
            ), line


@pytest.mark.slow
def test_a_core_node_installs_the_lean_set_from_the_same_wheelhouse_without_tensorflow(core_node, wheelhouse):
    result, python = bootstrap_from_wheelhouse(core_node, wheelhouse)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "fruitflow requirements ready (lean set): onnxruntime 1.32.0 openvino 2026.4.1" in result.stdout
    check = (
        "import importlib.util as u; print(*(u.find_spec(name) is not None for name in ('onnxruntime', 'openvino')), "
        "u.find_spec('tensorflow') is None)"
    )
    importable = subprocess.run([python, "-c", check], capture_output=True, text=True, check=True).stdout
    assert importable.split() == ["True", "True", "True"]
    from packaging.utils import canonicalize_name

    installed = subprocess.run([python, "-m", "pip", "freeze"], capture_output=True, text=True, check=True).stdout
    names = {canonicalize_name(line.split("==")[0]) for line in installed.splitlines() if "==" in line}
    assert names == set(pinned(CLUSTER / "constraints-lean.txt"))
