"""Airflow side of fruitflow: settings, params, the shared step list, the EMR cluster request,
storage and the output checks. Imported by dags/fruits_features.py, from the installed
distribution (`pip install .`) or from Airflow's plugins folder.

The DAG/job contract (``fruitflow.contract``) lives with the job code it describes; the
distribution installs it as the package ``fruitflow``, and the bundle's plugins.zip holds it
beside this package, so a deployment holds the contract once.
"""

import os
from collections.abc import Mapping
from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent
# Installed (or in the bundle's plugins.zip) the job sources are this package's data; in a
# checkout they are spark_jobs/ beside plugins/.
DEFAULT_JOBS_DIR = _PACKAGE_DIR / "jobs" if (_PACKAGE_DIR / "jobs").is_dir() else _PACKAGE_DIR.parents[1] / "spark_jobs"


def jobs_dir_from_env(env: Mapping[str, str] = os.environ) -> Path:
    """Where the job code to ship is: FRUITFLOW_JOBS_DIR, or the job sources shipped with this package."""
    return Path(env.get("FRUITFLOW_JOBS_DIR", "").strip() or DEFAULT_JOBS_DIR)
