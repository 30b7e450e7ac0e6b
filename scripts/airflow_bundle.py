"""`make airflow-bundle`: what a managed Airflow (Amazon MWAA and the like) takes, for the EMR target.

    python scripts/airflow_bundle.py [OUT]      # default build/airflow-bundle

writes into OUT:

    dags/fruits_features.py, and fruits_features.md: its documentation (the runbook)
    plugins.zip        the distribution's packages as `pip install .` lays them out (fruitflow_pipeline
                       with the job sources as its data, fruitflow, the cleanup listener), and an
                       .airflowignore so Airflow loads only the listener as a plugin
    requirements.txt   the Airflow side's lean, ranged requirements (pyproject.toml's dependencies)
    airflow_configuration_options.json
                       the settings a deployment starts from, as [fruitflow] configuration options
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from pathlib import Path

from fruitflow_pipeline.settings_reference import airflow_configuration_options

ROOT = Path(__file__).resolve().parents[1]
# Airflow imports every .py file of its plugins folder as a plugin module: the packages are libraries.
PLUGINS_IGNORE = "fruitflow_pipeline/\nfruitflow/\n"


def build_wheel(into: Path) -> Path:
    command = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(into), str(ROOT)]
    subprocess.run(command, check=True)
    (wheel,) = into.glob("fruitflow-*.whl")
    return wheel


def plugins_zip(wheel: Path, target: Path) -> list[str]:
    """The wheel's files, its metadata left out, plus the .airflowignore; returns the names written."""
    with zipfile.ZipFile(wheel) as source, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as plugins:
        names = [name for name in source.namelist() if ".dist-info/" not in name]
        for name in names:
            plugins.writestr(name, source.read(name))
        plugins.writestr(".airflowignore", PLUGINS_IGNORE)
    return [*names, ".airflowignore"]


def lean_requirements() -> str:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    header = (
        "# fruitflow's Airflow side for the EMR target: no Spark, no engine (they run on the cluster).\n"
        "# Install with the constraints file of your Airflow version, as Airflow's documentation asks.\n"
    )
    return header + "".join(f"{requirement}\n" for requirement in project["dependencies"])


def build(out: Path) -> None:
    shutil.rmtree(out, ignore_errors=True)
    (out / "dags").mkdir(parents=True)
    for name in ("fruits_features.py", "fruits_features.md"):
        shutil.copy2(ROOT / "dags" / name, out / "dags" / name)
    with tempfile.TemporaryDirectory() as wheels:
        plugins_zip(build_wheel(Path(wheels)), out / "plugins.zip")
    (out / "requirements.txt").write_text(lean_requirements())
    (out / "airflow_configuration_options.json").write_text(json.dumps(airflow_configuration_options(), indent=2))


def main(argv: list[str]) -> int:
    out = Path(argv[0]) if argv else ROOT / "build" / "airflow-bundle"
    build(out)
    print(f"Airflow bundle in {out}: dags/, plugins.zip, requirements.txt, airflow_configuration_options.json")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
