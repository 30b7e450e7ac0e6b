"""The EMR nodes' two package sets, measured from a wheelhouse `make wheelhouse` built: the wheels
each set needs (its size) and its install into a fresh venv with ``pip --no-index``, as a node
bootstraps from FRUITFLOW_EMR_WHEELHOUSE_URI. Off unless asked (``--wheelhouse DIR``): building
the wheelhouse downloads about 440 MB.

    python -m fruitflow_bench.wheelhouse build/wheelhouse   # this section alone, printed
"""

from __future__ import annotations

import os
import sys
import tempfile
import venv
from dataclasses import dataclass
from pathlib import Path

from packaging.utils import canonicalize_name, parse_wheel_filename

from fruitflow_bench import ROOT
from fruitflow_bench.commands import run_logged
from fruitflow_bench.machine import cpu_info

CLUSTER = ROOT / "spark_jobs" / "cluster"
# The set's name -> its requirements and constraints files, and the nodes that install it.
PACKAGE_SETS = {
    "full": ("requirements.txt", "constraints.txt", "primary node; every node with `engine=tensorflow`"),
    "lean": ("requirements-lean.txt", "constraints-lean.txt", "core and task nodes with `engine=onnx`"),
}


@dataclass(frozen=True)
class PackageSet:
    name: str
    nodes: str
    wheels: int
    megabytes: float  # the wheels' files, as copied from S3 to the node
    install_seconds: float  # pip install --no-index into a fresh venv, the venv's creation excluded


def pinned_names(constraints: Path) -> set[str]:
    lines = (line.split("#", 1)[0].strip() for line in constraints.read_text().splitlines())
    return {canonicalize_name(line.split("==", 1)[0]) for line in lines if "==" in line}


def wheels_of(wheelhouse: Path, names: set[str]) -> list[Path]:
    wheels = sorted(wheelhouse.glob("*.whl"))
    return [wheel for wheel in wheels if canonicalize_name(parse_wheel_filename(wheel.name)[0]) in names]


def install_seconds(wheelhouse: Path, requirements: Path, constraints: Path, log: Path) -> float:
    with tempfile.TemporaryDirectory(prefix="fruitflow-wheelhouse-bench-") as folder:
        venv.create(folder, with_pip=True)
        command = [
            str(Path(folder) / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-cache-dir",
            "--no-index", "--find-links", str(wheelhouse), "-r", str(requirements), "-c", str(constraints),
        ]  # fmt: skip
        # No pip configuration of this machine's (an index, a cache): the wheelhouse alone.
        return run_logged(command, log, env=os.environ | {"PIP_CONFIG_FILE": os.devnull})


def measure_wheelhouse(wheelhouse: Path, logs: Path) -> list[PackageSet]:
    measured = []
    for name, (requirements, constraints, nodes) in PACKAGE_SETS.items():
        wheels = wheels_of(wheelhouse, pinned_names(CLUSTER / constraints))
        log = logs / f"install-{name}.log"
        seconds = install_seconds(wheelhouse, CLUSTER / requirements, CLUSTER / constraints, log)
        megabytes = sum(wheel.stat().st_size for wheel in wheels) / 1e6
        measured.append(PackageSet(name, nodes, len(wheels), megabytes, seconds))
    return measured


def wheelhouse_lines(sets: list[PackageSet]) -> list[str]:
    title = "## EMR node packages: each set from the wheelhouse into a fresh venv"
    if not sets:
        return [title, "", "Skipped (the default; `--wheelhouse build/wheelhouse` after `make wheelhouse` runs it)."]
    rows = [f"| {s.name} | {s.nodes} | {s.wheels} | {s.megabytes:,.0f} | {s.install_seconds:,.1f} |" for s in sets]
    return [
        title,
        "",
        "`pip install --no-index --find-links` of each set's requirements under its constraints, as "
        "bootstrap.sh runs it; MB: the wheels the set needs (the wheelhouse holds both sets).",
        "",
        "| set | installed on | wheels | MB | install s |",
        "|---|---|---:|---:|---:|",
        *rows,
    ]


def main(argv: list[str]) -> int:
    wheelhouse = Path(argv[0]).resolve()
    with tempfile.TemporaryDirectory() as logs:
        sets = measure_wheelhouse(wheelhouse, Path(logs))
    print(f"CPU: {cpu_info().describe()}\n")
    print("\n".join(wheelhouse_lines(sets)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
