"""The distribution's declarations against the lock: every range pyproject.toml declares holds the
version constraints.txt pins (the one the tests ran), requirements.txt (the embedded default's
pins) pins only what is declared, inside its range, and no code finds modules by editing sys.path."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
CODE_FOLDERS = ("dags", "plugins", "spark_jobs", "scripts", "rehearsal", "bench", "tests")
SYS_PATH_EDIT = re.compile(r"sys\.path\s*(\[.*\]\s*=|=|\+=|\.(insert|append|extend)\()")


def declared() -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = [*project["dependencies"], *(line for extra in project["optional-dependencies"].values() for line in extra)]
    requirements = [Requirement(line) for line in lines]
    return {canonicalize_name(requirement.name): requirement for requirement in requirements}


def pins(path: Path) -> dict[str, str]:
    lines = (line.split("#")[0].strip() for line in path.read_text().splitlines())
    return {canonicalize_name(Requirement(line).name): line.split("==")[1] for line in lines if "==" in line}


def test_every_declared_range_holds_the_locked_version():
    locked = pins(ROOT / "constraints.txt")
    for name, requirement in declared().items():
        assert name in locked, f"{name} is declared in pyproject.toml but not locked in constraints.txt"
        assert requirement.specifier.contains(locked[name]), (
            f"constraints.txt's {name}=={locked[name]} is outside {requirement}"
        )


def test_requirements_txt_pins_the_local_install_inside_its_ranges():
    """requirements.txt (the Docker image's) pins exactly what `pip install ".[local]"` (the Makefile's) declares."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    local = [*project["dependencies"], *project["optional-dependencies"]["local"]]
    ranges, pinned = declared(), pins(ROOT / "requirements.txt")
    assert set(pinned) == {canonicalize_name(Requirement(line).name) for line in local}
    for name, version in pinned.items():
        assert ranges[name].specifier.contains(version), (
            f"requirements.txt's {name}=={version} is outside {ranges[name]}"
        )


def test_the_airflow_side_installs_none_of_the_clusters_software():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lean = {canonicalize_name(Requirement(line).name) for line in project["dependencies"]}
    assert lean.isdisjoint({"pyspark", "tensorflow", "tensorflow-cpu", "onnxruntime", "openvino", "tf2onnx", "onnx"})
    assert {"apache-airflow", "apache-airflow-providers-amazon"} <= lean
    assert all(Requirement(line).specifier for line in project["dependencies"])  # ranges: nothing left open


def test_no_code_edits_sys_path():
    edits = [
        f"{path.relative_to(ROOT)}:{number}"
        for folder in CODE_FOLDERS
        for path in (ROOT / folder).rglob("*.py")
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if SYS_PATH_EDIT.search(line)
    ]
    assert edits == []
