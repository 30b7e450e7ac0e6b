"""Airflow side of fruitflow: settings, params, the shared step list, the EMR cluster request,
storage and the output checks. Imported by dags/fruits_features.py from Airflow's plugins folder.

The DAG/job contract (``fruitflow.contract``) lives with the job code it describes, in the jobs
folder this side ships to Spark anyway: that folder is made importable here, so a deployment
holds the contract once.
"""

import os
import sys
from collections.abc import Mapping
from pathlib import Path

DEFAULT_JOBS_DIR = Path(__file__).resolve().parents[2] / "spark_jobs"


def jobs_dir_from_env(env: Mapping[str, str] = os.environ) -> Path:
    """Where the job code to ship is: FRUITFLOW_JOBS_DIR, or spark_jobs/ beside plugins/."""
    return Path(env.get("FRUITFLOW_JOBS_DIR", "").strip() or DEFAULT_JOBS_DIR)


if str(jobs_dir_from_env()) not in sys.path:
    sys.path.append(str(jobs_dir_from_env()))
