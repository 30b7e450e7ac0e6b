#!/bin/bash
# EMR bootstrap action, run on every node before Spark starts:
# installs the jobs' Python requirements for the Python that runs PySpark (3.11 on EMR 7.x).
# Usage (set by the DAG): bootstrap.sh s3://.../<code version>/requirements.txt /usr/bin/python3.11
set -euo pipefail

requirements_uri="$1"
python="$2"

aws s3 cp "$requirements_uri" /tmp/fruitflow-requirements.txt
if ! "$python" -m pip --version >/dev/null 2>&1; then
    sudo dnf install -y "$(basename "$python")-pip"
fi
sudo "$python" -m pip install --quiet --no-cache-dir -r /tmp/fruitflow-requirements.txt
"$python" -c "import tensorflow, PIL, pyarrow, pandas; print('fruitflow requirements ready, tensorflow', tensorflow.__version__)"
