"""Airflow side of fruitflow: settings, params, the shared step list, the EMR cluster request,
storage and the output checks. Imported by dags/fruits_features.py from Airflow's plugins folder.

The DAG/job contract (``fruitflow.contract``) lives with the job code it describes, in the jobs
folder this side ships to Spark anyway: that folder is made importable here, so a deployment
holds the contract once.
"""

import sys

from fruitflow_pipeline.settings import jobs_dir_from_env

if str(jobs_dir_from_env()) not in sys.path:
    sys.path.append(str(jobs_dir_from_env()))
